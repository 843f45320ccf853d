"""Scripted CALVIN scene-D demonstrations: waypoint P-controllers and the per-episode loop.

Runs in BOTH interpreters: CALVIN's (numpy<2, driving the real env through
`gr1_jax/evaluation/calvin_service.py`) and this project's (tests, with a fake env). So
it imports only the standard library and numpy; nothing of CALVIN.

Control (measured in /work/shared/reference/calvin_env.md): relative 7-D actions
    pos  = clip((waypoint - robot.target_pos) / 0.02, -s, s)
    orn  = clip((waypoint_euler - robot.target_orn) / 0.05, -s, s)
    grip = exactly +1 (open) or -1 (close)
closed on the robot's internal target pose (relative actions add to it), with a
per-demo speed s. Fixture interaction points follow from scene_obs (joint values).

`run_episode` resets the env to a start state, steps the script until the task
oracle reports success (or max_steps), and returns every frame exactly as CALVIN's
renderer stores it: frame t holds the observation before step t and the action of
step t; the final (done) observation is not a frame. rel_actions is the executed
action; actions is the absolute pose it points to from the observed TCP:
    actions[:3] = robot_obs[:3] + 0.02 * rel[:3],
    actions[3:6] = wrap(robot_obs[3:6] + 0.05 * rel[3:6]),  actions[6] = rel[6]
so calvin_env.utils.utils.to_relative_action(actions, robot_obs) == rel_actions, the
relation the real dataset's two action keys obey.
"""
from __future__ import annotations

import math

import numpy as np

MAX_POS, MAX_ORN = 0.02, 0.05
OPEN, CLOSE = 1.0, -1.0
PI = math.pi

# Fixture interaction points at joint value 0 (scene D) and their motion with the joint.
DRAWER_HANDLE = np.array([0.18, -0.25, 0.36])     # y - s      (scene_obs[1])
SLIDER_HANDLE = np.array([0.04, -0.01, 0.51])     # x - s      (scene_obs[0])
SWITCH_BAR = np.array([0.30, 0.02, 0.527])        # + s * SWITCH_DIR (scene_obs[3])
SWITCH_DIR = np.array([0.0, 0.5, 0.866])
BUTTON_TOP = np.array([-0.12, -0.12, 0.487])
BLOCK_OFFSETS = {"red": 6, "blue": 12, "pink": 18}

ORN_DRAWER = np.array([PI, 0.0, 0.0])
ORN_NEUTRAL = np.array([PI, 0.0, PI / 2])
ORN_SWITCH = np.array([PI, -0.5, 0.0])

FIXTURE_TASKS = ("open_drawer", "close_drawer", "move_slider_left", "move_slider_right",
                 "turn_on_led", "turn_off_led", "turn_on_lightbulb", "turn_off_lightbulb")
BLOCK_TASKS = tuple(f"{kind}_{colour}_block_{tail}" for colour in BLOCK_OFFSETS
                    for kind, tail in (("lift", "table"), ("push", "left"), ("push", "right")))
TASKS = FIXTURE_TASKS + BLOCK_TASKS


def wrap(angle):
  return (np.asarray(angle) + PI) % (2 * PI) - PI


class Waypoint:
  """Go to pos/orn with the gripper at grip; done when the target is there and the TCP within
  tcp_tol (or after max_steps); then hold for `hold` more steps."""

  def __init__(self, pos, orn, grip, *, tcp_tol=0.015, hold=0, max_steps=60, update=None):
    self.pos, self.orn, self.grip = np.asarray(pos, float), np.asarray(orn, float), grip
    self.tcp_tol, self.hold, self.max_steps, self.update = tcp_tol, hold, max_steps, update


class Script:
  """A list of waypoints followed by a P-controller on the robot's target pose."""

  def __init__(self, waypoints, speed=1.0):
    self.waypoints = list(waypoints)
    self.speed = float(speed)
    self.index = 0
    self.steps_here = 0
    self.held = 0

  def act(self, robot_obs, scene_obs, target_pos, target_orn):
    while self.index < len(self.waypoints):
      wp = self.waypoints[self.index]
      if wp.update is not None:  # re-read a moving fixture
        wp.pos = np.asarray(wp.update(scene_obs), float)
      at_target = (np.max(np.abs(wp.pos - target_pos)) < 1e-3
                   and np.max(np.abs(wrap(wp.orn - target_orn))) < 1e-2)
      at_tcp = np.linalg.norm(wp.pos - robot_obs[:3]) < wp.tcp_tol
      if (at_target and at_tcp) or self.steps_here >= wp.max_steps:
        if self.held >= wp.hold:
          self.index += 1
          self.steps_here = self.held = 0
          continue
        self.held += 1
      break
    wp = self.waypoints[min(self.index, len(self.waypoints) - 1)]
    self.steps_here += 1
    s = self.speed
    pos = np.clip((wp.pos - target_pos) / MAX_POS, -s, s)
    orn = np.clip(wrap(wp.orn - target_orn) / MAX_ORN, -s, s)
    return np.concatenate([pos, orn, [wp.grip]]).astype(np.float64)


