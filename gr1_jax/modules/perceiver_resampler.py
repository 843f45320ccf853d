"""Perceiver Resampler (flamingo-pytorch semantics, one media slot).

Squeezes the MAE patch tokens of one image (N, P, D) into `num_latents` tokens:

    x       = patches + media_pos_emb                  (one vector for every patch)
    latents = broadcast(latents)                        (N, num_latents, D)
    repeat depth times:
      latents += attn(q = LN_l(latents), kv = [LN_m(x); LN_l(latents)])
      latents += FF(latents)                            (LN -> Linear -> GELU -> Linear)
    return LN(latents)

Every linear is bias-free; keys/values come from the concatenation of media and
latents, so each latent also attends to the latents. GR-1 shares one resampler
between the static and the wrist camera.
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from gr1_jax.model_config import ResamplerConfig
from gr1_jax.modules import partitioning as part
from gr1_jax.modules.attention import dot_product_attention
from gr1_jax.modules.transformer_block import exact_gelu


class PerceiverAttention(nnx.Module):

  def __init__(self, dim: int, config: ResamplerConfig, *, rngs: nnx.Rngs, dtype=None):
    inner = config.heads * config.dim_head
    self.heads = config.heads
    self.norm_media = part.layer_norm(dim, config.ln_eps, rngs=rngs, dtype=dtype)
    self.norm_latents = part.layer_norm(dim, config.ln_eps, rngs=rngs, dtype=dtype)
    self.to_q = part.linear(dim, inner, (part.EMBED, part.HEADS), rngs=rngs, use_bias=False, dtype=dtype)
    self.to_kv = part.linear(dim, 2 * inner, (part.EMBED, part.HEADS), rngs=rngs, use_bias=False, dtype=dtype)
    self.to_out = part.linear(inner, dim, (part.HEADS, part.EMBED), rngs=rngs, use_bias=False, dtype=dtype)

  def __call__(self, media, latents):
    media = self.norm_media(media)
    latents = self.norm_latents(latents)
    n, q_len, _ = latents.shape
    context = jnp.concatenate([media, latents], axis=1)
    q = self.to_q(latents).reshape(n, q_len, self.heads, -1)
    kv = self.to_kv(context).reshape(n, context.shape[1], 2, self.heads, -1)
    out = dot_product_attention(q, kv[:, :, 0], kv[:, :, 1])
    return self.to_out(out.reshape(n, q_len, -1))


class FeedForward(nnx.Module):

  def __init__(self, dim: int, config: ResamplerConfig, *, rngs: nnx.Rngs, dtype=None):
    self.norm = part.layer_norm(dim, config.ln_eps, rngs=rngs, dtype=dtype)
    self.fc_in = part.linear(dim, dim * config.ff_mult, (part.EMBED, part.MLP), rngs=rngs,
                             use_bias=False, dtype=dtype)
    self.fc_out = part.linear(dim * config.ff_mult, dim, (part.MLP, part.EMBED), rngs=rngs,
                              use_bias=False, dtype=dtype)

  def __call__(self, x):
    return self.fc_out(exact_gelu(self.fc_in(self.norm(x))))


class ResamplerLayer(nnx.Module):

  def __init__(self, dim: int, config: ResamplerConfig, *, rngs: nnx.Rngs, dtype=None):
    self.attn = PerceiverAttention(dim, config, rngs=rngs, dtype=dtype)
    self.ff = FeedForward(dim, config, rngs=rngs, dtype=dtype)

  def __call__(self, media, latents):
    latents = latents + self.attn(media, latents)
    return latents + self.ff(latents)


class PerceiverResampler(nnx.Module):

  def __init__(self, dim: int, config: ResamplerConfig, *, rngs: nnx.Rngs, dtype=None):
    self.latents = part.param(rngs, nnx.initializers.normal(1.0), (config.num_latents, dim),
                              (part.NONE, part.EMBED))
    self.media_pos_emb = part.param(rngs, nnx.initializers.normal(1.0), (1, dim), (part.NONE, part.EMBED))
    self.layers = nnx.List([ResamplerLayer(dim, config, rngs=rngs, dtype=dtype)
                            for _ in range(config.depth)])
    self.norm = part.layer_norm(dim, config.ln_eps, rngs=rngs, dtype=dtype)

  def __call__(self, patches):
    """patches (N, P, D) -> latents (N, num_latents, D)."""
    media = patches + self.media_pos_emb[...].astype(patches.dtype)
    latents = jnp.broadcast_to(self.latents[...].astype(patches.dtype),
                               (patches.shape[0],) + self.latents.shape)
    for layer in self.layers:
      latents = layer(media, latents)
    return self.norm(latents)
