"""Everything this project asks of CALVIN, behind one small class, runnable in another Python.

CALVIN (github.com/mees/calvin: calvin_agent; github.com/mees/calvin_env) is not on
PyPI and needs numpy < 2, while this project's JAX stack needs numpy >= 2. So the
evaluation talks to CALVIN through `CalvinService`, which either runs in-process
(when CALVIN imports here) or in a separate interpreter that has CALVIN installed:

    python /path/to/gr1_jax/evaluation/calvin_service.py --in-fd R --out-fd W

This file therefore imports only the standard library and numpy at module level
(the CALVIN interpreter does not need gr1_jax installed), and all CALVIN imports
happen lazily inside the methods. Messages between the two processes are pickled
plain Python values; numpy arrays travel as (dtype, shape, bytes) so numpy 1.x and
2.x on the two sides never exchange numpy pickles.

What it provides (the official protocol's CALVIN pieces, gr1.md section 7):
  sequences(n)            calvin_agent.evaluation.multistep_sequences.get_sequences(n)
  initial_state(cond)     calvin_agent.evaluation.utils.get_env_state_for_initial_condition
  instructions()          first annotation per task, conf/annotations/new_playtable_validation.yaml
  env_*                   calvin_env.envs.play_table_env.get_env(<dataset>/validation, show_gui=False,
                          obs_space={rgb_static, rgb_gripper, robot_obs}) - reset/step/get_obs/get_info
  task_success(...)       the task oracle of conf/callbacks/rollout/tasks/new_playtable_tasks.yaml
For the scripted-demonstration recorder (data_pipelines/calvin/record_demos.py):
  env_config_yaml(scene)  calvin_env's conf/config_data_collection.yaml (that scene, cameras
                          static+gripper+tactile) merged with conf/config_rendering.yaml, as
                          calvin_env.datarenderer.build_rendering_config does: a merged_config.yaml
  annotations(split)      every instruction per task, conf/annotations/new_playtable.yaml
                          (training) or new_playtable_validation.yaml (validation)
  valid_conditions(c, t)  which initial conditions allow task t (multistep_sequences.tasks)
  scripted_demo(...)      one episode of data_pipelines/calvin/scripted_tasks.py in the env,
                          judged by the task oracle, with every frame (images, depth, states)
"""
from __future__ import annotations

import argparse
import os
import pickle
import struct
import sys
import traceback
from pathlib import Path

import numpy as np

OBS_SPACE = {"rgb_obs": ["rgb_static", "rgb_gripper"], "depth_obs": [], "state_obs": ["robot_obs"],
             "actions": ["rel_actions"], "language": ["language"]}
RECORD_OBS_SPACE = {"rgb_obs": ["rgb_static", "rgb_gripper"],
                    "depth_obs": ["depth_static", "depth_gripper"], "state_obs": ["robot_obs"],
                    "actions": ["rel_actions"], "language": ["language"]}
TASKS_YAML = "callbacks/rollout/tasks/new_playtable_tasks.yaml"
ANNOTATIONS_YAML = "annotations/new_playtable_validation.yaml"
TRAINING_ANNOTATIONS_YAML = "annotations/new_playtable.yaml"
SCRIPTED_TASKS = Path(__file__).resolve().parents[2] / "data_pipelines" / "calvin" / "scripted_tasks.py"

INSTALL_HINT = (
    "CALVIN is not importable in this Python ({python}): {error}.\n"
    "CALVIN is not on PyPI. Install it from its repositories (see README, 'CALVIN evaluation'):\n"
    "  git clone --recurse-submodules https://github.com/mees/calvin.git && cd calvin\n"
    "  pip install -e calvin_env/tacto -e calvin_env -e calvin_models   (numpy<2, hydra-core 1.3)\n"
    "(or run experiments/calvin_setup.sh SRC_DIR VENV_DIR), or point --calvin_python at an interpreter where it is installed (numpy<2 conflicts with\n"
    "this project's numpy 2; the env then runs in that interpreter as a subprocess).")


