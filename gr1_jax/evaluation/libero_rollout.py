"""LIBERO's standard evaluation protocol for a GR-1 policy, independent of where LIBERO runs.

The common protocol (openpi's examples/libero/main.py, OpenVLA's run_libero_eval.py):
  for every task of the suite: build the task's env (cameras resolution^2, env.seed(seed));
    for trial i in range(trials): env.reset(); env.set_init_state(init_states[i]);
      NUM_WAIT_STEPS (10) no-op steps [0]*6 + [-1] (objects settle; not counted);
      then up to MAX_STEPS[suite] policy steps; success as soon as env.step says done
      (LIBERO's goal predicate). The policy is reset per trial.
  per-task success = successes / trials; the suite's score is their mean.

Observation mapping (LIBERO -> the policy's CALVIN layout, what GR1Policy.step reads):
  rgb_obs.rgb_static  = agentview_image[::-1, ::-1]          (MuJoCo renders upside down;
  rgb_obs.rgb_gripper = robot0_eye_in_hand_image[::-1, ::-1]  openpi flips both axes, a 180
                                                              degree rotation)
  at the env's resolution (the policy resizes to its model's image size itself);
  robot_obs (15) = [eef pos (3), eef euler XYZ from quat (3), gripper width, joints (7),
                    last gripper action in CALVIN's sign (+1 open, -1 closed)]
  - the same slots as CALVIN's robot_obs (tcp pos, tcp euler, width, 7 joints, gripper action).
  With a checkpoint trained on LIBERO through LeRobot (norm_stats with an 8-D state), robot_obs is
  instead LeRobot's LIBERO state: [eef pos (3), eef axis-angle (3), gripper qpos (2)].

Action mapping (policy -> LIBERO's 7-D OSC_POSE, control at 20 Hz):
  arm: the policy's 6 relative values as they are (OSC_POSE takes deltas in [-1, 1], scaled by
  the controller to 0.05 m / 0.5 rad; CALVIN's rel_actions are also in [-1, 1] but 1 = 0.02 m /
  0.05 rad, so a CALVIN-trained policy moves differently here: the numbers are not units).
  gripper: CALVIN (and GR-1's CALVIN layout) uses +1 = open, -1 = close; robosuite's gripper
  uses -1 = open, +1 = close. So with the CALVIN layout the env gets -sign(g) (g > 0 -> -1).
  With the LeRobot LIBERO layout the policy already speaks LIBERO's sign: sign(g) as it is.

A backend (gr1_jax.evaluation.libero_backend.LiberoBackend or a fake in tests) supplies
suite_info(suite), init_states(suite, task_id), make_env() -> env with open / reset / step,
and close(). A policy factory builds the agent (reset(), step(obs, goal) -> action) per worker.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from gr1_jax.atomic_files import write_json

MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520,
             "libero_90": 400}
NUM_WAIT_STEPS = 10
NUM_TRIALS = 50
RESOLUTION = 256
SEED = 7
NOOP_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)   # LIBERO's sign: -1 = open
CALVIN_LAYOUT, LIBERO8_LAYOUT = "calvin", "libero8"


# ----------------------------------------------------------------------------- mappings
def quat_to_euler_xyz(quat_xyzw) -> np.ndarray:
  """Roll, pitch, yaw (extrinsic XYZ, like pybullet's getEulerFromQuaternion, CALVIN's tcp_orn)."""
  x, y, z, w = np.asarray(quat_xyzw, dtype=np.float64)
  roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
  pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0))
  yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
  return np.array([roll, pitch, yaw])


def quat_to_axis_angle(quat_xyzw) -> np.ndarray:
  """robosuite's quat2axisangle (LeRobot's LIBERO state): axis * angle, angle in [0, pi]."""
  q = np.asarray(quat_xyzw, dtype=np.float64)
  w = np.clip(q[3], -1.0, 1.0)
  den = np.sqrt(1.0 - w * w)
  if np.isclose(den, 0.0):
    return np.zeros(3)
  return q[:3] * 2.0 * np.arccos(w) / den


def flip_image(image) -> np.ndarray:
  """MuJoCo's offscreen render is upside down: rotate by 180 degrees like openpi ([::-1, ::-1])."""
  return np.ascontiguousarray(np.asarray(image)[::-1, ::-1])


