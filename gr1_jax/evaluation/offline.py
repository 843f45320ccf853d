"""Offline metrics of a GR-1 checkpoint on validation windows (teacher-forced, no simulator).

Per batch (batch_spec layout: uint8 frames at native size, right-padded windows) a
jitted function returns SUMS and COUNTS, so the dataset-level numbers are exact
means over every valid element regardless of batching:

  arm_l1, arm_mse     |pred - target| and (pred - target)^2 over the 6 arm dims of
                      every valid action target (action_mask; K chunk entries each)
  gripper_accuracy    (sigmoid(logit) > 0.5) == target over valid action targets
  video/<camera>      psnr (dB) and ssim of the frame predicted at step t against the
                      real frame t + fwd_pred_next_n, both in [0, 1] at the model's
                      resolution, over pairs whose target step is valid; mean over
                      frames. SSIM: Gaussian window 11 / sigma 1.5, K1 0.01, K2 0.03,
                      'valid' filtering, per channel then averaged (Wang et al. 2004).

Video metrics need a checkpoint with the [OBS] decoder (fwd_pred). With norm-pix
training (the official default) the decoder predicts per-patch standardised pixels;
they are mapped back with each REAL target patch's mean and std before scoring
(see gr1_jax/visualization.py), so PSNR/SSIM then measure predicted structure, not
colour; the JSON says so in `video_norm_pix_rescaled`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_pipelines import batch_spec as bs
from gr1_jax.image_preprocessing import IMAGENET_MEAN, IMAGENET_STD
from gr1_jax.model_inputs import model_inputs
from gr1_jax.modules.mae_vit import patchify

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2
  w = np.exp(-x ** 2 / (2 * sigma ** 2))
  return (w / w.sum()).astype(np.float32)


def ssim(a, b, *, data_range: float = 1.0):
  """Per-image SSIM of (..., H, W, C) images in [0, data_range] -> (...,)."""
  window = jnp.asarray(gaussian_window())
  size = window.shape[0]
  if a.shape[-3] < size or a.shape[-2] < size:
    raise ValueError(f"images of {a.shape[-3]}x{a.shape[-2]} are smaller than the {size}x{size} SSIM window")

  def blur(x):                                        # separable 'valid' Gaussian filter on H, W
    h = x.shape[-3] - size + 1
    x = sum(window[i] * x[..., i:i + h, :, :] for i in range(size))
    w = x.shape[-2] - size + 1
    return sum(window[i] * x[..., :, i:i + w, :] for i in range(size))

  c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a ** 2
  var_b = blur(b * b) - mu_b ** 2
  cov = blur(a * b) - mu_a * mu_b
  s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
  return s.mean(axis=(-3, -2, -1))


def psnr(a, b, *, data_range: float = 1.0):
  """Per-image PSNR (dB) of (..., H, W, C) images -> (...,) (capped at 100 dB for identical images)."""
  mse = ((a - b) ** 2).mean(axis=(-3, -2, -1))
  return 10.0 * jnp.log10(data_range ** 2 / jnp.maximum(mse, 1e-10))


def _to_unit(images):
  return jnp.clip(images * jnp.asarray(IMAGENET_STD) + jnp.asarray(IMAGENET_MEAN), 0.0, 1.0)


def _unpatchify(patches, patch_size: int, image_size: int):
  grid = image_size // patch_size
  lead = patches.shape[:-2]
  x = patches.reshape(*lead, grid, grid, patch_size, patch_size, 3)
  return jnp.moveaxis(x, -3, -4).reshape(*lead, image_size, image_size, 3)


def predicted_frames(preds, real_normalized, *, patch_size: int, norm_pix: bool):
  """Decoder output (..., P, p*p*3) -> [0, 1] frames, re-scaled by the real patches if norm_pix."""
  preds = preds.astype(jnp.float32)
  if norm_pix:
    target = patchify(real_normalized.astype(jnp.float32), patch_size)
    mean = target.mean(-1, keepdims=True)
    std = jnp.sqrt(((target - mean) ** 2).sum(-1, keepdims=True) / (target.shape[-1] - 1))
    preds = preds * (std + 1e-6) + mean
  return _to_unit(_unpatchify(preds, patch_size, real_normalized.shape[-2]))


class OfflineEvaluator:
  """Accumulates the metrics above over batches: `update(batch)` then `result()`."""

  def __init__(self, model):
    self.config = model.config
    model.eval()
    self._graphdef, self._state = nnx.split(model)
    self._fn = jax.jit(self._batch_sums)
    self._sums: dict[str, float] = {}
    self.num_windows = 0

  def _batch_sums(self, state, batch):
    cfg = self.config
    model = nnx.merge(self._graphdef, state)
    inputs = model_inputs(batch, cfg)
    out = model(**inputs)
    rgb = inputs["rgb"].astype(jnp.float32)
    hand = inputs["hand_rgb"].astype(jnp.float32) if cfg.use_hand_rgb else None
    sums = {}
    if cfg.act_pred:
      mask = batch[bs.ACTION_MASK].astype(jnp.float32)                     # (B, L, K)
      diff = out["arm_action_preds"] - batch[bs.ARM_ACTION]                  # (B, L, K, 6)
      sums["arm_abs"] = (jnp.abs(diff) * mask[..., None]).sum()
      sums["arm_sq"] = (diff ** 2 * mask[..., None]).sum()
      sums["arm_count"] = mask.sum() * diff.shape[-1]
      predicted = jax.nn.sigmoid(out["gripper_action_preds"]) > 0.5
      correct = predicted == (batch[bs.GRIPPER_ACTION] > 0.5)
      sums["gripper_correct"] = (correct * mask).sum()
      sums["gripper_count"] = mask.sum()
    if cfg.fwd_pred:
      n = cfg.fwd_pred_next_n
      valid = batch[bs.STEP_MASK][:, n:].astype(jnp.float32)                # target step valid
      cameras = [("static", "obs_preds", rgb)]
      if cfg.fwd_pred_hand:
        cameras.append(("gripper", "obs_hand_preds", hand))
      for name, key, images in cameras:
        real = images[:, n:]
        pred = predicted_frames(out[key][:, :-n], real, patch_size=cfg.mae.patch_size,
                                norm_pix=cfg.norm_pix_loss)
        real01 = _to_unit(real.astype(jnp.float32))
        sums[f"video_{name}_psnr"] = (psnr(pred, real01) * valid).sum()
        sums[f"video_{name}_ssim"] = (ssim(pred, real01) * valid).sum()
        sums[f"video_{name}_mse"] = (((pred - real01) ** 2).mean(axis=(-3, -2, -1)) * valid).sum()
        sums[f"video_{name}_count"] = valid.sum()
    return sums

  def update(self, batch: Mapping) -> None:
    required = [bs.STEP_MASK, bs.LANGUAGE_TOKENS, bs.RGB_STATIC]
    if self.config.use_hand_rgb:
      required.append(bs.RGB_GRIPPER)
    if self.config.use_state:
      required += [bs.ARM_STATE, bs.GRIPPER_STATE]
    if self.config.act_pred:
      required += [bs.ARM_ACTION, bs.GRIPPER_ACTION, bs.ACTION_MASK]
    bs.check_batch(batch, tuple(required), seq_len=self.config.seq_len)
    if self.config.act_pred and batch[bs.ARM_ACTION].shape[2] != self.config.action_chunk:
      raise ValueError(f"batch['arm_action'] has {batch[bs.ARM_ACTION].shape[2]} chunk entries, the "
                       f"model predicts action_chunk={self.config.action_chunk}")
    model_batch = {k: np.asarray(batch[k]) for k in required}
    sums = jax.device_get(self._fn(self._state, model_batch))
    for key, value in sums.items():
      self._sums[key] = self._sums.get(key, 0.0) + float(value)
    self.num_windows += int(np.asarray(batch[bs.STEP_MASK]).shape[0])

  def result(self) -> dict:
    s, cfg = self._sums, self.config
    out = {"num_windows": self.num_windows}
    if cfg.act_pred:
      count = s.get("arm_count", 0.0)
      out.update({
          "arm_l1": s["arm_abs"] / count if count else None,
          "arm_mse": s["arm_sq"] / count if count else None,
          "gripper_accuracy": s["gripper_correct"] / s["gripper_count"] if s.get("gripper_count") else None,
          "num_action_targets": int(s.get("gripper_count", 0)),
      })
    if cfg.fwd_pred:
      video = {}
      for name in ("static", "gripper"):
        count = s.get(f"video_{name}_count")
        if count is None:
          continue
        video[name] = {"psnr": s[f"video_{name}_psnr"] / count if count else None,
                       "ssim": s[f"video_{name}_ssim"] / count if count else None,
                       "mse": s[f"video_{name}_mse"] / count if count else None,
                       "num_frame_pairs": int(count)}
      out["video"] = video
      out["video_target_offset"] = cfg.fwd_pred_next_n
      out["video_norm_pix_rescaled"] = bool(cfg.norm_pix_loss)
    return out


def evaluate_batches(model, batches: Iterable[Mapping], *, max_batches: int | None = None) -> dict:
  evaluator = OfflineEvaluator(model)
  for i, batch in enumerate(batches):
    if max_batches is not None and i >= max_batches:
      break
    evaluator.update(batch)
  if evaluator.num_windows == 0:
    raise ValueError("the validation data gave no batches")
  return evaluator.result()
