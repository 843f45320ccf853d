"""MAE-style future-frame decoder, shared by the static and the wrist camera.

For each (sample, step): the n+1 [OBS] query outputs -> decoder_embed, followed
by num_patches copies of mask_token + the fixed sin-cos table (the query tokens
get no position) -> depth full-attention ViT blocks (exact GELU, eps 1e-5) ->
decoder_norm -> decoder_pred to p*p*3 values -> keep the last num_patches rows.
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from gr1_jax.model_config import GR1Config
from gr1_jax.modules import partitioning as part
from gr1_jax.modules.sincos import sincos_2d
from gr1_jax.modules.transformer_block import PreLNBlock


class VideoDecoder(nnx.Module):

  def __init__(self, config: GR1Config, *, rngs: nnx.Rngs, dtype=None):
    d = config.hidden_size
    self.num_patches = config.num_patches
    self.grid = config.mae.image_size // config.mae.patch_size
    self.decoder_embed = part.linear(d, d, (part.EMBED, part.NONE), rngs=rngs, dtype=dtype)
    self.mask_token = part.param(rngs, part.normal_002, (d,), (part.NONE,))
    self.decoder_blocks = nnx.List([
        PreLNBlock(d, config.decoder.heads, d * config.decoder.mlp_ratio, activation="gelu",
                   ln_eps=config.decoder.ln_eps, rngs=rngs, dtype=dtype)
        for _ in range(config.decoder.depth)])
    self.decoder_norm = part.layer_norm(d, config.decoder.ln_eps, rngs=rngs, dtype=dtype)
    self.decoder_pred = part.linear(d, config.patch_dim, (part.NONE, part.NONE), rngs=rngs, dtype=dtype)

  def __call__(self, queries):
    """queries (B, L, Q, D) -> predicted patches (B, L, num_patches, p*p*3)."""
    b, l, q, d = queries.shape
    x = self.decoder_embed(queries).reshape(b * l, q, d)
    pos = jnp.asarray(sincos_2d(d, self.grid), x.dtype)
    masks = jnp.broadcast_to(self.mask_token[...].astype(x.dtype) + pos, (b * l, self.num_patches, d))
    x = jnp.concatenate([x, masks], axis=1)
    for block in self.decoder_blocks:
      x = block(x)
    x = self.decoder_pred(self.decoder_norm(x))[:, q:]
    return x.reshape(b, l, self.num_patches, x.shape[-1])
