"""Two reference predictors for the held-out video loss, in the loss's own units.

  mean frame       every step predicts one fixed frame: the per-pixel mean of the held-out
                   target frames themselves (the best any constant prediction can do on them,
                   so a model that learned only "the average scene" scores exactly this)
  copy last frame  step t predicts its own input frame t for frame t + next_n (no motion)

Both are scored like `gr1_jax.losses.video_loss` on the same evaluation batches
(targets as the model sees them: resized, ImageNet-normalised, norm-pix if the model
uses it), averaged over batches as the evaluation averages the model's loss. A model
below the mean frame has learned something about the current scene; one below the
copy baseline also predicts motion.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import batch_spec as bs
from gr1_jax.model_config import GR1Config
from gr1_jax.model_inputs import model_inputs
from gr1_jax.modules.gr1 import normalized_patch_targets

NAMES = {"video": "rgb", "video_hand": "hand_rgb"}   # loss name -> model input camera


def batch_statistics(targets, step_mask, next_n: int) -> dict:
  """Sufficient statistics of one batch: targets (B, L, P, C) in loss units, step_mask (B, L).

  count: valid (t, t + n) pairs; sum_x (P, C): sum of the valid target frames; sum_sq: sum
  of their squares; copy: summed squared error of predicting frame t for t + n."""
  targets = jnp.asarray(targets, jnp.float32)
  weight = jnp.asarray(step_mask, jnp.float32)[:, next_n:]
  future, current = targets[:, next_n:], targets[:, :-next_n]
  return {"count": weight.sum(),
          "sum_x": (future * weight[..., None, None]).sum((0, 1)),
          "sum_sq": ((future ** 2).sum((-1, -2)) * weight).sum(),
          "copy": (((current - future) ** 2).sum((-1, -2)) * weight).sum()}


def baselines(statistics: Iterable[Mapping]) -> dict[str, float]:
  """{'mean_frame', 'copy_last'} from per-batch statistics: each batch's masked-mean loss
  (as video_loss computes it), averaged over batches; the mean frame pools all batches."""
  stats = [{k: np.asarray(v, np.float64) for k, v in s.items()} for s in statistics]
  if not stats:
    raise ValueError("no evaluation batches")
  total = sum(s["count"] for s in stats)
  mean = sum(s["sum_x"] for s in stats) / max(float(total), 1.0)
  values = mean.size
  mean_frame, copy_last = [], []
  for s in stats:
    denominator = max(float(s["count"]), 1.0) * values
    squared = s["sum_sq"] - 2.0 * float((mean * s["sum_x"]).sum()) + float(s["count"]) * float((mean ** 2).sum())
    mean_frame.append(max(float(squared), 0.0) / denominator)
    copy_last.append(float(s["copy"]) / denominator)
  return {"mean_frame": float(np.mean(mean_frame)), "copy_last": float(np.mean(copy_last))}


def make_statistics_fn(config: GR1Config):
  """jit(batch -> {loss name: batch_statistics}) for each camera the model predicts."""
  cameras = [name for name, on in (("video", config.fwd_pred), ("video_hand", config.fwd_pred and
                                                                    config.fwd_pred_hand)) if on]

  @jax.jit
  def statistics(batch):
    inputs = model_inputs(batch, config)
    return {name: batch_statistics(normalized_patch_targets(inputs[NAMES[name]], config.mae.patch_size,
                                                            config.norm_pix_loss),
                                   batch[bs.STEP_MASK], config.fwd_pred_next_n) for name in cameras}
  return statistics, cameras


def compute(eval_ds, num_batches: int, config: GR1Config, to_global) -> dict[str, float]:
  """Eval metrics {'baseline/<loss>_mean_frame', 'baseline/<loss>_copy_last'} over the first
  `num_batches` batches of eval_ds (the batches `evaluate` scores); {} without a video head.
  to_global: host batch -> model batch (the loop's input_pipeline.to_global)."""
  statistics, cameras = make_statistics_fn(config)
  if not cameras:
    return {}
  iterator = iter(eval_ds)
  per_batch = [jax.device_get(statistics(to_global(next(iterator)))) for _ in range(num_batches)]
  out = {}
  for name in cameras:
    for kind, value in baselines([b[name] for b in per_batch]).items():
      out[f"baseline/{name}_{kind}"] = value
  return out


def comparison_line(step: int, metrics: Mapping[str, float]) -> str | None:
  """'step N: held-out video loss X | mean-frame baseline Y | copy-last-frame baseline Z' (per camera)."""
  parts = []
  for name in NAMES:
    if f"loss/{name}" in metrics and f"baseline/{name}_mean_frame" in metrics:
      parts.append(f"held-out {name.replace('_', ' ')} loss {metrics[f'loss/{name}']:.4f} | mean-frame "
                   f"baseline {metrics[f'baseline/{name}_mean_frame']:.4f} | copy-last-frame baseline "
                   f"{metrics[f'baseline/{name}_copy_last']:.4f}")
      if f"motion/{name}" in metrics:   # eval_step: do the predicted frames move like the real ones?
        parts[-1] += (f" | predicted frames change {metrics[f'motion/{name}']:.1f} grey levels per step "
                      f"(real {metrics[f'motion/{name}_real']:.1f})")
  return f"step {step}: " + "; ".join(parts) if parts else None
