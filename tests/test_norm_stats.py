"""Normalisation statistics: exact inverses, the identity through a model that predicts its input,
and the round trip through a saved checkpoint into GR1Policy (state normalised, actions
un-normalised); a checkpoint without them keeps CALVIN's behaviour."""
import numpy as np
import pytest
from flax import nnx

from gr1_jax import norm_stats as ns
from gr1_jax.model_checkpoint import load_norm_stats, numpy_params, save_model_checkpoint
from gr1_jax.modules.gr1 import GR1
from gr1_jax.policy import GR1Policy
from tests.conftest import tiny_config

RNG = np.random.default_rng(0)
ARM = (0, 1, 2, 3, 4, 5)


def _stats(mode: str, state_values, action_values) -> ns.NormStats:
  def vec(key, dim, gripper, values):
    stats = ns.select_stats(ns.vector_stats(values), ARM) if mode != "none" else {}
    return ns.VectorMap(key=key, dim=dim, arm_dims=ARM, gripper_dim=gripper, gripper_threshold=0.5, stats=stats)
  return ns.NormStats(mode=mode, state=vec("observation.state", 8, 7, state_values),
                      action=vec("action", 7, 6, action_values), gripper_values=(0.0, 1.0), source="test")


@pytest.mark.parametrize("mode", ns.MODES)
def test_normalise_then_unnormalise_is_the_identity(mode):
  values = RNG.normal(3.0, 20.0, (500, 8)).astype(np.float32)
  stats = _stats(mode, values, values[:, :7])
  x = values[:7, :6]
  np.testing.assert_allclose(stats.unnormalise_arm_action(stats.normalise_arm_action(x)), x, rtol=1e-5, atol=1e-4)
  if mode == "quantile":   # q01 -> -1, q99 -> +1
    q = stats.state.stats
    np.testing.assert_allclose(stats.normalise_arm_state(q["q01"]), -1.0, atol=1e-5)
    np.testing.assert_allclose(stats.normalise_arm_state(q["q99"]), 1.0, atol=1e-5)
  assert ns.NormStats.from_json(stats.to_json()).to_json() == stats.to_json()


@pytest.mark.parametrize("mode", ["mean_std", "quantile"])
def test_model_that_predicts_its_input_gives_back_the_state(mode):
  """normalise(state) -> model -> un-normalise(action) is the identity when the model echoes its
  (normalised) input and state and action share statistics."""
  values = RNG.uniform(-50, 80, (300, 8)).astype(np.float32)
  stats = _stats(mode, values, values[:, :7])
  echo = lambda normalised_arm: normalised_arm
  state = values[:20]
  action = stats.unnormalise_arm_action(echo(stats.normalise_arm_state(stats.state.arm(state))))
  np.testing.assert_allclose(action, state[:, :6], rtol=1e-5, atol=1e-4)
  assert not np.allclose(stats.normalise_arm_state(state[:, :6]), state[:, :6])   # it did normalise


def _obs(robot, seed=0):
  rng = np.random.default_rng(seed)
  return {"rgb_obs": {"rgb_static": rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
                      "rgb_gripper": rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)},
          "robot_obs": np.asarray(robot, np.float32)}


def test_checkpoint_round_trip_into_the_policy(tmp_path):
  cfg = tiny_config()
  params = numpy_params(GR1(cfg, rngs=nnx.Rngs(0)))
  state_values = RNG.normal(0.0, 30.0, (400, 8)).astype(np.float32)
  action_values = RNG.normal(5.0, 0.01, (400, 7)).astype(np.float32)
  stats = _stats("mean_std", state_values, action_values)
  save_model_checkpoint(str(tmp_path / "robot"), params, cfg, norm_stats=stats)
  save_model_checkpoint(str(tmp_path / "calvin"), params, cfg)
  assert load_norm_stats(str(tmp_path / "calvin")) is None
  assert load_norm_stats(str(tmp_path / "robot")).to_json() == stats.to_json()

  robot = GR1Policy.from_checkpoint(str(tmp_path / "robot"))
  calvin = GR1Policy.from_checkpoint(str(tmp_path / "calvin"))
  assert robot.robot_obs_dim == 8 and calvin.robot_obs_dim == 15 and calvin.norm is None
  for t in range(3):
    x = state_values[t].copy()
    x[7] = 0.9 if t % 2 else 0.1                       # gripper dim 7, threshold 0.5
    calvin_obs = np.zeros(15, np.float32)              # the same model inputs in CALVIN's layout
    calvin_obs[:6] = stats.normalise_arm_state(x[:6])
    calvin_obs[14] = 1.0 if x[7] > 0.5 else -1.0
    out_robot = robot.step(_obs(x, t), "lift the cup")
    out_calvin = calvin.step(_obs(calvin_obs, t), "lift the cup")
    np.testing.assert_allclose(out_robot[:6], stats.unnormalise_arm_action(out_calvin[:6]), rtol=1e-5, atol=1e-5)
    assert out_robot[6] == (1.0 if out_calvin[6] > 0 else 0.0)   # gripper_values (0, 1)
    assert abs(out_robot[:6] - 5.0).max() < 0.5       # in the robot's units: std 0.01 around 5