def to_policy_obs(obs: dict, last_gripper_calvin: float, layout: str = CALVIN_LAYOUT) -> dict:
  """LIBERO observation -> the policy's {"rgb_obs": {...}, "robot_obs": ...} (module docstring)."""
  pos = np.asarray(obs["robot0_eef_pos"], dtype=np.float64)
  quat = np.asarray(obs["robot0_eef_quat"], dtype=np.float64)
  qpos = np.asarray(obs["robot0_gripper_qpos"], dtype=np.float64)
  if layout == LIBERO8_LAYOUT:
    robot = np.concatenate([pos, quat_to_axis_angle(quat), qpos])
  elif layout == CALVIN_LAYOUT:
    joints = np.asarray(obs.get("robot0_joint_pos", np.zeros(7)), dtype=np.float64)
    robot = np.concatenate([pos, quat_to_euler_xyz(quat), [abs(qpos[0] - qpos[1])], joints,
                            [last_gripper_calvin]])
  else:
    raise ValueError(f"unknown state layout {layout!r}")
  return {"rgb_obs": {"rgb_static": flip_image(obs["agentview_image"]),
                      "rgb_gripper": flip_image(obs["robot0_eye_in_hand_image"])},
          "robot_obs": robot}


def to_env_action(action, layout: str = CALVIN_LAYOUT) -> np.ndarray:
  """Policy action -> LIBERO's 7-D OSC_POSE action (gripper sign: module docstring)."""
  action = np.array(action, dtype=np.float64).reshape(-1)
  if action.shape != (7,):
    raise ValueError(f"policy.step returned {action.shape[0]} values, expected a 7-D action "
                     "(6 relative arm values + gripper)")
  g = 1.0 if action[-1] > 0 else -1.0
  action[-1] = -g if layout == CALVIN_LAYOUT else g
  return action


def layout_for(policy) -> str:
  dim = getattr(policy, "robot_obs_dim", 15)
  if dim == 15:
    return CALVIN_LAYOUT
  if dim == 8:
    return LIBERO8_LAYOUT
  raise ValueError(f"the policy reads a {dim}-D robot state; the LIBERO evaluation can give it "
                   "CALVIN's 15-D layout or LeRobot's 8-D LIBERO layout")


# ----------------------------------------------------------------------------- one episode
@dataclasses.dataclass
class EpisodeResult:
  task_id: int
  task: str
  trial: int
  success: bool
  steps: int                 # policy steps (after the no-op steps)
  reset_seconds: float
  policy_seconds: float
  env_seconds: float         # policy steps only
  wait_seconds: float        # the no-op steps
  seconds: float


def run_episode(env, policy, instruction: str, init_state, *, max_steps: int,
                num_wait_steps: int = NUM_WAIT_STEPS, layout: str = CALVIN_LAYOUT,
                frames: list | None = None, task_id: int = 0, task: str = "", trial: int = 0
                ) -> EpisodeResult:
  start = time.perf_counter()
  obs = env.reset(init_state)
  policy.reset()
  t_reset = time.perf_counter()
  for _ in range(num_wait_steps):
    obs, _, _, _ = env.step(np.array(NOOP_ACTION))
  t_wait = time.perf_counter()
  last_gripper = 1.0                     # CALVIN sign: the no-op steps command "open"
  policy_s = env_s = 0.0
  success, steps = False, 0
  for step in range(max_steps):
    policy_obs = to_policy_obs(obs, last_gripper, layout)
    if frames is not None:
      frames.append(policy_obs["rgb_obs"]["rgb_static"])
    t0 = time.perf_counter()
    action = to_env_action(policy.step(policy_obs, instruction), layout)
    t1 = time.perf_counter()
    obs, _, done, _ = env.step(action)
    t2 = time.perf_counter()
    policy_s, env_s = policy_s + (t1 - t0), env_s + (t2 - t1)
    last_gripper = -action[-1] if layout == CALVIN_LAYOUT else action[-1]
    steps = step + 1
    if done:
      success = True
      break
  if frames is not None:
    frames.append(flip_image(obs["agentview_image"]))
  return EpisodeResult(task_id, task, trial, success, steps, t_reset - start, policy_s, env_s,
                       t_wait - t_reset, time.perf_counter() - start)


