"""The pure train step: frozen encoders untouched, non-finite steps skipped (params unchanged)."""
import jax
import numpy as np
import pytest

from data_pipelines.synthetic import synthetic_batch
from experiments.configs import finetune_calvin
from gr1_jax import sharding
from gr1_jax.training import optimizer
from gr1_jax.training import train_state as ts
from gr1_jax.training.train_step import make_train_step
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def setup():
  config = tiny_config()
  tx, schedule = optimizer.make_optimizer(finetune_calvin.get_config("debug").optimizer, 10)
  layout = ts.make_layout(config, tx, sharding.make_mesh({"data": -1}, jax.devices()[:1]))
  params, frozen, rngs = ts.init_model_state(layout, 0)
  return layout, tx, make_train_step(layout, tx, schedule), params, frozen, rngs


def _batch(index, nonfinite=False):
  return synthetic_batch(index, batch_size=4, seq_len=10, image_size=40, hand_size=20,
                         nonfinite_from=index if nonfinite else -1)


def _equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_updates_trainable_only_and_skips_nonfinite(setup):
  layout, tx, step, params, frozen, rngs = setup
  frozen_before = jax.device_get(frozen)
  state = ts.new_train_state(layout, tx, params)

  state, metrics = step(state, frozen, rngs, _batch(0))
  assert np.isfinite(metrics["loss/total"]) and int(metrics["nonfinite"]) == 0
  state, _ = step(state, frozen, rngs, _batch(1))
  before = jax.device_get((state.params, state.opt_state))
  assert int(state.step) == 2

  state, metrics = step(state, frozen, rngs, _batch(2, nonfinite=True))
  assert not np.isfinite(metrics["loss/total"])
  assert (int(metrics["nonfinite"]), int(state.nonfinite_run), int(state.nonfinite_total)) == (1, 1, 1)
  assert int(state.step) == 3
  assert _equal(jax.device_get((state.params, state.opt_state)), before)   # nothing moved

  state, metrics = step(state, frozen, rngs, _batch(3))
  assert int(state.nonfinite_run) == 0 and int(state.nonfinite_total) == 1
  assert not _equal(jax.device_get(state.params), before[0])
  # The schedule follows applied updates: this 4th step is the 3rd applied one (schedule
  # index 2), not schedule(3) as it would be had the skipped step counted.
  schedule = optimizer.learning_rate_schedule(finetune_calvin.get_config("debug").optimizer, 10)
  assert float(metrics["learning_rate"]) == pytest.approx(float(schedule(2)))
  assert float(schedule(2)) != pytest.approx(float(schedule(3)))
  assert _equal(jax.device_get(frozen), frozen_before)
