"""The LIBERO evaluation loop against a fake LIBERO (LIBERO is not installed in CI)."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from gr1_jax.evaluation import libero_rollout
from gr1_jax.evaluation.libero_backend import LiberoBackend, LiberoServiceError
from gr1_jax.evaluation.libero_service import LiberoNotInstalledError
from tests.evaluation.test_calvin_rollout import _tiny_checkpoint
from tests.evaluation.fake_libero import MARKER, STEPS_NEEDED, ClosingPolicy, FakeLibero


def test_protocol_on_fake_env():
  backend, policy = FakeLibero(), ClosingPolicy()
  summary = libero_rollout.evaluate(backend, lambda: policy, "libero_spatial", task_ids=[0, 1, 2],
                                    trials=2, max_steps=8, num_wait_steps=4, resolution=32,
                                    verbose=False)
  log = backend.log
  # One env build per task (seed 7, the resolution), one reset per trial from init_states[trial].
  assert log["builds"] == [("libero_spatial", t, 32, 7) for t in (0, 1, 2)]
  assert log["resets"] == [(t, float(i)) for t in (0, 1, 2) for i in (0, 1)]
  assert policy.resets == 6
  # Tasks 0/1 are done after 3/5 closing steps; task 2 never: the budget (8) runs out.
  steps = [e["steps"] for e in summary["episodes"]]
  assert steps == [STEPS_NEEDED[0]] * 2 + [STEPS_NEEDED[1]] * 2 + [8, 8]
  assert [e["success"] for e in summary["episodes"]] == [True] * 4 + [False] * 2
  assert summary["per_task"]["2"]["success_rate"] == 0.0
  assert summary["success_rate"] == pytest.approx(2 / 3)
  assert summary["timing"]["policy_steps"] == sum(steps) == len(policy.observations)
  # Each episode: 4 no-op steps (LIBERO's open gripper, -1), then the policy's actions, whose
  # CALVIN gripper -1 (close) reaches LIBERO as +1 (close).
  actions = [a for _, a in log["actions"]]
  assert len(actions) == 6 * 4 + sum(steps)
  np.testing.assert_array_equal(actions[0], [0, 0, 0, 0, 0, 0, -1])
  np.testing.assert_allclose(actions[4], [0.1, 0, 0, 0, 0, 0, 1], rtol=1e-6)
  assert sum(a[-1] == 1 for a in actions) == sum(steps)
  assert policy.goals[0] == "pick up the black bowl and place it on the plate"
  assert summary["tasks"] == [0, 1, 2] and summary["max_steps"] == 8


def test_observation_mapping_to_policy_layout():
  backend, policy = FakeLibero(), ClosingPolicy()
  libero_rollout.evaluate(backend, lambda: policy, "libero_spatial", task_ids=[0], trials=1,
                          max_steps=3, num_wait_steps=0, resolution=16, verbose=False)
  first, second = policy.observations[0], policy.observations[1]
  for key in ("rgb_static", "rgb_gripper"):
    image = first["rgb_obs"][key]
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[-1, -1], MARKER)   # rotated by 180 degrees
    assert not np.array_equal(image[0, 0], MARKER)
  robot = first["robot_obs"]
  assert robot.shape == (15,)
  np.testing.assert_allclose(robot[3:6], [np.pi / 2, 0, 0], atol=1e-12)   # quat (x y z w) -> euler
  assert robot[6] == pytest.approx(0.08)                                  # open width
  np.testing.assert_allclose(robot[7:14], np.arange(7) / 10)
  assert robot[14] == 1.0            # after the no-op "open" steps: CALVIN's +1 = open
  assert second["robot_obs"][14] == -1.0     # the policy closed it (CALVIN sign)
  np.testing.assert_allclose(second["robot_obs"][:3] - robot[:3], [0.005, 0, 0])


def test_action_and_state_conventions():
  # CALVIN layout: +1 (open) -> LIBERO -1 (open); the arm passes through unchanged.
  a = libero_rollout.to_env_action(np.array([0.5, -2, 0, 0, 0, 0.3, 0.7], np.float32))
  np.testing.assert_allclose(a, [0.5, -2, 0, 0, 0, 0.3, -1])
  assert libero_rollout.to_env_action([0] * 6 + [-0.2])[-1] == 1.0
  assert libero_rollout.to_env_action([0] * 6 + [0.7], "libero8")[-1] == 1.0
  with pytest.raises(ValueError, match="7-D"):
    libero_rollout.to_env_action(np.zeros(6))
  # Axis-angle like robosuite's quat2axisangle; euler like pybullet.
  half = np.sqrt(0.5)
  np.testing.assert_allclose(libero_rollout.quat_to_axis_angle([0, 0, half, half]), [0, 0, np.pi / 2])
  np.testing.assert_allclose(libero_rollout.quat_to_euler_xyz([0, 0, half, half]), [0, 0, np.pi / 2])
  np.testing.assert_allclose(libero_rollout.quat_to_axis_angle([0, 0, 0, 1]), 0)
  obs = {"agentview_image": np.zeros((4, 4, 3), np.uint8),
         "robot0_eye_in_hand_image": np.zeros((4, 4, 3), np.uint8),
         "robot0_eef_pos": np.array([1.0, 2, 3]), "robot0_eef_quat": np.array([0, 0, half, half]),
         "robot0_gripper_qpos": np.array([0.03, -0.03])}
  state = libero_rollout.to_policy_obs(obs, 1.0, "libero8")["robot_obs"]
  np.testing.assert_allclose(state, [1, 2, 3, 0, 0, np.pi / 2, 0.03, -0.03])
  with pytest.raises(ValueError, match="8-D"):
    libero_rollout.layout_for(type("P", (), {"robot_obs_dim": 9})())


def test_worker_processes_give_the_same_results():
  kwargs = dict(task_ids=[0, 1, 2], trials=2, max_steps=6, num_wait_steps=1, resolution=8,
                verbose=False)
  one = libero_rollout.evaluate(FakeLibero(), ClosingPolicy, "libero_spatial", **kwargs)
  two = libero_rollout.evaluate(FakeLibero(), ClosingPolicy, "libero_spatial", workers=2, **kwargs)
  outcome = lambda s: [(e["task_id"], e["trial"], e["success"], e["steps"]) for e in s["episodes"]]  # noqa: E731
  assert outcome(one) == outcome(two) and len(outcome(two)) == 6
  assert set(two["timing"]["env_build_seconds"]) == {"0", "1", "2"}


def test_cli_end_to_end_with_tiny_checkpoint(tmp_path):
  """python -m experiments.evaluate_libero on the fake LIBERO with a real (tiny) GR-1 policy."""
  from experiments import evaluate_libero
  ckpt = _tiny_checkpoint(tmp_path / "ckpt")
  output = tmp_path / "out" / "results.json"
  summary = evaluate_libero.main([
      "--checkpoint", ckpt, "--suite", "libero_spatial", "--tasks", "0,2", "--trials", "2",
      "--max_steps", "4", "--resolution", "64", "--record_video", "--output", str(output), "--quiet",
      "--backend", "tests.evaluation.fake_libero:FakeLibero"])
  data = json.loads(output.read_text())
  assert data["suite"] == "libero_spatial" and data["tasks"] == [0, 2] and data["trials"] == 2
  assert data["num_wait_steps"] == 10 and data["seed"] == 7 and data["checkpoint"] == ckpt
  assert [(e["task_id"], e["trial"]) for e in data["episodes"]] == [(0, 0), (0, 1), (2, 0), (2, 1)]
  assert set(data["per_task"]) == {"0", "2"} and data["per_task"]["2"]["success"] == 0
  assert all(1 <= e["steps"] <= 4 for e in data["episodes"])
  assert data["timing"]["policy_step_ms"] > 0 and summary["per_task"] == data["per_task"]
  videos = sorted(os.listdir(tmp_path / "out" / "videos"))
  assert len(videos) == 4 and videos[0].startswith("task00-trial00-")
  progress = (tmp_path / "out" / "results.progress" / "progress.worker0.jsonl").read_text().splitlines()
  assert len(progress) == 4


def test_cli_rejects_bad_tasks_and_trials(tmp_path):
  from experiments import evaluate_libero
  from gr1_jax.user_errors import UserError
  ckpt = _tiny_checkpoint(tmp_path / "ckpt")
  base = ["--checkpoint", ckpt, "--suite", "libero_spatial", "--output", str(tmp_path / "r.json"),
          "--quiet", "--backend", "tests.evaluation.fake_libero:FakeLibero"]
  with pytest.raises(UserError, match="not in libero_spatial"):
    evaluate_libero.main(base + ["--tasks", "0,7"])
  with pytest.raises(UserError, match="4 initial states"):
    evaluate_libero.main(base + ["--trials", "5"])


def test_missing_libero_is_a_clear_error_across_the_pipe(tmp_path):
  with pytest.raises(LiberoNotInstalledError, match="libero_setup.sh"):
    LiberoBackend().check()
  # The service in a separate interpreter (this one, without LIBERO): the import error crosses
  # the pipe; unknown requests are reported, not fatal.
  backend = LiberoBackend(libero_python=sys.executable, log_path=str(tmp_path / "libero.log"))
  try:
    with pytest.raises(LiberoNotInstalledError, match="libero_setup.sh"):
      backend.suite_info("libero_spatial")
    with pytest.raises(LiberoServiceError, match="unknown request 'bogus'"):
      backend._svc().call("bogus")
    with pytest.raises(LiberoServiceError, match="env_reset before env_open"):
      backend.make_env().reset(np.zeros(3))
  finally:
    backend.close()
  assert backend._service is None
