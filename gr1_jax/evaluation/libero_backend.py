"""Opening LIBERO for the evaluation: in this process, or in its own interpreter over pipes.

    backend = LiberoBackend(libero_python="/work/libero_venv/bin/python")   # picklable
    backend.check(); backend.suite_info("libero_spatial"); env = backend.make_env() ...

With libero_python=None LIBERO must import here. Otherwise `libero_service.py` is started
in that interpreter (lazily, once per process, so each evaluation worker gets its own
simulator) with MUJOCO_GL=egl and LIBERO_CONFIG_PATH=<venv>/libero_config (what
libero_setup.sh writes) unless set, and every call goes over two pipes, with the wire
format of calvin_service. Both offer the interface gr1_jax.evaluation.libero_rollout
expects: check(), suite_info(suite), init_states(suite, task_id), make_env(), close().
"""
from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from gr1_jax.evaluation import calvin_service, libero_service
from gr1_jax.evaluation.libero_service import LiberoNotInstalledError


class LiberoServiceError(RuntimeError):
  """An exception raised inside the LIBERO interpreter (its traceback is in the message)."""


class LiberoServiceDied(LiberoServiceError):
  """The LIBERO interpreter exited mid-call."""


class _RemoteService:
  def __init__(self, python: str, log_path: str | None, env: dict | None = None):
    if not Path(python).exists():
      raise FileNotFoundError(f"--libero_python {python} does not exist")
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    script = Path(libero_service.__file__).resolve()
    log = open(log_path, "ab") if log_path else None  # noqa: SIM115 - lives as long as the child
    child_env = dict(os.environ, **(env or {}))
    child_env.setdefault("MUJOCO_GL", "egl")
    config = Path(python).absolute().parents[1] / "libero_config"   # what libero_setup.sh writes
    if (config / "config.yaml").is_file():
      child_env.setdefault("LIBERO_CONFIG_PATH", str(config))
    child_env.pop("PYTHONPATH", None)     # the LIBERO venv must not see this project's packages
    self._proc = subprocess.Popen(
        [python, str(script), "--in-fd", str(to_child_r), "--out-fd", str(from_child_w)],
        pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
        stdout=log or subprocess.DEVNULL, stderr=log or None, cwd=str(script.parent), env=child_env)
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
        raise LiberoServiceDied(f"the LIBERO service under {self.python} died (exit code "
                                f"{self._proc.poll()}) during {method}") from exc
    if reply[0] == "ok":
      return reply[1]
    _, kind, message = reply
    if kind == "LiberoNotInstalledError":
      raise LiberoNotInstalledError(message.split("\nTraceback")[0])
    if kind == "FileNotFoundError":
      raise FileNotFoundError(message.split("\nTraceback")[0])
    raise LiberoServiceError(f"{kind} in the LIBERO service ({method}): {message}")

  def __getattr__(self, name):
    if name in libero_service.METHODS:
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


class LiberoEnv:
  """One task's simulator: open(suite, task_id, resolution, seed), reset(init_state), step(a)."""

  def __init__(self, service):
    self._service = service

  def open(self, suite: str, task_id: int, resolution: int, seed: int) -> dict:
    return self._service.env_open(suite, task_id, resolution=resolution, seed=seed)

  def reset(self, init_state):
    return self._service.env_reset(init_state)

  def step(self, action):
    return tuple(self._service.env_step(action))


class LiberoBackend:
  def __init__(self, *, libero_python: str | None = None, log_path: str | None = None):
    self.libero_python = libero_python
    self.log_path = log_path
    self._service = None

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_service"] = None          # every process opens its own simulator
    return state

  def _svc(self):
    if self._service is None:
      if self.libero_python:
        self._service = _RemoteService(self.libero_python, self.log_path)
      else:
        self._service = libero_service.LiberoService()
    return self._service

  def check(self) -> dict:
    return self._svc().check()

  def suite_info(self, suite: str) -> dict:
    return self._svc().suite_info(suite)

  def init_states(self, suite: str, task_id: int):
    return self._svc().init_states(suite, task_id)

  def make_env(self) -> LiberoEnv:
    return LiberoEnv(self._svc())

  def close(self):
    if self._service is not None:
      if isinstance(self._service, _RemoteService):
        self._service.shutdown()
      else:
        self._service.close()
      self._service = None
