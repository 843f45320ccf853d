"""Client side of a simulator service running under another Python, over two pipes.

calvin_service.py and libero_service.py each run `serve(in_fd, out_fd)` inside their own
interpreter (CALVIN needs numpy<2; LIBERO its own pins), answering (method, args, kwargs)
requests with ("ok", value) or ("error", kind, message) in calvin_service's wire format.
PipeService starts such a script, sends the requests one at a time and turns error replies
back into exceptions; subclasses name the simulator, its flag and its exception classes.
"""
from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from gr1_jax.evaluation import calvin_service


class PipeService:
  name = "simulator"          # in messages: "the CALVIN service under ... died"
  python_flag = "--python"    # the command-line flag that named the interpreter
  methods: frozenset = frozenset()
  error = RuntimeError        # an exception raised inside the service
  died = RuntimeError         # the service exited mid-call
  raised_as_is: dict = {}     # error kinds re-raised as these classes, message up to its traceback

  def __init__(self, python: str, script: str, log_path: str | None, env: dict | None = None):
    if not Path(python).exists():
      raise FileNotFoundError(f"{self.python_flag} {python} does not exist")
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    script = Path(script).resolve()
    log = open(log_path, "ab") if log_path else None  # noqa: SIM115 - lives as long as the child
    # The child's stdout/stderr (C libraries print there) never touch the message pipes.
    self._proc = subprocess.Popen(
        [python, str(script), "--in-fd", str(to_child_r), "--out-fd", str(from_child_w)],
        pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
        stdout=log or subprocess.DEVNULL, stderr=log or None, cwd=str(script.parent), env=env)
    os.close(to_child_r), os.close(from_child_w)
    self._requests = os.fdopen(to_child_w, "wb")
    self._responses = os.fdopen(from_child_r, "rb")
    self._lock = threading.Lock()
    self.python = python

  def call(self, method, *args, **kwargs):
    with self._lock:
      try:
        calvin_service.send(self._requests, (method, args, kwargs))
        reply = calvin_service.receive(self._responses)
      except (EOFError, BrokenPipeError) as exc:
        raise self.died(f"the {self.name} service under {self.python} died (exit code "
                        f"{self._proc.poll()}) during {method}") from exc
    if reply[0] == "ok":
      return reply[1]
    _, kind, message = reply
    if kind in self.raised_as_is:
      raise self.raised_as_is[kind](message.split("\nTraceback")[0])
    raise self.error(f"{kind} in the {self.name} service ({method}): {message}")

  def __getattr__(self, name):
    if name in self.methods:
      return lambda *args, **kwargs: self.call(name, *args, **kwargs)
    raise AttributeError(name)

  def shutdown(self):
    if self._proc.poll() is None:
      try:
        self.call("close")
      except Exception:  # noqa: BLE001
        pass
      try:
        self._proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        self._proc.kill()
    self._requests.close(), self._responses.close()
