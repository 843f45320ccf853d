"""MAE ViT-B/16 image encoder (frozen in GR-1), timm/DINO ViT semantics.

images (N, H, W, 3), ImageNet-normalised, channels-last -> patch embedding
(a 16x16 stride-16 conv, computed as patchify + matmul) -> [CLS; patches] +
pos_embed -> pre-LN blocks (exact GELU, eps 1e-6) -> final norm.
Returns (CLS (N, width), patch tokens (N, num_patches, width)), both after the
final norm, which is what GR-1 consumes.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gr1_jax.model_config import MAEConfig
from gr1_jax.modules import partitioning as part
from gr1_jax.modules.sincos import sincos_2d
from gr1_jax.modules.transformer_block import PreLNBlock


def patchify(images, patch_size: int):
  """(..., H, W, C) -> (..., H/p * W/p, p*p*C), patches row-major, values (row, col, channel)."""
  *lead, h, w, c = images.shape
  hp, wp = h // patch_size, w // patch_size
  x = images.reshape(*lead, hp, patch_size, wp, patch_size, c)
  x = jnp.moveaxis(x, -4, -3)  # (..., hp, wp, p, p, c)
  return x.reshape(*lead, hp * wp, patch_size * patch_size * c)


class MAEEncoder(nnx.Module):

  def __init__(self, config: MAEConfig, *, rngs: nnx.Rngs, dtype=None):
    self.config = config
    grid = config.image_size // config.patch_size
    # Patch conv as a matmul over (row, col, channel)-ordered patch vectors.
    self.patch_embed = part.linear(config.patch_size ** 2 * 3, config.width, (part.NONE, part.EMBED),
                                   rngs=rngs, dtype=dtype)
    self.cls_token = part.param(rngs, part.normal_002, (1, 1, config.width), (part.NONE, part.NONE, part.EMBED))
    # MAE checkpoints hold a fixed 2-D sin-cos table with a zero CLS row; start from it.
    table = np.concatenate([np.zeros((1, config.width)), sincos_2d(config.width, grid)], 0)
    self.pos_embed = nnx.Param(part.with_axes(lambda *_: jnp.asarray(table[None], jnp.float32),
                                              part.NONE, part.NONE, part.EMBED)(rngs.params(), None))
    self.blocks = nnx.List([
        PreLNBlock(config.width, config.heads, config.mlp_dim, activation="gelu",
                   ln_eps=config.ln_eps, rngs=rngs, dtype=dtype)
        for _ in range(config.depth)])
    self.norm = part.layer_norm(config.width, config.ln_eps, rngs=rngs, dtype=dtype)

  def __call__(self, images):
    n, h, w, _ = images.shape
    if (h, w) != (self.config.image_size,) * 2:
      raise ValueError(f"MAE input is {h}x{w}, expected {self.config.image_size}x{self.config.image_size} "
                       "(resize with gr1_jax.image_preprocessing first)")
    x = self.patch_embed(patchify(images, self.config.patch_size))
    cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (n, 1, x.shape[-1]))
    x = jnp.concatenate([cls, x], axis=1) + self.pos_embed[...].astype(x.dtype)
    for block in self.blocks:
      x = block(x)
    x = self.norm(x)
    return x[:, 0], x[:, 1:]
