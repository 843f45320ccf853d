"""A fake CALVIN: the observation layout and env/oracle interfaces of the real one, no physics.

Env: reset(robot_obs=, scene_obs=) / step(action) -> (obs, reward, done, info) / get_obs / get_info;
obs = {"rgb_obs": {"rgb_static" (200,200,3) u8, "rgb_gripper" (84,84,3) u8}, "depth_obs":
{"depth_static" (200,200) f32, "depth_gripper" (84,84) f32}, "robot_obs" (15,) f64, "scene_obs" (24,) f64}. The oracle (CALVIN's Tasks interface,
get_task_info_for_set) declares a task solved once the env has made STEPS_NEEDED[task] steps
since the subtask's start info; "unsolvable_task" never is. Actions are validated like CALVIN's
robot does (7 values, gripper exactly +-1).
"""
from __future__ import annotations

import numpy as np

STEPS_NEEDED = {"open_drawer": 3, "move_slider_left": 5, "turn_on_led": 2, "push_red_block_left": 4,
                "lift_blue_block_table": 6, "unsolvable_task": 10**9}
# The recorder's extras (scripted_demo, annotations, ...): fixture tasks need these many steps.
RECORD_STEPS = {"open_drawer": 3, "close_drawer": 4, "move_slider_left": 5, "move_slider_right": 2,
                "turn_on_led": 2, "turn_off_led": 3, "turn_on_lightbulb": 4, "turn_off_lightbulb": 3}
CHAINS = [
    ({"led": 0, "drawer": "closed"}, ("open_drawer", "move_slider_left", "turn_on_led",
                                       "push_red_block_left", "lift_blue_block_table")),
    ({"led": 1, "drawer": "open"}, ("turn_on_led", "unsolvable_task", "open_drawer",
                                     "move_slider_left", "push_red_block_left")),
    ({"led": 0, "drawer": "open"}, ("unsolvable_task", "open_drawer", "turn_on_led",
                                     "move_slider_left", "push_red_block_left")),
]


