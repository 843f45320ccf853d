"""Turns SIGTERM (preemption, `kill`, a scheduler's stop) into "save and exit at the next step".

The handler only sets a flag; the loop checks it between steps. With several
processes the decision must be collective (every process takes part in the
save), so the flags are OR-ed across processes every `sync_every` steps.
"""
from __future__ import annotations

import signal
import threading

import jax
import numpy as np


class StopRequest:

  def __init__(self, signals=(signal.SIGTERM,), sync_every: int = 1):
    self._event = threading.Event()
    self._signals = signals
    self._previous = {}
    self._sync_every = max(1, int(sync_every))
    self.signal_name: str | None = None

  def __enter__(self) -> "StopRequest":
    if threading.current_thread() is threading.main_thread():
      for sig in self._signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame) -> None:
    self.signal_name = signal.Signals(signum).name
    self._event.set()

  def request(self, reason: str = "requested") -> None:
    self.signal_name = reason
    self._event.set()

  def should_stop(self, step: int) -> bool:
    local = self._event.is_set()
    if jax.process_count() == 1:
      return local
    if step % self._sync_every:
      return False
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.int32(local))))
