"""The official GR-1 train step in PyTorch, for the side-by-side benchmarks.

The torch model is tests/torch_reference/gr1_torch.py (the project's independent model of
the official GR-1), trained as the official loop does: train mode (dropout 0.1), frozen CLIP
and MAE, bicubic resize to 224 and ImageNet normalisation of the uint8 frames inside the
step, the official losses (video t -> t+3 with norm-pix targets, Smooth-L1 arm, BCE gripper,
weighted), clip_grad_norm_, AdamW on the trainable parameters (decay on matrices). Used by
benchmarks/train_step_vs_torch.py and benchmarks/frame_reuse.py (which import it without
defining flags).
"""
from __future__ import annotations


def build_torch(model_config, opt_config, loss_weights):
  import torch
  import torch.nn.functional as F

  from data_pipelines import batch_spec as bs
  from gr1_jax.image_preprocessing import IMAGENET_MEAN, IMAGENET_STD
  from tests.torch_reference.config_bridge import ref_config
  from tests.torch_reference.gr1_torch import GR1Reference, random_init_

  cfg = ref_config(model_config)
  model = random_init_(GR1Reference(cfg), seed=0).train()
  trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
  groups = [{"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": opt_config.weight_decay},
            {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0}]
  opt = torch.optim.AdamW(groups, lr=opt_config.learning_rate, betas=(opt_config.b1, opt_config.b2),
                          eps=opt_config.eps)
  mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
  size, k = cfg.image_size, cfg.fwd_pred_next_n

  def images(x):  # uint8 (B, L, H, W, 3) -> normalised (B, L, 3, 224, 224), as the official loop
    b, l = x.shape[:2]
    x = torch.from_numpy(x).reshape((b * l,) + x.shape[2:]).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return ((x - mean) / std).reshape(b, l, 3, size, size)

  def video_loss(pred, target, mask):
    per_pair = ((pred[:, :-k] - target[:, k:]) ** 2).mean(dim=(-1, -2))
    w = mask[:, k:]
    return (per_pair * w).sum() / w.sum().clamp(min=1.0)

  def run(batch):
    mask = torch.from_numpy(batch[bs.STEP_MASK])
    state = {"arm": torch.from_numpy(batch[bs.ARM_STATE]), "gripper": torch.from_numpy(batch[bs.GRIPPER_STATE])}
    out = model(images(batch[bs.RGB_STATIC]), images(batch[bs.RGB_GRIPPER]), state,
                torch.from_numpy(batch[bs.LANGUAGE_TOKENS]).long(), mask)
    arm_target = torch.from_numpy(batch[bs.ARM_ACTION][:, :, 0])
    grip_target = torch.from_numpy(batch[bs.GRIPPER_ACTION][:, :, 0])
    arm = F.smooth_l1_loss(out["arm_action_preds"], arm_target, reduction="none").mean(-1)
    grip = F.binary_cross_entropy_with_logits(out["gripper_action_preds"][..., 0], grip_target, reduction="none")
    valid = mask.sum().clamp(min=1.0)
    loss = (loss_weights["video"] * video_loss(out["obs_preds"], out["obs_targets"], mask)
            + loss_weights["video_hand"] * video_loss(out["obs_hand_preds"], out["obs_hand_targets"], mask)
            + loss_weights["arm"] * (arm * mask).sum() / valid
            + loss_weights["gripper"] * (grip * mask).sum() / valid)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for _, p in trainable], opt_config.grad_clip_norm)
    opt.step()
    return float(loss.detach())

  def count_flops(batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
      run(batch)
    return float(counter.get_total_flops())
  return run, count_flops
