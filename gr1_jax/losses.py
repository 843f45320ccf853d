"""GR-1's training losses (gr1.md §3), masked means over valid elements.

  video   : MSE between the [OBS] prediction at step t and the (per-patch
            normalised) frame of step t + next_n, averaged over patches and
            values, then over pairs whose TARGET step is valid. Steps
            L-next_n .. L-1 have no target inside the window and get no loss.
  arm     : Smooth-L1 (beta = 1) over the 6 arm dims, mean over valid entries.
  gripper : binary cross-entropy with logits against (a + 1) / 2, masked mean.

Default weights (`DEFAULT_WEIGHTS`): arm 100, gripper 1, each camera's video 1,
the coefficients GR1-Training adopted as "official"; the paper states unit
weights for every term, which `--config.loss_weights.arm=1` reproduces.
"""
from __future__ import annotations

import jax.numpy as jnp
import optax

from data_pipelines import batch_spec as bs

DEFAULT_WEIGHTS = {"video": 1.0, "video_hand": 1.0, "arm": 100.0, "gripper": 1.0}


def _masked_mean(values, mask):
  mask = jnp.broadcast_to(mask, values.shape).astype(jnp.float32)
  return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def video_loss(preds, targets, step_mask, next_n: int):
  """preds (B, L or L - next_n, P, C), targets (B, L, P, C); step_mask (B, L).

  The predictions of the last next_n steps have no target; the model may leave them
  out (GR1.predict's decode_steps), which gives the same loss."""
  steps = targets.shape[1] - next_n
  per_pair = ((preds[:, :steps] - targets[:, next_n:]) ** 2).mean(axis=(-1, -2))
  return _masked_mean(per_pair, step_mask[:, next_n:])


def arm_loss(preds, targets, mask):
  """preds, targets (B, L, K, 6); mask (B, L, K)."""
  diff = jnp.abs(preds - targets)
  smooth_l1 = jnp.where(diff < 1.0, 0.5 * diff ** 2, diff - 0.5)
  return _masked_mean(smooth_l1, mask[..., None])


def gripper_loss(logits, targets, mask):
  """logits, targets in {0, 1}, mask: (B, L, K)."""
  return _masked_mean(optax.sigmoid_binary_cross_entropy(logits, targets), mask)


def gr1_losses(outputs: dict, batch: dict, next_n: int, weights: dict | None = None):
  """Per-head losses and their weighted sum `total` for whatever heads `outputs` has."""
  weights = {**DEFAULT_WEIGHTS, **(weights or {})}
  step_mask = batch[bs.STEP_MASK]
  losses = {}
  if "obs_preds" in outputs:
    losses["video"] = video_loss(outputs["obs_preds"], outputs["obs_targets"], step_mask, next_n)
  if "obs_hand_preds" in outputs:
    losses["video_hand"] = video_loss(outputs["obs_hand_preds"], outputs["obs_hand_targets"],
                                      step_mask, next_n)
  if "arm_action_preds" in outputs:
    losses["arm"] = arm_loss(outputs["arm_action_preds"], batch[bs.ARM_ACTION], batch[bs.ACTION_MASK])
    losses["gripper"] = gripper_loss(outputs["gripper_action_preds"], batch[bs.GRIPPER_ACTION],
                                     batch[bs.ACTION_MASK])
  losses["total"] = sum(weights[k] * v for k, v in losses.items())
  return losses
