"""GR-1 model configs (the `model` field of every experiment config).

Variants: official (default; the released fine-tuning layout, 45,988,039
trainable parameters), act_only (the official evaluation layout), pretrain
(stage 1: no state, no [ACT], static camera only), and tiny (a few thousand
parameters, for tests and smoke runs).

    python -m experiments.convert from-official --config experiments/configs/gr1_model.py:official ...
"""
from __future__ import annotations

import ml_collections

from gr1_jax.model_config import GR1Config


def official() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(GR1Config().to_dict())


def get_config(variant: str = "official") -> ml_collections.ConfigDict:
  config = official()
  if variant == "official":
    pass
  elif variant == "act_only":
    config.fwd_pred = False
    config.fwd_pred_hand = False
  elif variant == "pretrain":
    config.use_state = False
    config.act_pred = False
    config.use_hand_rgb = False
    config.fwd_pred_hand = False
  elif variant.startswith("tiny"):
    apply_tiny(config)
    if variant == "tiny_pretrain":
      config.use_state = config.act_pred = config.use_hand_rgb = config.fwd_pred_hand = False
    elif variant != "tiny":
      raise ValueError(f"unknown model variant {variant!r}")
  else:
    raise ValueError(f"unknown model variant {variant!r}; choose official, act_only, pretrain, tiny, tiny_pretrain")
  return config


def apply_tiny(config: ml_collections.ConfigDict) -> None:
  """Shrinks every width/depth while keeping all groups and the 10-step window."""
  config.hidden_size, config.num_layers, config.num_heads, config.mlp_dim = 32, 2, 4, 64
  config.clip.update(width=32, layers=1, heads=4, embed_dim=16)
  config.mae.update(image_size=32, patch_size=16, width=32, depth=1, heads=4, mlp_dim=64)
  config.resampler.update(depth=1, dim_head=8, heads=2, num_latents=3)
  config.decoder.update(depth=1, heads=4)
