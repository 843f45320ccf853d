"""The GPT-2 trunk as GR-1 uses it: embeddings in, no position table.

inputs_embeds -> embedding dropout -> num_layers pre-LN blocks (ReLU MLP,
LayerNorm eps 1e-5, attention/residual dropout) -> ln_f. GR-1 removed GPT-2's
learned position table; order comes only from the causal mask and the
per-timestep embedding added before the trunk.
"""
from __future__ import annotations

from flax import nnx

from gr1_jax.model_config import GR1Config
from gr1_jax.modules import partitioning as part
from gr1_jax.modules.transformer_block import PreLNBlock


class GPT2Trunk(nnx.Module):

  def __init__(self, config: GR1Config, *, rngs: nnx.Rngs, dtype=None):
    # GPT-2's 1-row token table: never used (inputs arrive as embeddings) but part of the
    # official state_dict and of its 45,988,039 trainable parameters, so it is kept for
    # exact weight round trips and strict loading on the PyTorch side.
    self.wte = part.param(rngs, part.normal_002, (1, config.hidden_size), (part.NONE, part.EMBED))
    self.embd_dropout = nnx.Dropout(config.dropout, rngs=rngs)
    self.h = nnx.List([
        PreLNBlock(config.hidden_size, config.num_heads, config.mlp_dim, activation="relu",
                   ln_eps=config.ln_eps, rngs=rngs, dropout=config.dropout,
                   kernel_init=part.normal_002, dtype=dtype)
        for _ in range(config.num_layers)])
    self.ln_f = part.layer_norm(config.hidden_size, config.ln_eps, rngs=rngs, dtype=dtype)

  def __call__(self, x, mask):
    """x (B, T, D), mask (B, 1, T, T) bool -> (B, T, D)."""
    x = self.embd_dropout(x)
    for block in self.h:
      x = block(x, mask)
    return self.ln_f(x)
