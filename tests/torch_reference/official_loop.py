"""The official CALVIN evaluator's reset/step (gr1.md section 9), re-written in torch around
the reference model: the parity target of tests/test_policy.py and the speed yardstick of
benchmarks/policy_vs_torch.py."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gr1_jax import tokenizer
from tests.torch_reference.gr1_torch import GR1Reference

MEAN = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)


class OfficialLoopTorch:
  """The official GR1CalvinEvaluation.reset/step, step for step.

  Every step re-tokenises the instruction, re-encodes it (CLIP text inside the forward) and
  re-runs the whole 10-slot window through MAE, resampler and trunk under torch.no_grad, as
  the official code does. Preprocessing as torchvision 0.13 does for tensors: ToTensor
  (/255, CHW), Resize to the model size with bicubic interpolation (align_corners=False, no
  antialias), Normalize.
  """

  def __init__(self, model: GR1Reference):
    self.model, self.seq_len, self.size = model.eval(), model.cfg.seq_len, model.cfg.image_size
    self.reset()

  def reset(self):
    self.rgb_list, self.hand_rgb_list, self.state_list = [], [], []

  def _preprocess(self, image_uint8):
    x = torch.from_numpy(np.ascontiguousarray(image_uint8)).permute(2, 0, 1).float() / 255.0
    x = F.interpolate(x[None], size=(self.size, self.size), mode="bicubic", align_corners=False)[0]
    return (x - MEAN) / STD

  def step(self, obs, goal):
    tokens = torch.from_numpy(tokenizer.tokenize(goal).astype(np.int64))
    self.rgb_list.append(self._preprocess(obs["rgb_obs"]["rgb_static"]))
    self.hand_rgb_list.append(self._preprocess(obs["rgb_obs"]["rgb_gripper"]))
    state = obs["robot_obs"]
    self.state_list.append(torch.from_numpy(np.hstack([state[:6], state[-1]])))
    if len(self.rgb_list) > self.seq_len:
      self.rgb_list.pop(0), self.hand_rgb_list.pop(0), self.state_list.pop(0)
    n, L = len(self.rgb_list), self.seq_len
    rgb = torch.zeros((1, L, 3, self.size, self.size))
    rgb[0, :n] = torch.stack(self.rgb_list)
    hand = torch.zeros((1, L, 3, self.size, self.size))
    hand[0, :n] = torch.stack(self.hand_rgb_list)
    states = torch.stack(self.state_list)
    grip = -torch.ones((1, L)).float()
    grip[0, :n] = states[:, 6]
    grip = F.one_hot(((grip + 1.0) / 2).long(), num_classes=2).float()
    arm = torch.zeros((1, L, 6)).float()
    arm[0, :n] = states[:, :6]
    mask = torch.zeros(1, L).long()
    mask[0, :n] = 1
    with torch.no_grad():
      pred = self.model(rgb, hand, {"arm": arm, "gripper": grip}, tokens, mask)
    arm_pred = pred["arm_action_preds"].view(-1, 6)[mask.flatten() > 0][-1]
    grip_pred = pred["gripper_action_preds"].flatten()[mask.flatten() > 0][-1:]
    grip_pred = (torch.sigmoid(grip_pred) > 0.5).int().float() * 2.0 - 1.0
    return torch.cat((arm_pred, grip_pred)).numpy()
