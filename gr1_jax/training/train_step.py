"""The pure training step shared by both stages, and the batch -> model-input transform.

    uint8 batch --model_inputs (resize + ImageNet norm, on device)--> GR1 (dropout on; the video
      decoder only on the steps whose t + fwd_pred_next_n target is in the window, which is
      all the loss reads: supervised_video_steps)
      --> gr1_losses (whatever heads the model has: video only in stage 1, all in stage 2)
      --> gradients w.r.t. the trainable params only --> non-finite guard --> AdamW

With frame reuse (frame_reuse = W > 0, data_pipelines/frame_reuse.py) the batch holds B
segments of seq_len + W - 1 steps: the model runs GR1.call_segments (per-frame features once
per segment frame, gathered into B*W windows) and the losses see the unfolded window batch,
so the loss is that of the per-window path on those B*W windows (same masked means).

A step whose loss or gradient norm is not finite changes nothing but the
counters: params and optimizer state keep their old values (so the learning-rate
schedule, driven by the optimizer's own count, does not advance either).
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from data_pipelines import batch_spec as bs
from data_pipelines import frame_reuse as reuse
from gr1_jax import sharding
from gr1_jax.losses import gr1_losses
from gr1_jax.model_inputs import model_inputs, required_keys  # noqa: F401  (required_keys: re-exported for the loop)
from gr1_jax.model_config import GR1Config
from gr1_jax.training.train_state import StateLayout, TrainState


def rngs_for_step(rngs, step):
  """Each dropout stream's key folded with the step number, counts reset: the masks of
  step s depend only on (seed, s), which is what makes a resumed run bit-identical."""
  def leaf(x):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.fold_in(x, step)
    return jnp.zeros_like(x)
  return jax.tree.map(leaf, rngs)


def forward(graphdef, params, frozen, rngs, batch, config: GR1Config, *, train: bool, decode_steps=None):
  model = nnx.merge(graphdef, params, frozen, rngs)
  if train:
    model.train()
  else:
    model.eval()
  inputs = model_inputs(batch, config)
  return model(**inputs, decode_steps=decode_steps), inputs


def supervised_video_steps(config: GR1Config) -> int | None:
  """How many leading steps' video predictions the loss reads: the last fwd_pred_next_n
  steps have no target frame in the window (gr1_jax.losses.video_loss), so the training
  forward leaves them out of the video decoder (GR1.predict's decode_steps); equal work
  to the official step, which decodes and then discards them. None: decode every step."""
  steps = config.seq_len - config.fwd_pred_next_n
  return steps if config.fwd_pred and 0 < steps < config.seq_len else None


# The batch keys the losses read (gr1_losses); with frame reuse only these are unfolded.
LOSS_KEYS = (bs.STEP_MASK, bs.ARM_ACTION, bs.GRIPPER_ACTION, bs.ACTION_MASK)


def forward_segments(graphdef, params, frozen, rngs, batch, config: GR1Config, num_windows: int, *,
                     train: bool, decode_steps=None):
  """Frame reuse: a batch of B segments -> (outputs of its B*W windows, the window batch of LOSS_KEYS)."""
  model = nnx.merge(graphdef, params, frozen, rngs)
  if train:
    model.train()
  else:
    model.eval()
  outputs = model.call_segments(num_windows=num_windows, decode_steps=decode_steps, **model_inputs(batch, config))
  windows = reuse.unfold_batch({k: batch[k] for k in LOSS_KEYS if k in batch}, config.seq_len, num_windows)
  return outputs, windows


def make_loss_fn(layout: StateLayout, loss_weights: Mapping[str, float] | None = None, frame_reuse: int = 0):
  """loss_fn(params, frozen, rngs, batch) -> (total loss, per-head losses), in training mode.

  frame_reuse = W > 0: `batch` holds segments of seq_len + W - 1 steps (module docstring)."""
  config = layout.model_config
  weights = dict(loss_weights or {})
  decode_steps = supervised_video_steps(config)
  if frame_reuse < 0:
    raise ValueError(f"frame_reuse must be 0 (per-window) or the windows per segment, got {frame_reuse}")

  def loss_fn(params, frozen, rngs, batch):
    if frame_reuse:
      outputs, batch = forward_segments(layout.graphdef, params, frozen, rngs, batch, config, frame_reuse,
                                        train=True, decode_steps=decode_steps)
    else:
      outputs, _ = forward(layout.graphdef, params, frozen, rngs, batch, config, train=True,
                           decode_steps=decode_steps)
    losses = gr1_losses(outputs, batch, config.fwd_pred_next_n, weights)
    return losses["total"], losses
  return loss_fn


def make_train_step(layout: StateLayout, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    loss_weights: Mapping[str, float] | None = None, frame_reuse: int = 0):
  """jit(train_step)(state, frozen, rngs, batch) -> (state, metrics); `state` is donated.

  frame_reuse = W > 0: batches of segments of seq_len + W - 1 steps (config.data.frame_reuse)."""
  compute_loss = make_loss_fn(layout, loss_weights, frame_reuse)

  def train_step(state: TrainState, frozen, rngs, batch):
    step_rngs = rngs_for_step(rngs, state.step)

    def loss_fn(params):
      return compute_loss(params, frozen, step_rngs, batch)

    (loss, losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    bad = (~finite).astype(jnp.int32)
    applied = state.step - state.nonfinite_total       # = the optimizer's update count
    new_state = TrainState(
        step=state.step + 1, params=keep(params, state.params), opt_state=keep(opt_state, state.opt_state),
        nonfinite_run=jnp.where(finite, 0, state.nonfinite_run + 1),
        nonfinite_total=state.nonfinite_total + bad)
    metrics = {f"loss/{k}": v for k, v in losses.items()}
    metrics.update({"grad_norm": grad_norm, "learning_rate": schedule(applied),
                    "nonfinite": bad, "nonfinite_run": new_state.nonfinite_run})
    return new_state, metrics

  replicated = sharding.replicated(layout.mesh)
  return jax.jit(
      train_step,
      in_shardings=(layout.train_state_shardings, layout.frozen_shardings, layout.rngs_shardings,
                    sharding.batch_sharding(layout.mesh)),
      out_shardings=(layout.train_state_shardings, replicated),
      donate_argnums=(0,))
