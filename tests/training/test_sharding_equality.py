"""Loss and gradients on every mesh shape equal the single-device result (8 CPU devices)."""
import functools

import jax
import numpy as np
import pytest

from data_pipelines.synthetic import synthetic_batch
from experiments.configs import finetune_calvin
from gr1_jax import sharding
from gr1_jax.losses import gr1_losses
from gr1_jax.training import optimizer
from gr1_jax.training import train_state as ts
from gr1_jax.training.train_step import forward, rngs_for_step
from tests.conftest import tiny_config

MESHES = [(8, 1, 1), (4, 2, 1), (2, 2, 2), (1, 8, 1)]
DEFAULT_SUITE = {("tiny", (2, 2, 2)), ("tiny_pretrain", (4, 2, 1))}   # the rest: -m slow
CASES = [pytest.param(variant, shape, id=f"{variant}-{'x'.join(map(str, shape))}",
                      marks=() if (variant, shape) in DEFAULT_SUITE else pytest.mark.slow)
         for variant in ("tiny", "tiny_pretrain") for shape in MESHES]


def _layout(config, mesh):
  tx, _ = optimizer.make_optimizer(finetune_calvin.get_config("debug").optimizer, 10)
  return ts.make_layout(config, tx, mesh)


def _loss_and_grads(layout, params, frozen, rngs, batch):
  config = layout.model_config

  def loss(p):
    outputs, _ = forward(layout.graphdef, p, frozen, rngs_for_step(rngs, 5), batch, config, train=True)
    return gr1_losses(outputs, batch, config.fwd_pred_next_n)["total"]

  shard = lambda tree: jax.tree.map(lambda a: a.sharding, tree)
  fn = jax.jit(jax.value_and_grad(loss), in_shardings=(shard(layout.params),))
  with jax.set_mesh(layout.mesh):
    return jax.device_get(fn(params))


@functools.cache
def _reference(variant):
  config = tiny_config(variant)
  layout = _layout(config, sharding.make_mesh({"data": -1}, jax.devices()[:1]))
  params, frozen, rngs = ts.init_model_state(layout, 0)
  batch = synthetic_batch(0, batch_size=8, seq_len=10, image_size=40, hand_size=20,
                          finetune=variant == "tiny")
  host = jax.device_get((params, frozen, rngs))
  return config, host, batch, _loss_and_grads(layout, params, frozen, rngs, batch)


@pytest.mark.parametrize("variant, shape", CASES)
def test_mesh_matches_single_device(variant, shape):
  config, (params, frozen, rngs), batch, (ref_loss, ref_grads) = _reference(variant)
  layout = _layout(config, sharding.make_mesh(dict(zip(sharding.MESH_AXES, shape))))
  placed = (ts.place(params, layout.params), ts.place(frozen, layout.frozen), ts.place(rngs, layout.rngs))
  global_batch = {k: jax.device_put(v, sharding.batch_sharding(layout.mesh)) for k, v in batch.items()}
  loss, grads = _loss_and_grads(layout, *placed, global_batch)
  np.testing.assert_allclose(loss, ref_loss, rtol=2e-6)
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(ref_grads))
  for (path, g), r in zip(jax.tree_util.tree_flatten_with_path(grads)[0], jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6 * scale, err_msg=jax.tree_util.keystr(path))
