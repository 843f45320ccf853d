"""GR-1's attention mask as a pure function of (token layout, per-step validity).

Rule (gr1.md §2): a token may attend to key j iff
  * j is not in its future in the flattened, timestep-major sequence (causal),
  * j belongs to a valid (non-padded) timestep, and
  * j is not a query token ([ACT], [OBS], [OBS_HAND]) - not even itself.
The stage enters through the layout: pretraining layouts carry only [OBS]
queries, fine-tuning layouts [ACT] and [OBS], so "nobody attends to the
queries" is the pretraining rule in stage 1 and the fine-tuning rule in stage 2.

Drawn for seq_len = 2 with 1 resampler latent and every group on (11 tokens a
step: lang l, state s, patch p, cls c, hand patch q, hand cls h, act A, obs
queries O O, hand queries H H), both steps valid. Rows attend to columns;
'#' = allowed. tests/test_attention_mask.py parses this drawing and asserts the
function returns exactly it.

            t=0                    t=1
            l s p c q h A O O H H  l s p c q h A O O H H
    t=0  l  # . . . . . . . . . .  . . . . . . . . . . .
         s  # # . . . . . . . . .  . . . . . . . . . . .
         p  # # # . . . . . . . .  . . . . . . . . . . .
         c  # # # # . . . . . . .  . . . . . . . . . . .
         q  # # # # # . . . . . .  . . . . . . . . . . .
         h  # # # # # # . . . . .  . . . . . . . . . . .
         A  # # # # # # . . . . .  . . . . . . . . . . .
         O  # # # # # # . . . . .  . . . . . . . . . . .
         O  # # # # # # . . . . .  . . . . . . . . . . .
         H  # # # # # # . . . . .  . . . . . . . . . . .
         H  # # # # # # . . . . .  . . . . . . . . . . .
    t=1  l  # # # # # # . . . . .  # . . . . . . . . . .
         s  # # # # # # . . . . .  # # . . . . . . . . .
         p  # # # # # # . . . . .  # # # . . . . . . . .
         c  # # # # # # . . . . .  # # # # . . . . . . .
         q  # # # # # # . . . . .  # # # # # . . . . . .
         h  # # # # # # . . . . .  # # # # # # . . . . .
         A  # # # # # # . . . . .  # # # # # # . . . . .
         O  # # # # # # . . . . .  # # # # # # . . . . .
         O  # # # # # # . . . . .  # # # # # # . . . . .
         H  # # # # # # . . . . .  # # # # # # . . . . .
         H  # # # # # # . . . . .  # # # # # # . . . . .

If step 1 were padding, its six columns would be all '.', so its rows would see
only step 0. A sample whose step 0 is padding has rows with no visible key; the
attention replaces masked logits by a finite value, so such rows give a uniform
softmax, never NaN (their outputs are discarded by the losses).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from gr1_jax.modules.token_layout import TokenLayout


def attention_mask(layout: TokenLayout, step_valid):
  """step_valid: (B, L) bool or {0,1} -> (B, 1, T, T) bool, T = L * tokens_per_step."""
  batch, steps = step_valid.shape
  if steps != layout.seq_len:
    raise ValueError(f"step_valid has {steps} steps, the layout expects seq_len={layout.seq_len}")
  t = layout.num_tokens
  is_query = jnp.asarray(np.tile(layout.query_flags(), layout.seq_len))
  key_step_valid = jnp.repeat(jnp.asarray(step_valid, bool), layout.tokens_per_step, axis=1)
  key_visible = key_step_valid & ~is_query[None, :]                     # (B, T)
  causal = jnp.asarray(np.tril(np.ones((t, t), bool)))                  # (T, T)
  return causal[None, None] & key_visible[:, None, None, :]
