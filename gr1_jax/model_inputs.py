"""A batch in the data_pipelines.batch_spec contract -> the arguments of GR1.__call__.

Images arrive as uint8 at native camera resolution; resizing to the model's
image size (torch-exact bicubic) and ImageNet normalisation happen here, on
device, inside whatever jitted function calls this (train/eval step, offline
evaluation, visualisation).

The images stay float32 whatever config.dtype is: GR1 casts them to its compute
dtype before the MAE and computes the norm-pix video targets from them, so the
targets must not be rounded to bfloat16 first (the per-patch standardisation
amplifies that rounding in low-contrast patches, and the targets would then
depend on the compute dtype, unlike the official float32 ones).
"""
from __future__ import annotations

from collections.abc import Mapping

from data_pipelines import batch_spec as bs
from gr1_jax.image_preprocessing import preprocess_uint8
from gr1_jax.model_config import GR1Config


def required_keys(config: GR1Config) -> tuple[str, ...]:
  return bs.FINETUNE_KEYS if (config.use_state or config.use_hand_rgb or config.act_pred) else bs.PRETRAIN_KEYS


def model_inputs(batch: Mapping, config: GR1Config) -> dict:
  """Keyword arguments of GR1.__call__ for a batch_spec batch."""
  size = config.mae.image_size
  inputs = {"rgb": preprocess_uint8(batch[bs.RGB_STATIC], size),
            "tokens": batch[bs.LANGUAGE_TOKENS], "step_mask": batch[bs.STEP_MASK]}
  if config.use_hand_rgb:
    inputs["hand_rgb"] = preprocess_uint8(batch[bs.RGB_GRIPPER], size)
  if config.use_state:
    inputs["arm_state"] = batch[bs.ARM_STATE]
    inputs["gripper_state"] = batch[bs.GRIPPER_STATE]
  return inputs

