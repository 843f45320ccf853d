"""Logical axis names carried by every parameter, and the initialisers that attach them.

Modules only *name* their axes; `gr1_jax.sharding` maps names to mesh axes in
one rules table and the train step places the state explicitly. Eager sharding
(flax's default) is switched off so models build identically with or without a
mesh: placement is the train step's decision, not the constructor's.
"""
from __future__ import annotations

import flax
from flax import nnx

flax.config.update("flax_always_shard_variable", False)

EMBED = "embed"      # model width (hidden / encoder width)
MLP = "mlp"          # MLP hidden width
HEADS = "heads"      # fused attention projections (heads x head_dim)
VOCAB = "vocab"      # token tables
NONE = None          # never sharded (small or odd-sized axes)

normal_002 = nnx.initializers.normal(0.02)
zeros = nnx.initializers.zeros_init()
ones = nnx.initializers.ones_init()
lecun = nnx.initializers.lecun_normal()


def with_axes(init, *axes):
  return nnx.with_partitioning(init, axes)


def linear(in_features: int, out_features: int, axes: tuple, *, rngs: nnx.Rngs,
           use_bias: bool = True, kernel_init=lecun, dtype=None) -> nnx.Linear:
  """nnx.Linear whose kernel/bias carry logical axis names `axes` = (in, out)."""
  return nnx.Linear(
      in_features, out_features, use_bias=use_bias, dtype=dtype,
      kernel_init=with_axes(kernel_init, *axes),
      bias_init=with_axes(zeros, axes[1]), rngs=rngs)


def layer_norm(features: int, eps: float, *, rngs: nnx.Rngs, dtype=None) -> nnx.LayerNorm:
  return nnx.LayerNorm(
      features, epsilon=eps, dtype=dtype,
      scale_init=with_axes(ones, NONE), bias_init=with_axes(zeros, NONE), rngs=rngs)


def param(rngs: nnx.Rngs, init, shape: tuple, axes: tuple) -> nnx.Param:
  return nnx.Param(with_axes(init, *axes)(rngs.params(), shape))
