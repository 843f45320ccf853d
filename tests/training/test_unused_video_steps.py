"""The training forward leaves the last fwd_pred_next_n steps out of the video decoder
(train_step.supervised_video_steps, GR1.predict's decode_steps): same losses and gradients
as decoding every step and discarding those predictions, as the official step does.

Tolerance: both compute the same float32 functions; only the decoder's batch shrinks
(B*7 instead of B*10 sequences), which may change XLA's blocking of its matmuls and the
order of its sums: relative 1e-5 with an absolute floor of 1e-5 x the leaf's largest
gradient (float32 relative precision is 6e-8). Skipping the wrong steps (the first ones)
is far outside it, checked below, so the comparison can fail.
"""
import jax
import numpy as np
import pytest

from data_pipelines.synthetic import synthetic_batch
from experiments.configs import finetune_calvin
from gr1_jax import sharding
from gr1_jax.losses import gr1_losses
from gr1_jax.training import optimizer
from gr1_jax.training import train_state as ts
from gr1_jax.training.train_step import forward, make_loss_fn, rngs_for_step, supervised_video_steps
from tests.conftest import tiny_config

RTOL = 1e-5


def _setup(variant):
  config = tiny_config(variant)
  tx, _ = optimizer.make_optimizer(finetune_calvin.get_config("debug").optimizer, 10)
  layout = ts.make_layout(config, tx, sharding.make_mesh({"data": -1}, jax.devices()[:1]))
  params, frozen, rngs = ts.init_model_state(layout, 0)
  batch = synthetic_batch(3, batch_size=2, seq_len=config.seq_len, image_size=40, hand_size=20,
                          finetune=variant == "tiny")
  return config, layout, params, frozen, rngs_for_step(rngs, 3), batch


def _assert_close(expected, actual):
  for (path, e), a in zip(jax.tree_util.tree_flatten_with_path(expected)[0], jax.tree.leaves(actual)):
    np.testing.assert_allclose(a, e, rtol=RTOL, atol=RTOL * float(np.abs(e).max()),
                               err_msg=jax.tree_util.keystr(path))


def _full_decoder_loss(layout, frozen, rngs, decode=lambda x: x):
  """The official computation: decode all L steps (train mode, dropout on), then the loss."""
  config = layout.model_config

  def loss(params, batch):
    outputs, _ = forward(layout.graphdef, params, frozen, rngs, batch, config, train=True)
    outputs = {k: decode(v) if k in ("obs_preds", "obs_hand_preds") else v for k, v in outputs.items()}
    losses = gr1_losses(outputs, batch, config.fwd_pred_next_n)
    return losses["total"], losses
  return loss


# Stage 2 covers both cameras' decoders; stage 1 (static camera only) is the same path, opt-in.
@pytest.mark.parametrize("variant", ["tiny", pytest.param("tiny_pretrain", marks=pytest.mark.slow)],
                         ids=["stage2", "stage1_video"])
def test_skipping_unsupervised_decoder_steps_keeps_loss_and_gradients(variant):
  config, layout, params, frozen, rngs, batch = _setup(variant)
  assert supervised_video_steps(config) == config.seq_len - config.fwd_pred_next_n == 7
  grad = lambda f: jax.device_get(jax.jit(jax.value_and_grad(f, has_aux=True))(params, batch))
  skipped = make_loss_fn(layout)
  (_, losses), grads = grad(lambda p, b: skipped(p, frozen, rngs, b))
  (_, ref_losses), ref_grads = grad(_full_decoder_loss(layout, frozen, rngs))
  assert set(losses) == set(ref_losses) and "video" in losses
  for head in ref_losses:
    np.testing.assert_allclose(losses[head], ref_losses[head], rtol=RTOL, err_msg=head)
  _assert_close(ref_grads, grads)
  assert float(np.abs(ref_grads["decoder"]["decoder_pred"]["kernel"]).max()) > 0

  # The comparison can fail: predictions taken one step late instead of the first L - next_n
  # give another video loss (a forward only: a third gradient compile would double CI time).
  late = _full_decoder_loss(layout, frozen, rngs, decode=lambda x: x[:, 1:])
  _, late_losses = jax.device_get(jax.jit(late)(params, batch))
  with pytest.raises(AssertionError):
    np.testing.assert_allclose(late_losses["video"], ref_losses["video"], rtol=RTOL)


def test_decode_steps_shapes_and_values():
  """predict(decode_steps=n) returns the first n steps of the full decoder output, unchanged."""
  from flax import nnx

  from gr1_jax.model_inputs import model_inputs
  config, layout, params, frozen, rngs, batch = _setup("tiny")

  @jax.jit
  def both(batch):
    model = nnx.merge(layout.graphdef, params, frozen, rngs)
    model.eval()
    inputs = model_inputs(batch, config)
    return model(**inputs, decode_steps=7), model(**inputs)

  short, full = jax.device_get(both(batch))
  for key in ("obs_preds", "obs_hand_preds"):
    assert short[key].shape == (2, 7) + full[key].shape[2:]
    np.testing.assert_allclose(short[key], full[key][:, :7], rtol=RTOL, atol=RTOL * float(np.abs(full[key]).max()))
  for key in ("obs_targets", "arm_action_preds", "gripper_action_preds"):
    assert short[key].shape == full[key].shape