class FakeCalvinEnv:

  def __init__(self):
    self.robot_obs = np.zeros(15)
    self.scene_obs = np.zeros(24)
    self.t = 0
    self.resets = 0
    self.actions = []

  def reset(self, robot_obs=None, scene_obs=None):
    robot_obs, scene_obs = np.asarray(robot_obs, np.float64), np.asarray(scene_obs, np.float64)
    assert robot_obs.shape == (15,) and scene_obs.shape == (24,)
    self.robot_obs, self.scene_obs = robot_obs.copy(), scene_obs.copy()
    self.resets += 1
    return self.get_obs()

  def step(self, action):
    action = np.asarray(action)
    assert action.shape == (7,), action.shape
    assert action[-1] in (-1, 1), f"gripper action must be exactly +-1, got {action[-1]}"
    self.actions.append(action.copy())
    self.robot_obs[:3] += 0.02 * np.clip(action[:3], -1, 1)
    self.robot_obs[3:6] += 0.05 * np.clip(action[3:6], -1, 1)
    self.robot_obs[14] = action[-1]
    self.t += 1
    return self.get_obs(), 0, False, self.get_info()

  def _image(self, size):
    rng = np.random.default_rng([self.t, int(1000 * abs(self.robot_obs[0])) % 997, size])
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    image[: size // 4, : size // 4] = (self.t * 7) % 256
    return image

  def get_obs(self):
    return {"rgb_obs": {"rgb_static": self._image(200), "rgb_gripper": self._image(84)},
            "depth_obs": {"depth_static": np.full((200, 200), 1.0 + self.t / 100, np.float32),
                          "depth_gripper": np.full((84, 84), 0.5 + self.t / 100, np.float32)},
            "robot_obs": self.robot_obs.copy(), "scene_obs": self.scene_obs.copy()}

  def get_info(self):
    return {"robot_info": {"tcp_pos": self.robot_obs[:3].copy(), "gripper_action": int(self.robot_obs[14])},
            "scene_info": {"t": self.t}}


class FakeTasks:
  """CALVIN's Tasks interface."""

  def get_task_info_for_set(self, start_info, end_info, task_filter):
    elapsed = end_info["scene_info"]["t"] - start_info["scene_info"]["t"]
    return {task for task in task_filter if elapsed >= STEPS_NEEDED[task]}


class FakeCalvin:
  """A backend for gr1_jax.evaluation.calvin_rollout (picklable; one env per process)."""

  def __init__(self, dataset_dir: str = ""):
    self.dataset_dir = dataset_dir
    self.env = None

  def check(self):
    return {"backend": "fake"}

  def sequences(self, num_sequences):
    return [CHAINS[i % len(CHAINS)] for i in range(num_sequences)]

  def initial_state(self, condition):
    robot = np.zeros(15)
    robot[14] = 1.0
    scene = np.zeros(24)
    scene[5] = condition["led"]
    return robot, scene

  def instructions(self):
    return {task: f"please {task.replace('_', ' ')}" for task in STEPS_NEEDED}

  def make_env(self):
    self.env = FakeCalvinEnv()
    return self.env

  def valid_conditions(self, conditions, task):
    """CALVIN's valid_task in miniature: open_drawer needs it closed, turn_on_led needs it off."""
    rule = {"open_drawer": lambda c: c["drawer"] == "closed", "turn_on_led": lambda c: c["led"] == 0}
    return [bool(rule.get(task, lambda c: True)(dict(c))) for c in conditions]

  def task_success(self, start_info, current_info, task):
    return len(FakeTasks().get_task_info_for_set(start_info, current_info, {task})) > 0

  def close(self):
    pass


class FakeRecordingCalvin(FakeCalvin):
  """FakeCalvin plus what data_pipelines/calvin/record_demos.py asks of CALVIN. The oracle
  solves task t after steps_needed[t] steps (RECORD_STEPS by default); a task missing there
  is never solved. fail_after: raise KeyboardInterrupt on that scripted_demo call (a kill)."""

  def __init__(self, dataset_dir: str = "", steps_needed=None, fail_after=None, crash_at=None):
    super().__init__(dataset_dir)
    self.steps_needed = dict(RECORD_STEPS if steps_needed is None else steps_needed)
    self.fail_after = fail_after
    self.crash_at = crash_at   # the service "dies" (CalvinServiceDied) on this scripted_demo call
    self.calls = []
    self.closed = False

  def close(self):
    self.closed = True

  def missing(self):
    return []

  def env_config_yaml(self, scene="calvin_scene_D"):
    return f"env:\n  _target_: fake\nscene: {scene}\n"

  def annotations(self, split="training"):
    if split == "validation":
      return {t: [f"validation: {t.replace('_', ' ')}"] for t in RECORD_STEPS}
    return {t: [f"{t.replace('_', ' ')} #{i}" for i in range(3)] for t in RECORD_STEPS}

  def sequences(self, num_sequences):
    return [({"led": i % 2, "drawer": "closed"}, ("open_drawer",)) for i in range(num_sequences)]

  def valid_conditions(self, conditions, task):
    return [True for _ in conditions]

  def scripted_demo(self, task, seed, robot_obs, scene_obs, tcp_offset=(0, 0, 0), max_steps=240,
                    jitter=0.005):
    from data_pipelines.calvin import scripted_tasks
    if self.fail_after is not None and len(self.calls) >= self.fail_after:
      raise KeyboardInterrupt("killed")
    if self.crash_at is not None and len(self.calls) == self.crash_at:
      from gr1_jax.evaluation.calvin_backend import CalvinServiceDied
      raise CalvinServiceDied("the CALVIN service under fake died (exit code -6) during scripted_demo")
    self.calls.append((task, seed))
    env = self.env = FakeCalvinEnv()
    needed = self.steps_needed.get(task, 10**9)
    robot_obs = np.asarray(robot_obs, float).copy()
    robot_obs[:3] += tcp_offset
    oracle = lambda start, now: now["scene_info"]["t"] - start["scene_info"]["t"] >= needed
    return scripted_tasks.run_episode(env, lambda: (env.robot_obs[:3].copy(), env.robot_obs[3:6].copy()),
                                      oracle, task, robot_obs, scene_obs, seed, max_steps=max_steps,
                                      jitter=jitter)


class ScriptedPolicy:
  """Counts resets / steps; returns a fixed action with a non-binary gripper value."""

  def __init__(self):
    self.resets = 0
    self.steps = 0
    self.goals = []

  def reset(self):
    self.resets += 1

  def step(self, obs, goal):
    assert obs["rgb_obs"]["rgb_static"].shape == (200, 200, 3)
    self.steps += 1
    self.goals.append(goal)
    return np.asarray([0.1, 0, 0, 0, 0, 0, 0.3], np.float32)