class CalvinNotInstalledError(ImportError):
  pass


# ----------------------------------------------------------------------------- wire format
_ND = "__ndarray__"


def encode(value):
  """Nested dict/list/tuple/set of numpy and Python values -> picklable plain Python."""
  if isinstance(value, np.ndarray):
    array = np.ascontiguousarray(value)
    return {_ND: (array.dtype.str, array.shape, array.tobytes())}
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, dict):
    return {encode(k): encode(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, set, frozenset)):
    return type(value)(encode(v) for v in value)
  if type(value).__module__.startswith("omegaconf"):
    from omegaconf import OmegaConf
    return encode(OmegaConf.to_container(value, resolve=True))
  return value


def decode(value):
  if isinstance(value, dict):
    if len(value) == 1 and _ND in value:
      dtype, shape, data = value[_ND]
      return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape).copy()
    return {k: decode(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, set, frozenset)):
    return type(value)(decode(v) for v in value)
  return value


def send(stream, message) -> None:
  payload = pickle.dumps(encode(message), protocol=4)
  stream.write(struct.pack("<Q", len(payload)))
  stream.write(payload)
  stream.flush()


def receive(stream):
  header = stream.read(8)
  if len(header) < 8:
    raise EOFError("the CALVIN service closed its pipe")
  (size,) = struct.unpack("<Q", header)
  payload = stream.read(size)
  if len(payload) < size:
    raise EOFError("the CALVIN service closed its pipe mid-message")
  return decode(pickle.loads(payload))


