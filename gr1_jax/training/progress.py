"""Throughput and ETA for the progress line (host wall clock between log points)."""
from __future__ import annotations

import time


class Progress:

  def __init__(self, *, total_steps: int, global_batch: int, start_step: int):
    self.total_steps, self.global_batch = total_steps, global_batch
    self._last_step, self._last_time = start_step, time.perf_counter()

  def update(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    steps = step - self._last_step
    seconds = max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    rate = steps / seconds
    return {"steps_per_sec": rate, "examples_per_sec": rate * self.global_batch,
            "eta_seconds": (self.total_steps - step) / rate if rate > 0 else float("inf")}

  def reset_clock(self, step: int) -> None:
    """Excludes time spent outside training steps (compilation, evaluation, saving)."""
    self._last_step, self._last_time = step, time.perf_counter()


def format_line(step: int, total: int, loss: float, rates: dict[str, float]) -> str:
  eta = rates["eta_seconds"]
  eta_text = "?" if eta == float("inf") else f"{int(eta) // 3600}:{int(eta) % 3600 // 60:02d}:{int(eta) % 60:02d}"
  return (f"step {step}/{total} ({100.0 * step / total:.1f}%) loss {loss:.4f} | "
          f"{rates['steps_per_sec']:.2f} steps/s, {rates['examples_per_sec']:.1f} examples/s, ETA {eta_text}")
