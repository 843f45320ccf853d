"""A batch in the data_pipelines.batch_spec contract -> the arguments of GR1.__call__.

Images arrive as uint8 at native camera resolution; resizing to the model's
image size (torch-exact bicubic) and ImageNet normalisation happen here, on
device, inside whatever jitted function calls this (train/eval step, offline
evaluation, visualisation).
"""
from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp

from data_pipelines import batch_spec as bs
from gr1_jax.image_preprocessing import preprocess_uint8
from gr1_jax.model_config import GR1Config


def required_keys(config: GR1Config) -> tuple[str, ...]:
  return bs.FINETUNE_KEYS if (config.use_state or config.use_hand_rgb or config.act_pred) else bs.PRETRAIN_KEYS


def model_inputs(batch: Mapping, config: GR1Config) -> dict:
  """Keyword arguments of GR1.__call__ for a batch_spec batch."""
  size, dtype = config.mae.image_size, jnp.dtype(config.dtype)
  inputs = {"rgb": preprocess_uint8(batch[bs.RGB_STATIC], size, dtype),
            "tokens": batch[bs.LANGUAGE_TOKENS], "step_mask": batch[bs.STEP_MASK]}
  if config.use_hand_rgb:
    inputs["hand_rgb"] = preprocess_uint8(batch[bs.RGB_GRIPPER], size, dtype)
  if config.use_state:
    inputs["arm_state"] = batch[bs.ARM_STATE]
    inputs["gripper_state"] = batch[bs.GRIPPER_STATE]
  return inputs

