"""Opening CALVIN for the evaluation: in this process, or in another interpreter.

    backend = CalvinBackend(dataset_dir, calvin_python=None)   # picklable description
    backend.check(); chains = backend.sequences(1000); env = backend.make_env() ...

With calvin_python=None CALVIN must import here (calvin_agent, calvin_env). With
calvin_python=/path/to/venv/bin/python, a `calvin_service.py` server is started in
that interpreter (lazily, once per process, so every evaluation worker gets its
own simulator) and every call goes over two pipes. Both offer the same methods,
the interface `gr1_jax.evaluation.calvin_rollout` expects of a backend.
"""
from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from gr1_jax.evaluation import calvin_service
from gr1_jax.evaluation.calvin_service import CalvinNotInstalledError, ServiceEnv


class CalvinServiceError(RuntimeError):
  """An exception raised inside the CALVIN interpreter (its traceback is in the message)."""


class CalvinServiceDied(CalvinServiceError):
  """The CALVIN interpreter exited mid-call (pybullet/EGL crash natively now and then, e.g.
  glibc's "corrupted double-linked list" after an hour of rendering); a new one can carry on."""


class _RemoteService:
  """Client of `calvin_service.serve` running under another Python."""

  def __init__(self, python: str, dataset_dir: str, calvin_root: str | None, log_path: str | None,
               with_depth: bool = False):
    if not Path(python).exists():
      raise FileNotFoundError(f"--calvin_python {python} does not exist")
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    script = Path(calvin_service.__file__).resolve()
    log = open(log_path, "ab") if log_path else None  # noqa: SIM115 - lives as long as the child
    # The child's stdout/stderr (pybullet prints from C) never touch the message pipes.
    self._proc = subprocess.Popen(
        [python, str(script), "--in-fd", str(to_child_r), "--out-fd", str(from_child_w)],
        pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
        stdout=log or subprocess.DEVNULL, stderr=log or None, cwd=str(script.parent))
    os.close(to_child_r), os.close(from_child_w)
    self._requests = os.fdopen(to_child_w, "wb")
    self._responses = os.fdopen(from_child_r, "rb")
    self._lock = threading.Lock()
    self.python = python
    self.call("init", dataset_dir, calvin_root, with_depth=with_depth)

  def call(self, method, *args, **kwargs):
    with self._lock:
      try:
        calvin_service.send(self._requests, (method, args, kwargs))
        reply = calvin_service.receive(self._responses)
      except (EOFError, BrokenPipeError) as exc:
        code = self._proc.poll()
        raise CalvinServiceDied(f"the CALVIN service under {self.python} died (exit code {code}) "
                                 f"during {method}") from exc
    if reply[0] == "ok":
      return reply[1]
    _, kind, message = reply
    if kind == "CalvinNotInstalledError":
      raise CalvinNotInstalledError(message.split("\nTraceback")[0])
    if kind == "FileNotFoundError":
      raise FileNotFoundError(message.split("\nTraceback")[0])
    raise CalvinServiceError(f"{kind} in the CALVIN service ({method}): {message}")

  def __getattr__(self, name):
    if name in calvin_service.METHODS:
      return lambda *args, **kwargs: self.call(name, *args, **kwargs)
    raise AttributeError(name)

  def make_env(self):
    return ServiceEnv(self)

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


class CalvinBackend:
  """CALVIN's pieces of the official protocol for one dataset split (see module docstring)."""

  def __init__(self, dataset_dir: str, *, calvin_python: str | None = None,
               calvin_root: str | None = None, log_path: str | None = None,
               with_depth: bool = False):
    self.dataset_dir = str(dataset_dir)
    self.with_depth = with_depth
    self.calvin_python = calvin_python
    self.calvin_root = calvin_root
    self.log_path = log_path
    self._service = None

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_service"] = None          # every process opens its own simulator
    return state

  def _svc(self):
    if self._service is None:
      if self.calvin_python:
        self._service = _RemoteService(self.calvin_python, self.dataset_dir, self.calvin_root,
                                       self.log_path, with_depth=self.with_depth)
      else:
        self._service = calvin_service.CalvinService(self.dataset_dir, self.calvin_root,
                                                     with_depth=self.with_depth)
    return self._service

  def check(self) -> dict:
    return self._svc().check()

  def sequences(self, num_sequences: int):
    return [(cond, tuple(tasks)) for cond, tasks in self._svc().sequences(num_sequences)]

  def initial_state(self, condition):
    return self._svc().initial_state(condition)

  def instructions(self) -> dict:
    return self._svc().instructions()

  def make_env(self):
    return self._svc().make_env()

  def task_success(self, start_info, current_info, task: str) -> bool:
    return bool(self._svc().task_success(start_info, current_info, task))

  # The scripted-demonstration recorder's pieces (data_pipelines/calvin/record_demos.py).
  def missing(self) -> list:
    return self._svc().missing()

  def env_config_yaml(self, scene: str = "calvin_scene_D") -> str:
    return self._svc().env_config_yaml(scene)

  def annotations(self, split: str = "training") -> dict:
    return self._svc().annotations(split)

  def valid_conditions(self, conditions, task: str) -> list:
    return self._svc().valid_conditions(conditions, task)

  def scripted_demo(self, task, seed, robot_obs, scene_obs, **kwargs) -> dict:
    return self._svc().scripted_demo(task, seed, robot_obs, scene_obs, **kwargs)

  def close(self):
    if self._service is not None:
      if isinstance(self._service, _RemoteService):
        self._service.shutdown()
      else:
        self._service.close()
      self._service = None
