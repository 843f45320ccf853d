"""Training windows per second with frame reuse (config.data.frame_reuse = W) vs the per-window
step, JAX's and the official PyTorch one.

    python -m benchmarks.frame_reuse [--variant official] [--segments 4] [--windows 10] \
        [--baseline_batch 4] [--steps 2] [--dtype float32] [--paths torch,window,reuse]

Official size, as measured in docs/frame_reuse.md (float32, CPU; a few GB of host memory
per path; minutes):

    python -m benchmarks.frame_reuse --variant official --segments 1 --windows 16 --baseline_batch 2 --steps 3

Each path runs in a subprocess of its own (so each reports its own peak RSS and the
first's memory is returned before the second starts): the real jitted train step of
gr1_jax/training/train_step.py (fine-tuning layout: both cameras, all heads; CALVIN's
200 px static and 84 px wrist frames resized on device) on synthetic batches,
  torch       the official step (benchmarks/torch_train_step.py) on the per-window batches:
              the issue's target is reuse >= 4x its windows/s
  per-window  --baseline_batch windows of seq_len steps (default: the same number of
              windows as the reuse step, segments x windows; at the official size that
              does not fit in this machine's memory, so pass e.g. 4: on a CPU the step
              time grows linearly with the windows once the batch is a few windows)
  reuse       --segments segments of seq_len + W - 1 frames = segments x W windows.
--compile_only compiles both steps on abstract inputs and prints only the FLOPs per window
(seconds of CPU and little memory even at the official size). Printed per path: compile time, step time (median of --steps after one warm-up step),
windows/s and windows per CPU-second, peak RSS, FLOPs per window (XLA's cost analysis; torch:
FlopCounterMode's matmuls); then reuse's ratios to torch and to the JAX per-window step. The FLOP ratio
does not depend on the machine's load; the time ratio does, so the load average is
printed before and after each path.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_VARIANT = flags.DEFINE_string("variant", "official", "experiments/configs/gr1_model.py variant")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")
_SEGMENTS = flags.DEFINE_integer("segments", 4, "segments per reuse batch")
_WINDOWS = flags.DEFINE_integer("windows", 10, "windows per segment (config.data.frame_reuse)")
_BASELINE = flags.DEFINE_integer("baseline_batch", 0, "windows per per-window batch (0: segments x windows)")
_STEPS = flags.DEFINE_integer("steps", 2, "timed steps per path")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "compile both steps and compare FLOPs per window only "
                                  "(no parameters initialised, no step run: little memory, no timing)")
_PATHS = flags.DEFINE_list("paths", ["torch", "window", "reuse"],
                           "which paths to run: torch (the project's PyTorch model of the official GR-1, "
                           "per-window, at --baseline_batch), window (the JAX per-window step), reuse")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", os.cpu_count(), "torch.set_num_threads for the torch path")
_MODE = flags.DEFINE_enum("mode", "all", ["all", "torch", "window", "reuse"], "internal: one path in this process")
_RESULT = flags.DEFINE_string("result_file", "", "internal: where a one-path run writes its JSON result")


def _model(dtype: str):
  from experiments.configs import gr1_model
  from gr1_jax.model_config import GR1Config
  return GR1Config.from_dict(gr1_model.get_config(_VARIANT.value).to_dict()).replace(dtype=dtype)


def _per_window_batch() -> int:
  return _BASELINE.value or _SEGMENTS.value * _WINDOWS.value


def _synthetic_batches(model, batch: int, steps: int) -> list:
  """One warm-up batch and --steps timed ones (CALVIN frame sizes, fine-tuning keys)."""
  from data_pipelines.synthetic import synthetic_batch
  return [synthetic_batch(i, batch_size=batch, seq_len=steps, image_size=200, hand_size=84,
                          action_chunk=model.action_chunk, finetune=model.use_state)
          for i in range(_STEPS.value + 1)]


def _timed(run_step, batches) -> tuple[list[float], list[float]]:
  """Wall and process-CPU seconds of run_step on each batch (run_step returns once it is done)."""
  times, cpu = [], []
  for b in batches:
    t, c = time.perf_counter(), time.process_time()
    run_step(b)
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
  return times, cpu


def _rates(windows: int, times: list[float], cpu: list[float]) -> dict:
  step_s = statistics.median(times)
  return {"step_s": step_s, "times": times, "cpu_s": cpu, "windows_per_s": windows / step_s,
          "windows_per_cpu_s": windows / statistics.median(cpu),
          "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def run_torch_path() -> dict:
  """The official train step at --baseline_batch windows (benchmarks/train_step_vs_torch.py's
  torch side: the project's independent PyTorch model of the official GR-1, trained as the
  official loop would), on the same synthetic batches as the JAX per-window path."""
  import torch

  from benchmarks.torch_train_step import build_torch
  from experiments.configs import finetune_calvin
  from gr1_jax.losses import DEFAULT_WEIGHTS

  if _DTYPE.value != "float32":
    raise SystemExit("the torch path runs float32 only (the official step); pass --paths=window,reuse")
  torch.set_num_threads(_TORCH_THREADS.value)
  model = _model("float32")
  config = finetune_calvin.get_config("default")
  windows = _per_window_batch()
  batches = _synthetic_batches(model, windows, model.seq_len)
  run, count_flops = build_torch(model, config.optimizer, {**DEFAULT_WEIGHTS, **config.loss_weights})
  load_before = os.getloadavg()
  flops = count_flops(batches[0])      # doubles as the warm-up step
  print(f"  torch: {flops / windows / 1e9:.1f} GFLOP per window (FlopCounterMode, matmuls only), "
        f"{torch.get_num_threads()} threads; load {tuple(round(x, 2) for x in os.getloadavg())}", flush=True)
  losses = []
  times, cpu = _timed(lambda b: losses.append(run(b)), batches[1:])
  return {"mode": "torch", "windows": windows, "batch": windows, "steps_per_element": model.seq_len,
          "compile_s": 0.0, "flops_per_window": flops / windows, **_rates(windows, times, cpu),
          "loss": losses[-1], "load_before": load_before, "load_after": os.getloadavg()}


def run_path(mode: str) -> dict:
  if mode == "torch":
    return run_torch_path()
  import jax
  from data_pipelines import frame_reuse as reuse
  from experiments.configs import finetune_calvin
  from gr1_jax import sharding
  from gr1_jax.training import optimizer
  from gr1_jax.training import train_state as ts
  from gr1_jax.training.aot import cost_analysis
  from gr1_jax.training.train_step import make_train_step

  model = _model(_DTYPE.value)
  config = finetune_calvin.get_config("default")
  tx, schedule = optimizer.make_optimizer(config.optimizer, config.num_train_steps)
  layout = ts.make_layout(model, tx, sharding.make_mesh({"data": -1}, jax.devices()[:1]))
  if mode == "reuse":
    frame_reuse, batch, steps = _WINDOWS.value, _SEGMENTS.value, reuse.segment_length(model.seq_len, _WINDOWS.value)
    windows = _SEGMENTS.value * _WINDOWS.value
  else:
    frame_reuse, steps = 0, model.seq_len
    batch = windows = _per_window_batch()
  batches = _synthetic_batches(model, batch, steps)
  step = make_train_step(layout, tx, schedule, dict(config.loss_weights), frame_reuse=frame_reuse)
  load_before = os.getloadavg()
  t = time.perf_counter()
  compiled = step.lower(layout.train_state, layout.frozen, layout.rngs, batches[0]).compile()
  compile_s = time.perf_counter() - t
  cost = cost_analysis(compiled)
  memory = compiled.memory_analysis()   # XLA's buffer plan: what the step needs besides the arrays passed in
  temp_gb = getattr(memory, "temp_size_in_bytes", float("nan")) / 1e9
  result = {"mode": mode, "windows": windows, "batch": batch, "steps_per_element": steps, "compile_s": compile_s,
            "flops_per_window": float(cost.get("flops", float("nan"))) / windows, "temp_gb": temp_gb}
  print(f"  {mode}: compiled in {compile_s:.1f} s, {result['flops_per_window'] / 1e9:.1f} GFLOP per window, "
        f"XLA temporaries {temp_gb:.2f} GB; "
        f"load {tuple(round(x, 2) for x in os.getloadavg())}", flush=True)
  if _COMPILE_ONLY.value:
    return result
  params, frozen, rngs = ts.init_model_state(layout, 0)
  state = ts.new_train_state(layout, tx, params)
  state, metrics = compiled(state, frozen, rngs, batches[0])      # warm-up
  jax.block_until_ready(metrics)
  holder = {"state": state, "metrics": metrics}

  def run(b):
    holder["state"], holder["metrics"] = compiled(holder["state"], frozen, rngs, b)
    jax.block_until_ready(holder["metrics"])
  times, cpu = _timed(run, batches[1:])
  return {**result, **_rates(windows, times, cpu), "loss": float(holder["metrics"]["loss/total"]),
          "load_before": load_before, "load_after": os.getloadavg()}


def main(argv):
  del argv
  if _MODE.value != "all":
    with open(_RESULT.value, "w") as f:
      json.dump(run_path(_MODE.value), f)
    return
  flags_out = [f"--variant={_VARIANT.value}", f"--dtype={_DTYPE.value}", f"--segments={_SEGMENTS.value}",
               f"--windows={_WINDOWS.value}", f"--baseline_batch={_BASELINE.value}", f"--steps={_STEPS.value}",
               f"--compile_only={_COMPILE_ONLY.value}", f"--torch_threads={_TORCH_THREADS.value}"]
  paths = [p for p in ("torch", "window", "reuse") if p in _PATHS.value and not (_COMPILE_ONLY.value and p == "torch")]
  print(f"load average at start: {os.getloadavg()}; variant {_VARIANT.value}, {_DTYPE.value}, "
        f"{_SEGMENTS.value} segments x {_WINDOWS.value} windows vs per-window batch "
        f"{_per_window_batch()}", flush=True)
  results = {}
  for mode in paths:
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "result.json")
      proc = subprocess.run([sys.executable, "-m", "benchmarks.frame_reuse", f"--mode={mode}",
                             f"--result_file={path}", *flags_out], check=False)
      if proc.returncode or not os.path.exists(path):
        sys.exit(f"{mode} path failed (exit {proc.returncode})")
      with open(path) as f:
        r = results[mode] = json.load(f)
    if _COMPILE_ONLY.value:
      print(f"{mode:>6}: {r['windows']} windows ({r['batch']} x {r['steps_per_element']} steps), compile "
            f"{r['compile_s']:.1f} s, {r['flops_per_window'] / 1e9:.1f} GFLOP/window", flush=True)
      continue
    print(f"{mode:>6}: {r['windows']} windows ({r['batch']} x {r['steps_per_element']} steps), compile "
          f"{r['compile_s']:.1f} s, step {r['step_s']:.2f} s (median of {', '.join(f'{x:.2f}' for x in r['times'])}), "
          f"{r['windows_per_s']:.3f} windows/s ({r['windows_per_cpu_s']:.3f} per CPU-second), "
          f"{r['flops_per_window'] / 1e9:.1f} GFLOP/window, peak RSS "
          f"{r['peak_rss_gb']:.2f} GB, loss {r['loss']:.4f}; load {tuple(round(x, 2) for x in r['load_before'])} "
          f"-> {tuple(round(x, 2) for x in r['load_after'])}", flush=True)
  if _COMPILE_ONLY.value:
    if {"window", "reuse"} <= results.keys():
      print(f"frame reuse: {results['window']['flops_per_window'] / results['reuse']['flops_per_window']:.2f}x "
            f"fewer FLOPs per window (compile only, nothing timed); load average at end: {os.getloadavg()}")
    return
  for base in ("torch", "window"):   # the target is against the official (torch) step
    if base in results and "reuse" in results:
      b, r = results[base], results["reuse"]
      print(f"frame reuse vs {base}: {r['windows_per_s'] / b['windows_per_s']:.2f}x the windows/s, "
            f"{r['windows_per_cpu_s'] / b['windows_per_cpu_s']:.2f}x the windows per CPU-second"
            + (" (the issue's target: >= 4x vs torch)" if base == "torch" else ""))
  if {"torch", "window"} <= results.keys():
    print(f"per-window JAX vs torch: {results['window']['windows_per_s'] / results['torch']['windows_per_s']:.2f}x "
          "the windows/s")
  print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
  app.run(main)