# ----------------------------------------------------------------------------- many episodes
@dataclasses.dataclass
class EvalJob:
  backend: Any
  policy_factory: Callable[[], Any]
  suite: str
  episodes: list[tuple[int, int]]          # (task_id, trial)
  tasks: dict                              # task_id -> {"name", "language"}
  max_steps: int
  num_wait_steps: int = NUM_WAIT_STEPS
  resolution: int = RESOLUTION
  seed: int = SEED
  video_dir: str | None = None
  progress_path: str | None = None
  verbose: bool = True


def run_job(job: EvalJob) -> tuple[list[EpisodeResult], dict]:
  """Runs job.episodes in this process; returns the episodes and {task_id: env build seconds}."""
  policy = job.policy_factory()
  layout = layout_for(policy)
  results, builds = [], {}
  try:
    env = job.backend.make_env()
    current, init_states = None, None
    for task_id, trial in job.episodes:
      if task_id != current:
        t0 = time.perf_counter()
        env.open(job.suite, task_id, job.resolution, job.seed)
        builds[task_id] = time.perf_counter() - t0
        init_states = job.backend.init_states(job.suite, task_id)
        current = task_id
      if trial >= len(init_states):
        raise ValueError(f"trial {trial} of task {task_id}: the task has only {len(init_states)} "
                         "initial states")
      info = job.tasks[task_id]
      frames = [] if job.video_dir else None
      result = run_episode(env, policy, info["language"], init_states[trial], max_steps=job.max_steps,
                           num_wait_steps=job.num_wait_steps, layout=layout, frames=frames,
                           task_id=task_id, task=info["name"], trial=trial)
      results.append(result)
      if job.video_dir:
        from gr1_jax.visualization import save_animation
        tag = "succ" if result.success else "fail"
        save_animation(os.path.join(job.video_dir, f"task{task_id:02d}-trial{trial:02d}-{tag}.mp4"),
                       frames, fps=20.0)
      if job.progress_path:
        with open(job.progress_path, "a") as f:
          f.write(json.dumps(dataclasses.asdict(result)) + "\n")
      if job.verbose:
        done = sum(r.success for r in results)
        print(f"[pid {os.getpid()}] task {task_id} trial {trial}: "
              f"{'succeeded' if result.success else 'failed'} after {result.steps} steps in "
              f"{result.seconds:.1f}s | this worker: {done}/{len(results)} succeeded, "
              f"{len(job.episodes) - len(results)} to go", flush=True)
  finally:
    job.backend.close()
  return results, builds


