"""The pure evaluation step: losses without dropout, PSNR and motion of the predicted frames.

PSNR compares the frame predicted at step t with the real frame t + next_n (both
in [0, 1] at the model's resolution) over pairs whose target step is valid. With
norm-pix training the prediction is re-scaled by the real patch's mean and std
first (see gr1_jax/visualization.py), so the figure measures predicted structure.

Motion is the mean absolute change, in grey levels (0-255), between the frames predicted
at consecutive valid steps, beside the same for the real frames they predict: a model that
draws one frame whatever the window scores 0 against the scene's real motion.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from data_pipelines import batch_spec as bs
from gr1_jax import sharding
from gr1_jax.image_preprocessing import IMAGENET_MEAN, IMAGENET_STD
from gr1_jax.losses import gr1_losses
from gr1_jax.modules.mae_vit import patchify
from gr1_jax.training.train_state import StateLayout
from gr1_jax.training.train_step import forward


def _to_unit_range(images):
  return jnp.clip(images * jnp.asarray(IMAGENET_STD) + jnp.asarray(IMAGENET_MEAN), 0.0, 1.0)


def _unpatchify(patches, patch_size: int, image_size: int):
  grid = image_size // patch_size
  *lead, _, _ = patches.shape
  x = patches.reshape(*lead, grid, grid, patch_size, patch_size, 3)
  return jnp.moveaxis(x, -3, -4).reshape(*lead, image_size, image_size, 3)


def _predicted_and_real(preds, images, step_mask, *, patch_size: int, norm_pix: bool, next_n: int):
  """(predicted, real, valid): the frames predicted at steps 0..L-n-1 and the real frames
  n..L-1 they predict, both (B, L-n, S, S, 3) in [0, 1], and whether each target is a real step."""
  real = images[:, next_n:].astype(jnp.float32)
  preds = preds[:, :-next_n].astype(jnp.float32)
  if norm_pix:
    target = patchify(real, patch_size)
    mean = target.mean(-1, keepdims=True)
    std = jnp.sqrt(((target - mean) ** 2).sum(-1, keepdims=True) / (target.shape[-1] - 1))
    preds = preds * (std + 1e-6) + mean
  predicted = _to_unit_range(_unpatchify(preds, patch_size, images.shape[-2]))
  return predicted, _to_unit_range(real), step_mask[:, next_n:].astype(jnp.float32)


def predicted_frame_metrics(preds, images, step_mask, *, patch_size: int, norm_pix: bool, next_n: int):
  """(psnr, motion, motion_real) of predictions (B, L, P, C) vs frames t + next_n of `images`
  (B, L, S, S, 3): mean PSNR (dB), and mean |frame t+1 - frame t| in grey levels over
  consecutive valid targets, of the predicted frames and of the real frames they predict."""
  predicted, real, valid = _predicted_and_real(preds, images, step_mask, patch_size=patch_size,
                                               norm_pix=norm_pix, next_n=next_n)
  mse = ((predicted - real) ** 2).mean(axis=(-1, -2, -3))
  per_frame = -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))
  psnr = (per_frame * valid).sum() / jnp.maximum(valid.sum(), 1.0)
  pairs = valid[:, 1:] * valid[:, :-1]
  count = jnp.maximum(pairs.sum(), 1.0)
  change = lambda x: (jnp.abs(x[:, 1:] - x[:, :-1]).mean(axis=(-1, -2, -3)) * pairs).sum() / count * 255.0
  return psnr, change(predicted), change(real)


def make_eval_step(layout: StateLayout, loss_weights: Mapping[str, float] | None = None):
  """jit(eval_step)(params, frozen, rngs, batch) -> (metrics, sample) where sample holds the
  first full window's (else the longest's) normalised frames and predictions for the frame
  grids (rgb, obs_preds, and hand_rgb, obs_hand_preds when the model predicts wrist-camera
  frames)."""
  config = layout.model_config
  weights = dict(loss_weights or {})
  p, n = config.mae.patch_size, config.fwd_pred_next_n

  def eval_step(params, frozen, rngs, batch):
    outputs, inputs = forward(layout.graphdef, params, frozen, rngs, batch, config, train=False)
    losses = gr1_losses(outputs, batch, n, weights)
    metrics = {f"loss/{k}": v for k, v in losses.items()}
    sample = {}
    if config.fwd_pred:
      frames = dict(patch_size=p, norm_pix=config.norm_pix_loss, next_n=n)
      metrics["psnr"], metrics["motion/video"], metrics["motion/video_real"] = predicted_frame_metrics(
          outputs["obs_preds"], inputs["rgb"], batch[bs.STEP_MASK], **frames)
      # the frame grids show the batch's first window with the most valid steps (a full one if
      # any): a window cut short by its segment's end shows little of the motion
      i = jnp.argmax(batch[bs.STEP_MASK].sum(axis=1))
      sample = {"rgb": inputs["rgb"][i], "obs_preds": outputs["obs_preds"][i],
                "step_mask": batch[bs.STEP_MASK][i]}
      if config.fwd_pred_hand:
        (metrics["psnr_hand"], metrics["motion/video_hand"],
         metrics["motion/video_hand_real"]) = predicted_frame_metrics(
            outputs["obs_hand_preds"], inputs["hand_rgb"], batch[bs.STEP_MASK], **frames)
        sample.update(hand_rgb=inputs["hand_rgb"][i], obs_hand_preds=outputs["obs_hand_preds"][i])
    return metrics, sample

  replicated = sharding.replicated(layout.mesh)
  return jax.jit(
      eval_step,
      in_shardings=(jax.tree.map(lambda a: a.sharding, layout.params), layout.frozen_shardings,
                    layout.rngs_shardings, sharding.batch_sharding(layout.mesh)),
      out_shardings=replicated)
