"""Shared pieces of the conversion and parity tests: the torch reference sized like a GR1Config,
random official-layout files, matching inputs for both frameworks."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gr1_jax.model_config import GR1Config
from tests.torch_reference import GR1Reference, random_init_
from tests.torch_reference.config_bridge import ref_config


def reference_model(c: GR1Config, seed: int = 0, gpt2_buffers: bool = False) -> GR1Reference:
  return random_init_(GR1Reference(ref_config(c), gpt2_buffers=gpt2_buffers), seed).eval()


def numpy_state_dict(model: torch.nn.Module) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def torch_inputs(c: GR1Config, batch: int = 2, seed: int = 0, padded_tail: int = 3):
  """Reference-layout inputs (images (B, L, 3, H, W)); sample 1 has `padded_tail` padded steps."""
  g = torch.Generator().manual_seed(seed)
  L, S = c.seq_len, c.mae.image_size
  rgb = torch.randn(batch, L, 3, S, S, generator=g)
  hand = torch.randn(batch, L, 3, S, S, generator=g)
  arm = torch.randn(batch, L, c.arm_dim, generator=g)
  grip = F.one_hot(torch.randint(0, 2, (batch, L), generator=g), 2).float()
  tokens = torch.randint(1, c.clip.vocab_size - 1, (batch, c.clip.context_length), generator=g)
  for b in range(batch):                       # EOT (the largest id) then zero padding, like clip.tokenize
    end = 3 + 2 * b
    tokens[b, end] = c.clip.vocab_size - 1
    tokens[b, end + 1:] = 0
  mask = torch.ones(batch, L, dtype=torch.long)
  if batch > 1 and padded_tail:
    mask[1, L - padded_tail:] = 0
  return dict(rgb=rgb, hand_rgb=hand, arm=arm, gripper=grip, tokens=tokens, mask=mask)


def reference_forward(model: GR1Reference, x: dict) -> dict[str, np.ndarray]:
  with torch.no_grad():
    out = model(x["rgb"], x["hand_rgb"], {"arm": x["arm"], "gripper": x["gripper"]}, x["tokens"], x["mask"])
  return {k: v.numpy() for k, v in out.items() if v is not None}


def flax_forward(model, x: dict) -> dict[str, np.ndarray]:
  """The Flax model on the same inputs (channels-last images), outputs in the reference's shapes."""
  import jax.numpy as jnp
  from flax import nnx

  def last(t):
    return jnp.asarray(t.permute(0, 1, 3, 4, 2).numpy())

  fwd = nnx.jit(lambda m, *a, **k: m(*a, **k))
  out = fwd(model, last(x["rgb"]), jnp.asarray(x["tokens"].numpy()), jnp.asarray(x["mask"].numpy()),
            hand_rgb=last(x["hand_rgb"]), arm_state=jnp.asarray(x["arm"].numpy()),
            gripper_state=jnp.asarray(x["gripper"].numpy()))
  out = {k: np.asarray(v) for k, v in out.items()}
  if "arm_action_preds" in out:                 # (B, L, K=1, 6) -> (B, L, 6); gripper (B, L, 1) -> (B, L, 1)
    out["arm_action_preds"] = out["arm_action_preds"][:, :, 0]
    out["gripper_action_preds"] = out["gripper_action_preds"][:, :, :1]
  return out
