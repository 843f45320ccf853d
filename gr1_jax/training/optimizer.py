"""AdamW with linear warm-up + cosine decay, global-norm clipping, decay on matrices only.

Defaults (experiment configs, gr1.md §4): GR-1's own optimizer settings are not
published. Stage 1 follows the same group's GR-MG pre-training config (AdamW,
lr 3.6e-4, betas (0.9, 0.999), weight decay 0, warm-up 5 of 50 epochs, half-cycle
cosine to 1 % of peak, clip 1.0); stage 2 follows GR1-Training, the public
fine-tuning of GR-1 itself (AdamW, lr 9e-4, weight decay 1e-4, 1 warm-up epoch,
cosine to 0, clip 1.0).
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import optax

from gr1_jax.user_errors import ConfigError

OPTIMIZER_FIELDS = ("learning_rate", "warmup_steps", "end_lr_fraction", "b1", "b2", "eps",
                    "weight_decay", "grad_clip_norm")


def learning_rate_schedule(opt: Mapping, total_steps: int) -> optax.Schedule:
  """0 -> learning_rate linearly over warmup_steps, then cosine to end_lr_fraction * learning_rate."""
  peak, warmup = float(opt["learning_rate"]), int(opt["warmup_steps"])
  if not peak > 0:
    raise ConfigError(f"config.optimizer.learning_rate={peak} must be > 0")
  if not 0 <= warmup < total_steps:
    raise ConfigError(f"config.optimizer.warmup_steps={warmup} must be in [0, num_train_steps={total_steps})")
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=total_steps,
      end_value=peak * float(opt["end_lr_fraction"]))


def decay_mask(params):
  """Weight decay on >= 2-D parameters (kernels, token and query tables); biases and
  LayerNorm scales stay undecayed, as in GPT-2 / GR1-Training practice."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(opt: Mapping, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  unknown = sorted(set(opt) - set(OPTIMIZER_FIELDS))
  if unknown:
    raise ConfigError(f"unknown key config.optimizer.{unknown[0]}; valid keys: {', '.join(OPTIMIZER_FIELDS)}")
  schedule = learning_rate_schedule(opt, total_steps)
  tx = optax.chain(
      optax.clip_by_global_norm(float(opt["grad_clip_norm"])),
      optax.adamw(schedule, b1=float(opt["b1"]), b2=float(opt["b2"]), eps=float(opt["eps"]),
                  weight_decay=float(opt["weight_decay"]), mask=decay_mask))
  return tx, schedule
