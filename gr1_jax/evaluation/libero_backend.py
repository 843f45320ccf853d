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
from pathlib import Path

from gr1_jax.evaluation import libero_service, pipe_service
from gr1_jax.evaluation.libero_service import LiberoNotInstalledError


class LiberoServiceError(RuntimeError):
  """An exception raised inside the LIBERO interpreter (its traceback is in the message)."""


class LiberoServiceDied(LiberoServiceError):
  """The LIBERO interpreter exited mid-call."""


class _RemoteService(pipe_service.PipeService):
  """Client of `libero_service.serve` running under the LIBERO venv's Python."""
  name, python_flag, methods = "LIBERO", "--libero_python", libero_service.METHODS
  error, died = LiberoServiceError, LiberoServiceDied
  raised_as_is = {"LiberoNotInstalledError": LiberoNotInstalledError, "FileNotFoundError": FileNotFoundError}

  def __init__(self, python: str, log_path: str | None, env: dict | None = None):
    child_env = dict(os.environ, **(env or {}))
    child_env.setdefault("MUJOCO_GL", "egl")
    config = Path(python).absolute().parents[1] / "libero_config"   # what libero_setup.sh writes
    if (config / "config.yaml").is_file():
      child_env.setdefault("LIBERO_CONFIG_PATH", str(config))
    child_env.pop("PYTHONPATH", None)     # the LIBERO venv must not see this project's packages
    super().__init__(python, libero_service.__file__, log_path, env=child_env)


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
