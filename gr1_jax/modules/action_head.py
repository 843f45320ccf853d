"""GR-1's action head: an AFFINE map of the [ACT] feature.

The official head stacks Linear(D, D/2) and Linear(D/2, D/2) with no
activation between or after them, then reads the arm action (6-D, unbounded)
and one gripper logit with two separate linears. Adding a nonlinearity would
break weight compatibility, so there is none here either.
"""
from __future__ import annotations

from flax import nnx

from gr1_jax.modules import partitioning as part


class ActionHead(nnx.Module):

  def __init__(self, hidden_size: int, arm_dim: int, *, rngs: nnx.Rngs, dtype=None):
    half = hidden_size // 2
    self.pred_act_mlps = nnx.List([
        part.linear(hidden_size, half, (part.EMBED, part.NONE), rngs=rngs, dtype=dtype),
        part.linear(half, half, (part.NONE, part.NONE), rngs=rngs, dtype=dtype)])
    self.pred_arm_act = part.linear(half, arm_dim, (part.NONE, part.NONE), rngs=rngs, dtype=dtype)
    self.pred_gripper_act = part.linear(half, 1, (part.NONE, part.NONE), rngs=rngs, dtype=dtype)

  def __call__(self, x):
    """x (..., D) -> arm (..., arm_dim), gripper logit (...,)."""
    for layer in self.pred_act_mlps:
      x = layer(x)
    return self.pred_arm_act(x), self.pred_gripper_act(x)[..., 0]
