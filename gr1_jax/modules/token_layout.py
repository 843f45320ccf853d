"""Which tokens make up one timestep, in which order (gr1.md §1.8).

One timestep of the official fine-tuning layout (43 tokens; n = 9 resampler
latents, K = 1 action query):

    obs tokens (see the past, get the timestep embedding)       query tokens (read-outs, never keys)
    +------+-------+-----------+-----+----------------+------+  +-------+-----------+----------------+
    | lang | state | patch x n | cls | hand_patch x n | hand |  | act xK | obs_q x n+1 | obs_hand_q x n+1 |
    +------+-------+-----------+-----+----------------+------+  +-------+-----------+----------------+
       0       1      2..10      11       12..20        21        22       23..32        33..42

The window is flattened timestep-major: all tokens of t=0, then t=1, ...
Config flags drop groups: the pretraining layout has no state and no act
(lang, patch, cls, obs_q: 21 tokens), the act-only evaluation layout has no
query groups after act (23 tokens), and use_hand_rgb=False drops the hand
groups. Dropping a query group never changes what other tokens compute,
because nobody attends to query tokens.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from gr1_jax.model_config import GR1Config


@dataclasses.dataclass(frozen=True)
class TokenGroup:
  name: str
  count: int
  is_query: bool


@dataclasses.dataclass(frozen=True)
class TokenLayout:
  groups: tuple[TokenGroup, ...]
  seq_len: int

  @classmethod
  def from_config(cls, config: GR1Config) -> "TokenLayout":
    n = config.resampler.num_latents
    groups = [TokenGroup("lang", 1, False)]
    if config.use_state:
      groups.append(TokenGroup("state", 1, False))
    groups += [TokenGroup("patch", n, False), TokenGroup("cls", 1, False)]
    if config.use_hand_rgb:
      groups += [TokenGroup("hand_patch", n, False), TokenGroup("hand_cls", 1, False)]
    if config.act_pred:
      groups.append(TokenGroup("act", config.action_chunk, True))
    if config.fwd_pred:
      groups.append(TokenGroup("obs_query", n + 1, True))
    if config.fwd_pred_hand:
      groups.append(TokenGroup("obs_hand_query", n + 1, True))
    return cls(tuple(groups), config.seq_len)

  @property
  def tokens_per_step(self) -> int:
    return sum(g.count for g in self.groups)

  @property
  def num_tokens(self) -> int:
    return self.tokens_per_step * self.seq_len

  def has(self, name: str) -> bool:
    return any(g.name == name for g in self.groups)

  def span(self, name: str) -> slice:
    """Position of group `name` inside one timestep."""
    start = 0
    for g in self.groups:
      if g.name == name:
        return slice(start, start + g.count)
      start += g.count
    raise KeyError(f"token group {name!r} is not in this layout ({[g.name for g in self.groups]})")

  def query_flags(self) -> np.ndarray:
    """(tokens_per_step,) bool: True where the token is a read-out query."""
    return np.concatenate([np.full(g.count, g.is_query) for g in self.groups])
