"""CLIP text tower with OpenAI `encode_text` semantics (frozen in GR-1).

tokens (B, 77) -> token + positional embedding -> pre-LN blocks with a causal
mask and QuickGELU -> ln_final -> feature at the EOT position (the largest id
in each row, as OpenAI pools) -> @ text_projection -> (B, embed_dim).
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from gr1_jax.model_config import CLIPTextConfig
from gr1_jax.modules import partitioning as part
from gr1_jax.modules.transformer_block import PreLNBlock


class CLIPTextEncoder(nnx.Module):

  def __init__(self, config: CLIPTextConfig, *, rngs: nnx.Rngs, dtype=None):
    self.config = config
    self.token_embedding = nnx.Embed(
        config.vocab_size, config.width, dtype=dtype,
        embedding_init=part.with_axes(part.normal_002, part.VOCAB, part.EMBED), rngs=rngs)
    self.positional_embedding = part.param(
        rngs, nnx.initializers.normal(0.01), (config.context_length, config.width),
        (part.NONE, part.EMBED))
    self.blocks = nnx.List([
        PreLNBlock(config.width, config.heads, 4 * config.width, activation="quick_gelu",
                   ln_eps=config.ln_eps, rngs=rngs, dtype=dtype)
        for _ in range(config.layers)])
    self.ln_final = part.layer_norm(config.width, config.ln_eps, rngs=rngs, dtype=dtype)
    self.text_projection = part.param(
        rngs, nnx.initializers.normal(config.width ** -0.5), (config.width, config.embed_dim),
        (part.EMBED, part.NONE))

  def __call__(self, tokens):
    if tokens.shape[-1] != self.config.context_length:
      raise ValueError(f"text tokens have length {tokens.shape[-1]}, "
                       f"expected context_length={self.config.context_length}")
    x = self.token_embedding(tokens) + self.positional_embedding[...].astype(
        self.token_embedding.embedding.dtype)
    length = tokens.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
    for block in self.blocks:
      x = block(x, causal)
    x = self.ln_final(x)
    eot = jnp.argmax(tokens, axis=-1)
    pooled = jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]
    return pooled @ self.text_projection[...].astype(pooled.dtype)
