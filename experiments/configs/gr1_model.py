"""GR-1 model configs (the `model` field of every experiment config).

Variants: official (default; the released fine-tuning layout, 45,988,039
trainable parameters), act_only (the official evaluation layout), pretrain
(stage 1: no state, no [ACT], static camera only), mini (CPU scale, for closed-loop
CALVIN runs), and tiny (a few thousand
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
  elif variant == "mini":
    apply_mini(config)
  elif variant.startswith("tiny"):
    apply_tiny(config)
    if variant == "tiny_pretrain":
      config.use_state = config.act_pred = config.use_hand_rgb = config.fwd_pred_hand = False
    elif variant != "tiny":
      raise ValueError(f"unknown model variant {variant!r}")
  else:
    raise ValueError(f"unknown model variant {variant!r}; choose official, act_only, pretrain, mini, tiny, tiny_pretrain")
  return config


def apply_tiny(config: ml_collections.ConfigDict) -> None:
  """Shrinks every width/depth while keeping all groups and the 10-step window."""
  config.hidden_size, config.num_layers, config.num_heads, config.mlp_dim = 32, 2, 4, 64
  config.clip.update(width=32, layers=1, heads=4, embed_dim=16)
  config.mae.update(image_size=32, patch_size=16, width=32, depth=1, heads=4, mlp_dim=64)
  config.resampler.update(depth=1, dim_head=8, heads=2, num_latents=3)
  config.decoder.update(depth=1, heads=4)


def apply_mini(model: ml_collections.ConfigDict) -> None:
  """GR-1 at CPU scale for closed-loop CALVIN runs (docs/calvin_closed_loop.md).

  Every token group, query token and head of the official layout and its 10-step window,
  at a quarter of the widths: 64-px frames (CALVIN's 200-px static and 84-px wrist views
  are resized on device, as the official model resizes to 224), 4 resampler latents per
  camera instead of 9. A train step at batch 16 is about 25 GFLOP (the official one at
  batch 4 is 3.4 TFLOP). Both frozen encoders are small and randomly initialised because
  CLIP's and MAE's released weights cannot be downloaded here: the MAE is pre-trained on
  the run's own frames (experiments/pretrain_mae.py, loaded through config.mae_from); the
  text encoder stays random, so instructions are told apart by their tokens, not by their
  meaning (paraphrases are not expected to carry over).
  """
  model.hidden_size, model.num_layers, model.num_heads, model.mlp_dim = 96, 3, 4, 384
  model.clip.update(width=64, layers=1, heads=4, embed_dim=64)
  model.mae.update(image_size=64, patch_size=16, width=96, depth=2, heads=4, mlp_dim=384)
  model.resampler.update(depth=1, dim_head=24, heads=4, num_latents=4)
  model.decoder.update(depth=1, heads=4)
  model.dtype = "float32"