def _block_yaw(scene_obs, offset):
  """Block yaw folded into 1.5 +- pi/4 (a block is symmetric under quarter turns)."""
  yaw = float(scene_obs[offset + 5])
  return (yaw - (PI / 2 - PI / 4)) % (PI / 2) + (PI / 2 - PI / 4)


def _grasp_and_move(handle, move, orn) -> list[Waypoint]:
  """Above the handle, down, close, drag by `move`, open, up: the drawer's and the slider's script."""
  up = np.array([0, 0, 1.0])
  return [Waypoint(handle + 0.08 * up, orn, OPEN, tcp_tol=0.03),
          Waypoint(handle, orn, OPEN, tcp_tol=0.01),
          Waypoint(handle, orn, CLOSE, hold=6, tcp_tol=1.0),
          Waypoint(handle + move, orn, CLOSE, tcp_tol=0.01, max_steps=80),
          Waypoint(handle + move, orn, OPEN, hold=5, tcp_tol=1.0),
          Waypoint(handle + move + 0.1 * up, orn, OPEN)]


def make_script(task: str, robot_obs, scene_obs, rng: np.random.Generator, *,
                jitter: float = 0.005) -> Script:
  """The waypoints of `task` from this start state; rng draws waypoint offsets and speed."""
  scene_obs = np.asarray(scene_obs, float)
  j = lambda scale=1.0: rng.uniform(-jitter, jitter, 3) * scale
  speed = rng.uniform(0.7, 1.0)
  up = np.array([0, 0, 1.0])
  if task in ("open_drawer", "close_drawer"):
    s = scene_obs[1]
    handle = DRAWER_HANDLE + [0, -s, 0] + j() * [1, 0.5, 0.5]
    sign = -1.0 if task == "open_drawer" else 1.0
    pull = np.array([0, sign * 0.2, 0])
    wps = _grasp_and_move(handle, pull, ORN_DRAWER)
  elif task in ("move_slider_left", "move_slider_right"):
    s = scene_obs[0]
    handle = SLIDER_HANDLE + [-s, 0, 0] + j() * [0.5, 0.5, 1]
    sign = -1.0 if task == "move_slider_left" else 1.0
    slide = np.array([sign * 0.22, 0, 0])
    wps = _grasp_and_move(handle, slide, ORN_NEUTRAL)
  elif task in ("turn_on_led", "turn_off_led"):
    top = BUTTON_TOP + j() * [1, 1, 0]
    wps = [Waypoint(top + 0.06 * up, ORN_NEUTRAL, CLOSE, tcp_tol=0.02),
           Waypoint(top - 0.025 * up, ORN_NEUTRAL, CLOSE, tcp_tol=0.01, max_steps=30),
           Waypoint(top + 0.08 * up, ORN_NEUTRAL, CLOSE)]
  elif task in ("turn_on_lightbulb", "turn_off_lightbulb"):
    bar = lambda so: SWITCH_BAR + so[3] * SWITCH_DIR
    off = j()
    if task == "turn_on_lightbulb":   # push the bar up (along +SWITCH_DIR) from below-front
      contact = lambda so: bar(so) + off + [0, -0.02, -0.03]
      push = lambda so: bar(so) + off + [0, -0.02, -0.03] + 0.09 * SWITCH_DIR
      wps = [Waypoint(bar(scene_obs) + off + [0, -0.08, 0.0], ORN_SWITCH, CLOSE, tcp_tol=0.03),
             Waypoint(contact(scene_obs), ORN_SWITCH, CLOSE, tcp_tol=0.015, max_steps=25),
             Waypoint(push(scene_obs), ORN_SWITCH, CLOSE, tcp_tol=0.01, max_steps=40),
             Waypoint(push(scene_obs) + [0, -0.08, 0.02], ORN_SWITCH, CLOSE)]
    else:                             # push it down from above-behind
      contact = lambda so: bar(so) + off + [0, 0.015, 0.025]
      wps = [Waypoint(bar(scene_obs) + off + [0, -0.06, 0.08], ORN_SWITCH, CLOSE, tcp_tol=0.03),
             Waypoint(contact(scene_obs), ORN_SWITCH, CLOSE, tcp_tol=0.015, max_steps=25),
             Waypoint(contact(scene_obs) - 0.12 * SWITCH_DIR, ORN_SWITCH, CLOSE, tcp_tol=0.01,
                      max_steps=40),
             Waypoint(contact(scene_obs) - 0.1 * SWITCH_DIR + [0, -0.08, 0.05], ORN_SWITCH, CLOSE)]
  elif task in BLOCK_TASKS:
    kind, colour = task.split("_")[:2]
    off = BLOCK_OFFSETS[colour]
    block = scene_obs[off:off + 3] + j() * [1, 1, 0]
    orn = np.array([PI, 0.0, _block_yaw(scene_obs, off)])
    if kind == "lift":
      grasp = block + [0, 0, 0.0]
      wps = [Waypoint(grasp + 0.08 * up, orn, OPEN, tcp_tol=0.03),
             Waypoint(grasp, orn, OPEN, tcp_tol=0.008),
             Waypoint(grasp, orn, CLOSE, hold=6, tcp_tol=1.0),
             Waypoint(grasp + 0.15 * up, orn, CLOSE, max_steps=40)]
    else:
      sign = 1.0 if task.endswith("right") else -1.0
      start = block + [-sign * 0.06, 0, 0.01]
      wps = [Waypoint(start + 0.08 * up, ORN_NEUTRAL, CLOSE, tcp_tol=0.03),
             Waypoint(start, ORN_NEUTRAL, CLOSE, tcp_tol=0.008),
             Waypoint(start + [sign * 0.2, 0, 0], ORN_NEUTRAL, CLOSE, tcp_tol=0.01, max_steps=60),
             Waypoint(start + [sign * 0.2, 0, 0.1], ORN_NEUTRAL, CLOSE)]
  else:
    raise KeyError(f"no script for task {task!r}; scripted tasks: {', '.join(TASKS)}")
  return Script(wps, speed=speed)


