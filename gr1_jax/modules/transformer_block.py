"""The pre-LayerNorm transformer block shared by CLIP, MAE, the GPT-2 trunk and the decoder.

    x = x + drop(attn(ln_1(x)))
    x = x + drop(fc_out(act(fc_in(ln_2(x)))))

The four stacks differ only in activation, LayerNorm epsilon and dropout
(gr1.md §6.4), which are constructor arguments here.
"""
from __future__ import annotations

from typing import Callable

import jax
from flax import nnx

from gr1_jax.modules import partitioning as part
from gr1_jax.modules.attention import SelfAttention


def quick_gelu(x):
  """CLIP's activation: x * sigmoid(1.702 x)."""
  return x * jax.nn.sigmoid(1.702 * x)


def exact_gelu(x):
  """erf GELU (torch nn.GELU default); flax's default is the tanh approximation."""
  return jax.nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Callable] = {"relu": jax.nn.relu, "gelu": exact_gelu, "quick_gelu": quick_gelu}


class MLP(nnx.Module):

  def __init__(self, width: int, hidden: int, activation: str, *, rngs: nnx.Rngs,
               kernel_init=part.lecun, dtype=None):
    self.activation = activation
    self.fc_in = part.linear(width, hidden, (part.EMBED, part.MLP), rngs=rngs,
                             kernel_init=kernel_init, dtype=dtype)
    self.fc_out = part.linear(hidden, width, (part.MLP, part.EMBED), rngs=rngs,
                              kernel_init=kernel_init, dtype=dtype)

  def __call__(self, x):
    return self.fc_out(ACTIVATIONS[self.activation](self.fc_in(x)))


class PreLNBlock(nnx.Module):

  def __init__(self, width: int, num_heads: int, mlp_dim: int, *, activation: str, ln_eps: float,
               rngs: nnx.Rngs, dropout: float = 0.0, kernel_init=part.lecun, dtype=None):
    self.ln_1 = part.layer_norm(width, ln_eps, rngs=rngs, dtype=dtype)
    self.attn = SelfAttention(width, num_heads, rngs=rngs, dropout=dropout,
                              kernel_init=kernel_init, dtype=dtype)
    self.ln_2 = part.layer_norm(width, ln_eps, rngs=rngs, dtype=dtype)
    self.mlp = MLP(width, mlp_dim, activation, rngs=rngs, kernel_init=kernel_init, dtype=dtype)
    self.resid_dropout = nnx.Dropout(dropout, rngs=rngs) if dropout else None

  def _drop(self, x):
    return self.resid_dropout(x) if self.resid_dropout is not None else x

  def __call__(self, x, mask=None):
    x = x + self._drop(self.attn(self.ln_1(x), mask))
    return x + self._drop(self.mlp(self.ln_2(x)))
