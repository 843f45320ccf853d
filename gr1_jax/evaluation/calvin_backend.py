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

from gr1_jax.evaluation import calvin_service, pipe_service
from gr1_jax.evaluation.calvin_service import CalvinNotInstalledError, ServiceEnv


class CalvinServiceError(RuntimeError):
  """An exception raised inside the CALVIN interpreter (its traceback is in the message)."""


class CalvinServiceDied(CalvinServiceError):
  """The CALVIN interpreter exited mid-call (pybullet/EGL crash natively now and then, e.g.
  glibc's "corrupted double-linked list" after an hour of rendering); a new one can carry on."""


class _RemoteService(pipe_service.PipeService):
  """Client of `calvin_service.serve` running under another Python."""
  name, python_flag, methods = "CALVIN", "--calvin_python", calvin_service.METHODS
  error, died = CalvinServiceError, CalvinServiceDied
  raised_as_is = {"CalvinNotInstalledError": CalvinNotInstalledError, "FileNotFoundError": FileNotFoundError}

  def __init__(self, python: str, dataset_dir: str, calvin_root: str | None, log_path: str | None,
               with_depth: bool = False):
    super().__init__(python, calvin_service.__file__, log_path)
    self.call("init", dataset_dir, calvin_root, with_depth=with_depth)

  def make_env(self):
    return ServiceEnv(self)


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
