"""The contract between the data pipelines and the model: key names, dtypes, shapes.

Every pipeline yields dicts of numpy arrays with (a subset of) these keys; the
train step reads only these keys, so pipelines may add trace fields (ints or
floats, e.g. source frame ids) under other names.

B = batch, L = seq_len (10 in GR-1), H x W = native camera resolution
(CALVIN static 200x200, gripper 84x84; Ego4D clips 224x224).  Images stay uint8
at native resolution on the host: resize to 224 and ImageNet normalisation run
on device inside the jitted step.

Padded steps (step_mask == 0) hold zero images, zero arm state, the "closed"
gripper one-hot [1, 0] and zero actions; the model never attends to them and
the losses ignore them.
"""
from __future__ import annotations

import numpy as np

STEP_MASK = "step_mask"            # float32 (B, L)            1 = real frame, 0 = right padding
LANGUAGE_TOKENS = "language_tokens"  # int32 (B, 77)          CLIP BPE ids, SOT ... EOT, zero padded
RGB_STATIC = "rgb_static"          # uint8   (B, L, H, W, 3)   static / egocentric camera
RGB_GRIPPER = "rgb_gripper"        # uint8   (B, L, h, w, 3)   wrist camera (fine-tuning only)
ARM_STATE = "arm_state"            # float32 (B, L, 6)         robot_obs[0:6], raw (not normalised)
GRIPPER_STATE = "gripper_state"    # float32 (B, L, 2)         one-hot of (robot_obs[14] + 1) / 2
ARM_ACTION = "arm_action"          # float32 (B, L, K, 6)      rel_actions[0:6] of frames t .. t+K-1
GRIPPER_ACTION = "gripper_action"  # float32 (B, L, K)         (rel_actions[6] + 1) / 2 in {0, 1}
ACTION_MASK = "action_mask"        # float32 (B, L, K)         validity of each action target

PRETRAIN_KEYS = (STEP_MASK, LANGUAGE_TOKENS, RGB_STATIC)
FINETUNE_KEYS = (STEP_MASK, LANGUAGE_TOKENS, RGB_STATIC, RGB_GRIPPER, ARM_STATE,
                 GRIPPER_STATE, ARM_ACTION, GRIPPER_ACTION, ACTION_MASK)

_DTYPES = {
    STEP_MASK: np.float32, LANGUAGE_TOKENS: np.int32, RGB_STATIC: np.uint8,
    RGB_GRIPPER: np.uint8, ARM_STATE: np.float32, GRIPPER_STATE: np.float32,
    ARM_ACTION: np.float32, GRIPPER_ACTION: np.float32, ACTION_MASK: np.float32,
}
_RANKS = {
    STEP_MASK: 2, LANGUAGE_TOKENS: 2, RGB_STATIC: 5, RGB_GRIPPER: 5, ARM_STATE: 3,
    GRIPPER_STATE: 3, ARM_ACTION: 4, GRIPPER_ACTION: 3, ACTION_MASK: 3,
}


def check_batch(batch: dict, required: tuple[str, ...], *, seq_len: int | None = None) -> None:
  """Raises ValueError naming the key when `batch` breaks the contract above."""
  for key in required:
    if key not in batch:
      raise ValueError(f"batch is missing key {key!r}; it has {sorted(batch)}")
    value = np.asarray(batch[key])
    if value.dtype != _DTYPES[key]:
      raise ValueError(f"batch[{key!r}] has dtype {value.dtype}, expected {np.dtype(_DTYPES[key])}")
    if value.ndim != _RANKS[key]:
      raise ValueError(f"batch[{key!r}] has shape {value.shape}, expected rank {_RANKS[key]}")
  batch_size = np.asarray(batch[required[0]]).shape[0]
  for key in required:
    shape = np.asarray(batch[key]).shape
    if shape[0] != batch_size:
      raise ValueError(f"batch[{key!r}] has batch dim {shape[0]}, expected {batch_size}")
    if seq_len is not None and key != LANGUAGE_TOKENS and shape[1] != seq_len:
      raise ValueError(f"batch[{key!r}] has {shape[1]} steps, expected seq_len={seq_len}")
  if LANGUAGE_TOKENS in required and np.asarray(batch[LANGUAGE_TOKENS]).shape[1] != 77:
    raise ValueError(f"batch['language_tokens'] has shape {np.asarray(batch[LANGUAGE_TOKENS]).shape}, expected (B, 77)")
