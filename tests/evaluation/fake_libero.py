"""A fake LIBERO: the observation layout and backend/env interfaces of the real one, no physics.

obs = {"agentview_image", "robot0_eye_in_hand_image": (R, R, 3) uint8, upside down (row 0 of the
image holds the marker the flipped frame must show at its bottom-right corner), "robot0_eef_pos"
(3), "robot0_eef_quat" (4, x y z w), "robot0_gripper_qpos" (2), "robot0_joint_pos" (7), float64}.
Actions are validated like robosuite's OSC_POSE (7 values); the gripper must be exactly +-1 in
LIBERO's sign (-1 open, +1 close). A task is done (env.step's done) once the env has made
STEPS_NEEDED[task_id] policy steps whose gripper action was "close" (+1) since the reset;
task 2 never is. The fake records every action, reset and env build.
"""
from __future__ import annotations

import numpy as np

TASKS = [{"name": "pick_up_the_black_bowl", "language": "pick up the black bowl and place it on the plate"},
         {"name": "open_the_drawer", "language": "open the top drawer"},
         {"name": "impossible", "language": "do the impossible"}]
STEPS_NEEDED = {0: 3, 1: 5, 2: 10**9}
NUM_INIT_STATES = 4
MARKER = np.array([255, 0, 0], np.uint8)


class FakeLiberoEnv:

  def __init__(self, log):
    self.log = log
    self.task_id = None
    self.resolution = None

  def open(self, suite, task_id, resolution, seed):
    assert suite == "libero_spatial" and seed == 7
    self.task_id, self.resolution = task_id, resolution
    self.log["builds"].append((suite, task_id, resolution, seed))
    return {"build_seconds": 0.0}

  def reset(self, init_state):
    init_state = np.asarray(init_state)
    assert init_state.shape == (9,)
    self.state = init_state.copy()
    self.pos = init_state[:3].copy()
    self.closes = 0
    self.t = 0
    self.log["resets"].append((self.task_id, float(init_state[-1])))
    return self._obs()

  def step(self, action):
    action = np.asarray(action)
    assert action.shape == (7,), action.shape
    assert action[-1] in (-1.0, 1.0), f"gripper must be exactly +-1, got {action[-1]}"
    self.log["actions"].append((self.task_id, action.copy()))
    self.pos = self.pos + 0.05 * np.clip(action[:3], -1, 1)
    self.t += 1
    is_noop = bool(np.all(action[:6] == 0) and action[-1] == -1)
    if action[-1] == 1.0 and not is_noop:
      self.closes += 1
    self.gripper = action[-1]
    done = self.closes >= STEPS_NEEDED[self.task_id]
    return self._obs(), float(done), done, {}

  def _obs(self):
    r = self.resolution
    rng = np.random.default_rng([self.t, self.task_id])
    images = {}
    for key in ("agentview_image", "robot0_eye_in_hand_image"):
      image = rng.integers(0, 200, (r, r, 3), dtype=np.uint8)
      image[0, 0] = MARKER               # upside-down render: this is the bottom-right corner
      images[key] = image
    closed = self.closes > 0 and getattr(self, "gripper", -1.0) == 1.0
    qpos = np.array([0.0, 0.0]) if closed else np.array([0.04, -0.04])
    half = np.sqrt(0.5)
    return {**images, "robot0_eef_pos": self.pos.copy(),
            "robot0_eef_quat": np.array([half, 0.0, 0.0, half]),        # 90 degrees about x
            "robot0_gripper_qpos": qpos, "robot0_joint_pos": np.arange(7, dtype=np.float64) / 10}


class FakeLibero:
  """The LiberoBackend interface; `log` is shared with the env it makes."""

  def __init__(self, *args, **kwargs):
    self.log = {"builds": [], "resets": [], "actions": []}
    self.closed = 0

  def check(self):
    return {"python": "fake"}

  def suite_info(self, suite):
    assert suite == "libero_spatial", suite
    return {"suite": suite, "n_tasks": len(TASKS), "tasks": [dict(t) for t in TASKS]}

  def init_states(self, suite, task_id):
    states = np.zeros((NUM_INIT_STATES, 9))
    states[:, 0] = task_id
    states[:, -1] = np.arange(NUM_INIT_STATES)          # the trial index
    return states

  def make_env(self):
    return FakeLiberoEnv(self.log)

  def close(self):
    self.closed += 1


class ClosingPolicy:
  """Scripted agent in GR-1's CALVIN layout: closes the gripper (CALVIN sign -1) every step and
  records what it was given."""

  robot_obs_dim = 15

  def __init__(self, gripper=-1.0):
    self.gripper = gripper
    self.resets = 0
    self.observations, self.goals = [], []

  def reset(self):
    self.resets += 1

  def step(self, obs, goal):
    self.observations.append(obs)
    self.goals.append(goal)
    return np.array([0.1, 0.0, 0.0, 0.0, 0.0, 0.0, self.gripper], np.float32)
