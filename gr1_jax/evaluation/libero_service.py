"""Everything this project asks of LIBERO, behind one small class, runnable in another Python.

LIBERO (hf-libero on PyPI: robosuite 1.4, mujoco 3.8, bddl, torch for its init-state files)
lives in its own virtualenv (experiments/libero_setup.sh), so the evaluation talks to it
through `LiberoService`, in-process when LIBERO imports here, or in that interpreter:

    python /path/to/gr1_jax/evaluation/libero_service.py --in-fd R --out-fd W

Like calvin_service.py (whose wire format this reuses: pickled plain values, numpy arrays
as (dtype, shape, bytes)), this file imports only the standard library and numpy at module
level; LIBERO is imported lazily. What it provides (LIBERO's own benchmark definitions):
  suite_info(suite)              the suite's tasks: name, language instruction, bddl file
  init_states(suite, task_id)    the task's fixed initial states, (50, N) float64
  env_open(suite, task_id, resolution, seed)
                                 libero.libero.envs.OffScreenRenderEnv on the task's bddl file,
                                 cameras at resolution x resolution, env.seed(seed)
  env_reset(init_state)          env.reset(); env.set_init_state(init_state) -> obs
  env_step(action)               env.step(7-D OSC_POSE action) -> (obs, reward, done, {})
                                 (done = LIBERO's success predicate of the task's goal)
Observations carry only what the evaluation reads (OBS_KEYS), still upside down as MuJoCo
renders them: agentview_image / robot0_eye_in_hand_image (H, W, 3) uint8, robot0_eef_pos (3),
robot0_eef_quat (4, x y z w), robot0_gripper_qpos (2), robot0_joint_pos (7), float64.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

try:
  from gr1_jax.evaluation.calvin_service import run_service, serve_requests
except ImportError:               # run as a script in the LIBERO venv, without gr1_jax installed
  from calvin_service import run_service, serve_requests  # noqa: I001 - same directory

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
OBS_KEYS = ("agentview_image", "robot0_eye_in_hand_image", "robot0_eef_pos", "robot0_eef_quat",
            "robot0_gripper_qpos", "robot0_joint_pos")

INSTALL_HINT = (
    "LIBERO is not importable in this Python ({python}): {error}.\n"
    "Build its own virtualenv with experiments/libero_setup.sh VENV_DIR (hf-libero 0.1.4, "
    "mujoco 3.8.1, CPU torch 2.13.0, assets, config) and pass --libero_python VENV_DIR/bin/python.")


class LiberoNotInstalledError(ImportError):
  pass


class LiberoService:
  """LIBERO's suites, init states and one simulator (see the module docstring)."""

  def __init__(self):
    self._env = None
    self._env_key = None

  @staticmethod
  def _require(module: str):
    import importlib
    try:
      return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here"
      raise LiberoNotInstalledError(INSTALL_HINT.format(python=sys.executable,
                                                        error=f"import {module}: {exc!r}")) from exc

  def _benchmark(self, suite: str):
    if suite not in SUITES:
      raise ValueError(f"unknown LIBERO suite {suite!r}; choose from {', '.join(SUITES)}")
    benchmark = self._require("libero.libero.benchmark")
    return benchmark.get_benchmark_dict()[suite]()

  def check(self) -> dict:
    libero = self._require("libero.libero")
    mujoco = self._require("mujoco")
    robosuite = self._require("robosuite")
    # hf-libero's envs read <libero.libero>/assets (else download from the Hugging Face hub,
    # which fails offline), whatever the config's "assets" says.
    assets = os.path.join(os.path.dirname(os.path.abspath(libero.__file__)), "assets")
    if not os.path.isdir(os.path.join(assets, "scenes")):
      raise FileNotFoundError(f"LIBERO's assets directory {assets} is missing or incomplete (meshes "
                              "and textures are not in the wheel; experiments/libero_setup.sh links "
                              "them there)")
    return {"python": sys.executable, "numpy": np.__version__, "mujoco": mujoco.__version__,
            "robosuite": robosuite.__version__, "assets": assets,
            "MUJOCO_GL": os.environ.get("MUJOCO_GL")}

  def suite_info(self, suite: str) -> dict:
    bench = self._benchmark(suite)
    tasks = [bench.get_task(i) for i in range(bench.n_tasks)]
    return {"suite": suite, "n_tasks": bench.n_tasks,
            "tasks": [{"name": t.name, "language": t.language,
                       "bddl_file": os.path.join(t.problem_folder, t.bddl_file)} for t in tasks]}

  def init_states(self, suite: str, task_id: int):
    bench = self._benchmark(suite)
    task = bench.get_task(task_id)
    path = os.path.join(self._require("libero.libero").get_libero_path("init_states"),
                        task.problem_folder, task.init_states_file)
    torch = self._require("torch")
    return np.asarray(torch.load(path, weights_only=False), dtype=np.float64)

  def env_open(self, suite: str, task_id: int, resolution: int = 256, seed: int = 7) -> dict:
    """(Re)builds the simulator for one task; returns {"build_seconds": ...}."""
    start = time.perf_counter()
    self.env_close()
    bench = self._benchmark(suite)
    task = bench.get_task(task_id)
    libero = self._require("libero.libero")
    envs = self._require("libero.libero.envs")
    bddl = os.path.join(libero.get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    self._env = envs.OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=resolution,
                                        camera_widths=resolution)
    self._env.seed(seed)
    self._env_key = (suite, task_id, resolution, seed)
    return {"build_seconds": time.perf_counter() - start}

  def _obs(self, obs) -> dict:
    return {k: np.asarray(obs[k]) for k in OBS_KEYS if k in obs}

  def env_reset(self, init_state):
    if self._env is None:
      raise RuntimeError("env_reset before env_open")
    self._env.reset()
    return self._obs(self._env.set_init_state(np.asarray(init_state)))

  def env_step(self, action):
    obs, reward, done, _ = self._env.step(np.asarray(action, dtype=np.float64))
    return self._obs(obs), float(reward), bool(done), {}

  def env_close(self):
    if self._env is not None:
      try:
        self._env.close()
      except Exception:  # noqa: BLE001
        pass
      self._env = self._env_key = None

  def close(self):
    self.env_close()


METHODS = ("check", "suite_info", "init_states", "env_open", "env_reset", "env_step", "env_close",
           "close")


def serve(in_fd: int, out_fd: int) -> None:
  """LIBERO's requests: METHODS of one LiberoService."""
  service = LiberoService()

  def handle(method, args, kwargs):
    if method not in METHODS:
      raise ValueError(f"unknown request {method!r}")
    return getattr(service, method)(*args, **kwargs)

  serve_requests(in_fd, out_fd, handle)


def main(argv=None) -> None:
  run_service(serve, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
  main()
