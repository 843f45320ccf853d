"""gr1_losses against the independent numpy oracle in tests/torch_reference/losses_numpy.py."""
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import batch_spec as bs
from gr1_jax import losses
from tests.torch_reference.losses_numpy import official_losses_numpy


def _random_outputs(rng, b=3, l=10, p=4, c=12):
  out = {
      "obs_preds": rng.normal(size=(b, l, p, c)), "obs_targets": rng.normal(size=(b, l, p, c)),
      "obs_hand_preds": rng.normal(size=(b, l, p, c)), "obs_hand_targets": rng.normal(size=(b, l, p, c)),
      "arm_action_preds": rng.normal(size=(b, l, 1, 6)) * 1.5,   # spans both Smooth-L1 branches
      "gripper_action_preds": rng.normal(size=(b, l, 1)) * 3,
  }
  return {k: v.astype(np.float32) for k, v in out.items()}


@pytest.mark.parametrize("next_n", [1, 3])
def test_losses_match_numpy_oracle(next_n):
  rng = np.random.default_rng(next_n)
  out = _random_outputs(rng)
  mask = np.ones((3, 10), np.float32)
  mask[0, 6:] = 0
  mask[2, 2:] = 0
  batch = {bs.STEP_MASK: mask, bs.ARM_ACTION: rng.uniform(-1, 1, (3, 10, 1, 6)).astype(np.float32),
           bs.GRIPPER_ACTION: rng.integers(0, 2, (3, 10, 1)).astype(np.float32),
           bs.ACTION_MASK: mask[..., None]}
  got = losses.gr1_losses({k: jnp.asarray(v) for k, v in out.items()},
                          {k: jnp.asarray(v) for k, v in batch.items()}, next_n)
  ref_out = dict(out, arm_action_preds=out["arm_action_preds"][:, :, 0],
                 gripper_action_preds=out["gripper_action_preds"])
  expected = official_losses_numpy(ref_out, batch[bs.ARM_ACTION][:, :, 0], batch[bs.GRIPPER_ACTION][:, :, 0],
                                   mask, fwd_pred_next_n=next_n)
  for ours, theirs in [("video", "loss_video"), ("video_hand", "loss_video_hand"),
                       ("arm", "loss_arm"), ("gripper", "loss_gripper")]:
    np.testing.assert_allclose(float(got[ours]), expected[theirs], rtol=1e-5, err_msg=ours)
  w = losses.DEFAULT_WEIGHTS
  np.testing.assert_allclose(float(got["total"]), sum(w[k] * float(got[k]) for k in w), rtol=1e-6)


def test_video_loss_ignores_pairs_with_invalid_targets():
  rng = np.random.default_rng(0)
  preds, targets = rng.normal(size=(2, 2, 10, 4, 3)).astype(np.float32)
  mask = np.ones((2, 10), np.float32)
  mask[:, 8:] = 0
  base = float(losses.video_loss(preds, targets, mask, 3))
  # Predictions at t = 5, 6 pair with padded targets 8, 9; changing them changes nothing.
  preds2 = preds.copy()
  preds2[:, 5:7] += 100
  assert float(losses.video_loss(preds2, targets, mask, 3)) == base
  preds2[:, 4] += 1
  assert float(losses.video_loss(preds2, targets, mask, 3)) != base


def test_pretraining_outputs_give_video_only():
  rng = np.random.default_rng(1)
  out = {k: jnp.asarray(v) for k, v in _random_outputs(rng).items() if k in ("obs_preds", "obs_targets")}
  got = losses.gr1_losses(out, {bs.STEP_MASK: jnp.ones((3, 10))}, 3)
  assert set(got) == {"video", "total"}
  assert float(got["total"]) == float(got["video"])
