"""Multi-head self-attention with one fused q|k|v projection.

Every attention in GR-1 (CLIP text, MAE, the GPT-2 trunk, the video decoder)
stores q, k and v as one [in, 3*width] projection whose output splits into
q | k | v, each head-major; one module therefore serves all four and keeps
weight conversion a plain copy.

Masks are boolean (True = may attend). Masked logits are *replaced* by a large
finite negative number, so a row with no visible key gives a uniform softmax
instead of NaN.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gr1_jax.modules import partitioning as part

MASKED_LOGIT = -1e9


def dot_product_attention(q, k, v, mask=None, dropout: nnx.Dropout | None = None):
  """q, k, v: (B, T, H, Dh); mask broadcastable to (B, H, Tq, Tk).

  The heads move in front of the tokens before the two batched matmuls (as torch's
  reference does with its permute): on XLA:CPU the (B, H, T, Dh) operands take about
  half the time of contracting the token-major ones directly (benchmarks/
  train_step_vs_torch.py, docs/train_step_profile.md). Same sums, same order.
  """
  heads_first = lambda x: jnp.swapaxes(x, 1, 2)                # (B, T, H, Dh) <-> (B, H, T, Dh)
  q, k, v = heads_first(q), heads_first(k), heads_first(v)
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32) * scale
  if mask is not None:
    logits = jnp.where(mask, logits, MASKED_LOGIT)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  if dropout is not None:
    probs = dropout(probs)
  return heads_first(jnp.einsum("bhqk,bhkd->bhqd", probs, v))


class SelfAttention(nnx.Module):

  def __init__(self, width: int, num_heads: int, *, rngs: nnx.Rngs, dropout: float = 0.0,
               kernel_init=part.lecun, dtype=None):
    self.num_heads = num_heads
    self.qkv = part.linear(width, 3 * width, (part.EMBED, part.HEADS), rngs=rngs,
                           kernel_init=kernel_init, dtype=dtype)
    self.out = part.linear(width, width, (part.HEADS, part.EMBED), rngs=rngs,
                           kernel_init=kernel_init, dtype=dtype)
    self.attn_dropout = nnx.Dropout(dropout, rngs=rngs) if dropout else None

  def __call__(self, x, mask=None):
    b, t, width = x.shape
    qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, width // self.num_heads)
    y = dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask, self.attn_dropout)
    return self.out(y.reshape(b, t, width))
