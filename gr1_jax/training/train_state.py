"""The training state as plain pytrees, with its shapes and shardings known before any allocation.

The model is split once into
  graphdef  static structure (closed over by the jitted steps)
  params    trainable parameters (pure nested dict)        -> gradients + optimizer state
  frozen    CLIP text + MAE parameters (pure nested dict)  -> no gradient, no optimizer state
  rngs      the dropout streams (RngKey / RngCount)        -> re-keyed from the step number
            inside the step, so they are never checkpointed and a resumed run draws the
            same dropout masks as an uninterrupted one
`TrainState` holds what changes every step. Everything is created directly in its
sharded layout (jit with out_shardings), never materialised on one device first.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gr1_jax import sharding
from gr1_jax.model_config import GR1Config
from gr1_jax.modules.gr1 import FROZEN, GR1, TRAINABLE


@flax.struct.dataclass
class TrainState:
  step: jax.Array              # int32: steps taken, skipped (non-finite) ones included
  params: Any                  # trainable parameters, pure nested dict
  opt_state: optax.OptState
  nonfinite_run: jax.Array     # int32: consecutive skipped steps up to now
  nonfinite_total: jax.Array   # int32: all skipped steps


def split_model(model: GR1):
  """GR1 module -> (graphdef, params, frozen, rngs) with pure-dict states."""
  graphdef, params, frozen, rngs = nnx.split(model, TRAINABLE, FROZEN, ...)
  return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(frozen), nnx.to_pure_dict(rngs)


def merge_params(params: dict, frozen: dict) -> dict:
  """Trainable + frozen pure dicts -> the full parameter dict (the checkpoint's `params` item)."""
  out = dict(params)
  for key, value in frozen.items():
    if key in out:
      if not (isinstance(out[key], dict) and isinstance(value, dict)):
        raise ValueError(f"parameter {key!r} is both trainable and frozen")
      out[key] = merge_params(out[key], value)
    else:
      out[key] = value
  return out


def _abstract(tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


def _opt_state_shardings(abstract_opt, param_shardings: dict, mesh) -> Any:
  """Optimizer moments take their parameter's sharding, everything else (counts) is replicated.

  A moment is recognised by the trailing dict-key path it shares with a parameter
  (optax nests the params-shaped trees inside named tuples).
  """
  by_path = {}
  for path, s in jax.tree_util.tree_flatten_with_path(param_shardings)[0]:
    by_path[tuple(k.key for k in path)] = s
  replicated = sharding.replicated(mesh)

  def leaf(path, value):
    keys = []
    for k in reversed(path):
      if not isinstance(k, jax.tree_util.DictKey):
        break
      keys.append(k.key)
    s = by_path.get(tuple(reversed(keys)))
    return s if s is not None and len(s.spec) <= value.ndim else replicated

  return jax.tree_util.tree_map_with_path(leaf, abstract_opt)


@dataclasses.dataclass(frozen=True)
class StateLayout:
  """Static facts about a run's state: graphdef, abstract trees (with shardings), shardings."""
  model_config: GR1Config
  mesh: jax.sharding.Mesh
  graphdef: Any
  params: Any          # ShapeDtypeStruct trees carrying their NamedSharding
  frozen: Any
  rngs: Any
  opt_state: Any
  train_state: TrainState

  @property
  def train_state_shardings(self) -> TrainState:
    return jax.tree.map(lambda a: a.sharding, self.train_state)

  @property
  def frozen_shardings(self):
    return jax.tree.map(lambda a: a.sharding, self.frozen)

  @property
  def rngs_shardings(self):
    return jax.tree.map(lambda a: a.sharding, self.rngs)


def make_layout(model_config: GR1Config, tx: optax.GradientTransformation,
                mesh: jax.sharding.Mesh) -> StateLayout:
  abstract_model = nnx.eval_shape(lambda: GR1(model_config, rngs=nnx.Rngs(0)))
  graphdef, params_state, frozen_state, rngs_state = nnx.split(abstract_model, TRAINABLE, FROZEN, ...)
  replicated = sharding.replicated(mesh)
  param_shardings = sharding.state_shardings(params_state, mesh)
  params = _abstract(nnx.to_pure_dict(params_state), param_shardings)
  frozen = _abstract(nnx.to_pure_dict(frozen_state), sharding.state_shardings(frozen_state, mesh))
  rngs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                      nnx.to_pure_dict(rngs_state))
  abstract_opt = jax.eval_shape(tx.init, params)
  opt_state = _abstract(abstract_opt, _opt_state_shardings(abstract_opt, param_shardings, mesh))
  scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
  train_state = TrainState(step=scalar, params=params, opt_state=opt_state,
                           nonfinite_run=scalar, nonfinite_total=scalar)
  return StateLayout(model_config, mesh, graphdef, params, frozen, rngs, opt_state, train_state)


def _shardings(tree):
  return jax.tree.map(lambda a: a.sharding, tree)


def init_model_state(layout: StateLayout, seed: int):
  """(params, frozen, rngs) of a freshly initialised model, created sharded."""
  def init():
    _, params, frozen, rngs = split_model(GR1(layout.model_config, rngs=nnx.Rngs(seed)))
    return params, frozen, rngs
  shardings = (_shardings(layout.params), _shardings(layout.frozen), _shardings(layout.rngs))
  return jax.jit(init, out_shardings=shardings)()


def init_rngs(layout: StateLayout, seed: int):
  """Only the dropout streams of a model initialised from `seed` (XLA drops the unused params)."""
  return jax.jit(lambda: split_model(GR1(layout.model_config, rngs=nnx.Rngs(seed)))[3],
                 out_shardings=_shardings(layout.rngs))()


def new_train_state(layout: StateLayout, tx: optax.GradientTransformation, params) -> TrainState:
  """Step 0 state around `params` (already placed with layout's shardings)."""
  def init(p):
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=p, opt_state=tx.init(p), nonfinite_run=zero, nonfinite_total=zero)
  return jax.jit(init, in_shardings=(_shardings(layout.params),),
                 out_shardings=layout.train_state_shardings)(params)


def place(tree, abstract):
  """Puts host or differently-sharded arrays onto the layout's shardings."""
  return jax.tree.map(lambda x, a: jax.device_put(x, a.sharding), tree, abstract)


def count_params(tree) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(tree))