def split_episodes(episodes: Sequence, workers: int) -> list[list]:
  """Contiguous slices (a worker keeps one task's trials together: fewer env builds)."""
  bounds = np.linspace(0, len(episodes), workers + 1).round().astype(int)
  return [list(episodes[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def summarize(results: Sequence[EpisodeResult], tasks: dict, builds: dict | None = None) -> dict:
  results = sorted(results, key=lambda r: (r.task_id, r.trial))
  per_task = {}
  for task_id in sorted({r.task_id for r in results}):
    mine = [r for r in results if r.task_id == task_id]
    wins = sum(r.success for r in mine)
    per_task[str(task_id)] = {"name": tasks[task_id]["name"], "language": tasks[task_id]["language"],
                              "success": wins, "trials": len(mine), "success_rate": wins / len(mine)}
  steps = sum(r.steps for r in results)
  rates = [t["success_rate"] for t in per_task.values()]
  mean = lambda xs: float(np.mean(xs)) if len(xs) else None  # noqa: E731
  return {
      "num_episodes": len(results),
      "success_rate": mean(rates) if rates else 0.0,           # mean over tasks
      "episode_success_rate": mean([r.success for r in results]) if results else 0.0,
      "per_task": per_task,
      "timing": {"policy_steps": steps,
                 "policy_step_ms": 1000 * sum(r.policy_seconds for r in results) / steps if steps else None,
                 "env_step_ms": 1000 * sum(r.env_seconds for r in results) / steps if steps else None,
                 "reset_seconds_mean": mean([r.reset_seconds for r in results]),
                 "wait_seconds_mean": mean([r.wait_seconds for r in results]),
                 "episode_seconds_mean": mean([r.seconds for r in results]),
                 "env_build_seconds": {str(k): v for k, v in sorted((builds or {}).items())}},
  }


def format_summary(summary: dict) -> str:
  lines = [f"{summary['num_episodes']} episodes, mean task success {100 * summary['success_rate']:.1f}%"]
  for task_id, info in summary["per_task"].items():
    lines.append(f"  task {task_id} {info['name']}: {info['success']} / {info['trials']} "
                 f"({100 * info['success_rate']:.1f}%)")
  t = summary["timing"]
  if t["policy_steps"]:
    lines.append(f"  {t['policy_steps']} policy steps: policy {t['policy_step_ms']:.1f} ms/step, env "
                 f"{t['env_step_ms']:.1f} ms/step; reset {t['reset_seconds_mean']:.2f}s, episode "
                 f"{t['episode_seconds_mean']:.1f}s (means)")
  return "\n".join(lines)


def evaluate(backend, policy_factory, suite: str, *, task_ids: Sequence[int] | None = None,
             trials: int = NUM_TRIALS, workers: int = 1, max_steps: int | None = None,
             num_wait_steps: int = NUM_WAIT_STEPS, resolution: int = RESOLUTION, seed: int = SEED,
             video_dir: str | None = None, output: str | None = None,
             progress_dir: str | None = None, metadata: dict | None = None,
             verbose: bool = True) -> dict:
  """The whole protocol over task_ids (default: all of the suite); writes `output` JSON."""
  start = time.perf_counter()
  info = backend.suite_info(suite)
  n_tasks = info["n_tasks"]
  task_ids = list(range(n_tasks)) if task_ids is None else list(task_ids)
  for t in task_ids:
    if not 0 <= t < n_tasks:
      raise ValueError(f"task {t} is not in {suite} (tasks 0..{n_tasks - 1})")
  tasks = {t: info["tasks"][t] for t in task_ids}
  max_steps = MAX_STEPS[suite] if max_steps is None else max_steps
  episodes = [(t, i) for t in task_ids for i in range(trials)]
  if video_dir:
    os.makedirs(video_dir, exist_ok=True)
  if progress_dir:
    os.makedirs(progress_dir, exist_ok=True)
  slices = split_episodes(episodes, max(1, min(workers, len(episodes))))
  jobs = [EvalJob(backend, policy_factory, suite, part, tasks, max_steps, num_wait_steps, resolution,
                  seed, video_dir,
                  os.path.join(progress_dir, f"progress.worker{w}.jsonl") if progress_dir else None,
                  verbose) for w, part in enumerate(slices)]
  if len(jobs) == 1:
    parts = [run_job(jobs[0])]
  else:
    backend.close()                       # the workers open their own
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=context) as pool:
      parts = list(pool.map(run_job, jobs))
  results = [r for part, _ in parts for r in part]
  builds = {}
  for _, b in parts:
    for k, v in b.items():
      builds.setdefault(k, v)
  summary = summarize(results, tasks, builds)
  summary["timing"]["total_seconds"] = time.perf_counter() - start
  summary.update({"suite": suite, "tasks": task_ids, "trials": trials, "max_steps": max_steps,
                  "num_wait_steps": num_wait_steps, "resolution": resolution, "seed": seed,
                  "workers": workers, **(metadata or {}),
                  "episodes": [dataclasses.asdict(r) for r in sorted(results,
                                                                      key=lambda r: (r.task_id, r.trial))]})
  if output:
    write_json(output, summary)
  return summary