def absolute_action(robot_obs, rel_action) -> np.ndarray:
  """The absolute pose a relative action points to from the observed TCP (see module doc)."""
  robot_obs, rel = np.asarray(robot_obs, float), np.asarray(rel_action, float)
  return np.concatenate([robot_obs[:3] + MAX_POS * rel[:3],
                         wrap(robot_obs[3:6] + MAX_ORN * rel[3:6]), rel[6:7]])


FRAME_KEYS = ("rgb_static", "rgb_gripper", "depth_static", "depth_gripper", "robot_obs",
              "scene_obs", "actions", "rel_actions")


def run_episode(env, target_pose, task_success, task: str, robot_obs, scene_obs, seed: int, *,
                max_steps: int = 240, jitter: float = 0.005) -> dict:
  """Resets `env` to (robot_obs, scene_obs), runs the script of `task` until `task_success`
  (CALVIN's oracle: (start_info, info) -> bool) or max_steps.

  env: reset / step / get_info as CALVIN's; target_pose(): the robot's (target_pos,
  target_orn). Returns {"success", "steps", "frames": {key: stacked array}} with FRAME_KEYS
  (images uint8, the rest float32 as in the CALVIN dataset).
  """
  rng = np.random.default_rng(seed)
  obs = env.reset(robot_obs=np.asarray(robot_obs), scene_obs=np.asarray(scene_obs))
  start_info = env.get_info()
  script = make_script(task, obs["robot_obs"], obs["scene_obs"], rng, jitter=jitter)
  frames = {k: [] for k in FRAME_KEYS}
  success = False
  for _ in range(max_steps):
    target_pos, target_orn = target_pose()
    rel = script.act(obs["robot_obs"], obs["scene_obs"], np.asarray(target_pos), np.asarray(target_orn))
    rel = rel.astype(np.float32).astype(np.float64)  # what is stored is exactly what runs
    for cam in ("static", "gripper"):
      frames[f"rgb_{cam}"].append(np.asarray(obs["rgb_obs"][f"rgb_{cam}"], np.uint8))
      frames[f"depth_{cam}"].append(np.asarray(obs["depth_obs"][f"depth_{cam}"], np.float32))
    frames["robot_obs"].append(obs["robot_obs"])
    frames["scene_obs"].append(obs["scene_obs"])
    frames["actions"].append(absolute_action(obs["robot_obs"], rel))
    frames["rel_actions"].append(rel)
    obs, _, _, info = env.step(rel)
    if task_success(start_info, info):
      success = True
      break
  out = {k: np.stack(v) for k, v in frames.items()}
  for k in ("robot_obs", "scene_obs", "actions", "rel_actions"):
    out[k] = out[k].astype(np.float32)
  return {"success": success, "steps": len(frames["rel_actions"]), "frames": out}