# ----------------------------------------------------------------------------- service
class CalvinService:
  """CALVIN's sequences, initial states, instructions, environment and task oracle."""

  def __init__(self, dataset_dir: str, calvin_root: str | None = None, with_depth: bool = False):
    self.dataset_dir = Path(dataset_dir)
    self.calvin_root = calvin_root
    self.obs_space = RECORD_OBS_SPACE if with_depth else OBS_SPACE
    self._env = None
    self._oracle = None
    self._scripted = None

  @staticmethod
  def _require(module: str):
    import importlib
    try:
      return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here"
      raise CalvinNotInstalledError(INSTALL_HINT.format(python=sys.executable,
                                                        error=f"import {module}: {exc!r}")) from exc

  def conf_dir(self) -> Path:
    candidates = []
    root = self.calvin_root or os.environ.get("CALVIN_ROOT")
    if root:
      candidates.append(Path(root) / "calvin_models" / "conf")
    agent = self._require("calvin_agent")
    candidates.append(Path(agent.__file__).resolve().parents[1] / "conf")
    for path in candidates:
      if (path / TASKS_YAML).is_file():
        return path
    raise FileNotFoundError(f"CALVIN's calvin_models/conf (with {TASKS_YAML}) was not found in "
                            f"{[str(p) for p in candidates]}; pass --calvin_root or set CALVIN_ROOT "
                            "to the calvin repository checkout")

  def missing(self) -> list:
    """What the recorder needs that does not import here: [] or ["calvin_env (ImportError ...)", ...]."""
    import importlib
    out = []
    for module in ("numpy", "pybullet", "hydra", "omegaconf", "pyhash", "calvin_env",
                   "calvin_agent.evaluation.multistep_sequences"):
      try:
        importlib.import_module(module)
      except Exception as exc:  # noqa: BLE001
        out.append(f"{module} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    if not out and int(np.__version__.split(".")[0]) >= 2:
      out.append(f"numpy<2 (found {np.__version__})")
    return out

  def check(self) -> dict:
    """Imports everything needed and checks the dataset config; returns versions for the log."""
    for module in ("calvin_agent", "calvin_env", "hydra", "omegaconf", "pybullet"):
      self._require(module)
    merged = self.dataset_dir / "validation" / ".hydra" / "merged_config.yaml"
    if not merged.is_file():
      raise FileNotFoundError(f"{merged} does not exist: --dataset_dir must be a CALVIN split "
                              "(task_D_D, task_ABC_D, ...) whose validation/.hydra/merged_config.yaml "
                              "configures the evaluation environment")
    return {"python": sys.executable, "numpy": np.__version__, "conf_dir": str(self.conf_dir())}

  def sequences(self, num_sequences: int):
    seqs = self._require("calvin_agent.evaluation.multistep_sequences").get_sequences(num_sequences)
    return [(dict(state), list(tasks)) for state, tasks in seqs]

  def initial_state(self, condition: dict):
    utils = self._require("calvin_agent.evaluation.utils")
    robot_obs, scene_obs = utils.get_env_state_for_initial_condition(condition)
    return np.asarray(robot_obs), np.asarray(scene_obs)

  def instructions(self) -> dict:
    conf_dir = self.conf_dir()
    annotations = self._require("omegaconf").OmegaConf.load(conf_dir / ANNOTATIONS_YAML)
    return {task: str(annotations[task][0]) for task in annotations}

  def _get_env(self):
    if self._env is None:
      get_env = self._require("calvin_env.envs.play_table_env").get_env
      self._env = get_env(self.dataset_dir / "validation", show_gui=False, obs_space=self.obs_space)
    return self._env

  def env_reset(self, robot_obs=None, scene_obs=None):
    return self._get_env().reset(robot_obs=robot_obs, scene_obs=scene_obs)

  def env_step(self, action):
    return tuple(self._get_env().step(np.asarray(action)))

  def env_get_obs(self):
    return self._get_env().get_obs()

  def env_get_info(self):
    return self._get_env().get_info()

  def task_success(self, start_info, current_info, task: str) -> bool:
    if self._oracle is None:
      conf_dir = self.conf_dir()
      tasks_cfg = self._require("omegaconf").OmegaConf.load(conf_dir / TASKS_YAML)
      self._oracle = self._require("hydra.utils").instantiate(tasks_cfg)
    return len(self._oracle.get_task_info_for_set(start_info, current_info, {task})) > 0

  def env_config_yaml(self, scene: str = "calvin_scene_D") -> str:
    conf = Path(self._require("calvin_env").__file__).resolve().parents[1] / "conf"
    hydra = self._require("hydra")
    omegaconf = self._require("omegaconf")
    overrides = [f"scene={scene}", "cameras=static_gripper_tactile"]
    hydra.core.global_hydra.GlobalHydra.instance().clear()
    with hydra.initialize_config_dir(config_dir=str(conf), version_base=None):
      collection = hydra.compose("config_data_collection", overrides=overrides)
      rendering = hydra.compose("config_rendering", overrides=["cameras=static_gripper_tactile"])
    hydra.core.global_hydra.GlobalHydra.instance().clear()
    plain = lambda cfg: omegaconf.OmegaConf.create(omegaconf.OmegaConf.to_container(cfg))  # not struct
    merged = omegaconf.OmegaConf.merge(plain(collection), plain(rendering))
    return omegaconf.OmegaConf.to_yaml(merged)

  def annotations(self, split: str = "training") -> dict:
    name = {"training": TRAINING_ANNOTATIONS_YAML, "validation": ANNOTATIONS_YAML}[split]
    annotations = self._require("omegaconf").OmegaConf.load(self.conf_dir() / name)
    return {task: [str(a) for a in annotations[task]] for task in annotations}

  def valid_conditions(self, conditions, task: str) -> list:
    seqs = self._require("calvin_agent.evaluation.multistep_sequences")
    return [bool(seqs.valid_task(dict(c), seqs.tasks[task])) for c in conditions]

  def _scripted_tasks(self):
    if self._scripted is None:
      import importlib.util
      spec = importlib.util.spec_from_file_location("gr1_scripted_tasks", SCRIPTED_TASKS)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      self._scripted = module
    return self._scripted

  def scripted_demo(self, task: str, seed: int, robot_obs, scene_obs, tcp_offset=(0.0, 0.0, 0.0),
                    max_steps: int = 240, jitter: float = 0.005) -> dict:
    """One scripted episode from (robot_obs, scene_obs) with the TCP moved by tcp_offset (IK)."""
    env = self._get_env()
    robot_obs = np.array(robot_obs, dtype=np.float64)
    scene_obs = np.array(scene_obs, dtype=np.float64)
    if np.any(np.asarray(tcp_offset) != 0):
      p = self._require("pybullet")
      env.reset(robot_obs=robot_obs, scene_obs=scene_obs)
      target = np.asarray(env.robot.target_pos) + np.asarray(tcp_offset)
      joints = env.robot.mixed_ik.get_ik(target, p.getQuaternionFromEuler(env.robot.target_orn))
      robot_obs[7:14] = np.asarray(joints)[:7]
    return self._scripted_tasks().run_episode(
        env, lambda: (np.array(env.robot.target_pos), np.array(env.robot.target_orn)),
        lambda start, now: self.task_success(start, now, task), task, robot_obs, scene_obs, seed,
        max_steps=max_steps, jitter=jitter)

  def make_env(self):
    """The environment as an object with reset / step / get_obs / get_info."""
    return ServiceEnv(self)

  def close(self):
    if self._env is not None:
      try:
        self._env.close()
      except Exception:  # noqa: BLE001
        pass
      self._env = None


class ServiceEnv:
  """reset / step / get_obs / get_info of a CalvinService (local or remote)."""

  def __init__(self, service):
    self._service = service

  def reset(self, robot_obs=None, scene_obs=None):
    return self._service.env_reset(robot_obs=robot_obs, scene_obs=scene_obs)

  def step(self, action):
    return self._service.env_step(action)

  def get_obs(self):
    return self._service.env_get_obs()

  def get_info(self):
    return self._service.env_get_info()


METHODS = ("check", "sequences", "initial_state", "instructions", "env_reset", "env_step",
           "env_get_obs", "env_get_info", "task_success", "missing", "env_config_yaml", "annotations",
           "valid_conditions", "scripted_demo", "close")


def serve_requests(in_fd: int, out_fd: int, handle) -> None:
  """Request loop of a service script (this one, libero_service.py): (method, args, kwargs) ->
  ("ok", handle(method, args, kwargs)) | ("error", kind, message); ends at EOF or after "close"."""
  with os.fdopen(in_fd, "rb") as requests, os.fdopen(out_fd, "wb") as responses:
    while True:
      try:
        method, args, kwargs = receive(requests)
      except EOFError:
        break
      try:
        send(responses, ("ok", handle(method, args, kwargs)))
      except BaseException as exc:  # noqa: BLE001 - reported to the client
        send(responses, ("error", type(exc).__name__, f"{exc}\n{traceback.format_exc()}"))
      if method == "close":
        break


def run_service(serve, description: str, argv=None) -> None:
  """The command line of a service script: serve(--in-fd, --out-fd)."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--in-fd", type=int, required=True)
  parser.add_argument("--out-fd", type=int, required=True)
  args = parser.parse_args(argv)
  serve(args.in_fd, args.out_fd)


def serve(in_fd: int, out_fd: int) -> None:
  """CALVIN's requests: "init" builds the CalvinService, then METHODS are its methods."""
  state = {}

  def handle(method, args, kwargs):
    if method == "init":
      state["service"] = CalvinService(*args, **kwargs)
      return None
    if method in METHODS and "service" in state:
      return getattr(state["service"], method)(*args, **kwargs)
    raise ValueError(f"unknown or premature request {method!r}")

  serve_requests(in_fd, out_fd, handle)


def main(argv=None) -> None:
  run_service(serve, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
  main()
