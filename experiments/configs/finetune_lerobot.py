"""Stage 2: fine-tuning on a LeRobot dataset (v3.0 or v2.1, read directly; data_pipelines/lerobot).

    python -m data_pipelines.lerobot.stats --dataset /data/libero        # once: normalisation statistics
    python -m experiments.finetune --config experiments/configs/finetune_lerobot.py \
        --workdir /ckpt/gr1_libero --config.data.path=/data/libero \
        --config.init_from=/ckpt/gr1_pretrain        # or a converted official checkpoint
    # another robot: map its features and dims (train_base.lerobot_defaults lists every key), e.g.
    #   --config.data.lerobot.cameras.static=observation.images.front \
    #   --config.data.lerobot.arm_action_dims="(0,1,2,3,4,5)" --config.data.lerobot.gripper_action_dim=6 \
    #   --config.data.lerobot.normalization=quantile

The statistics of the arm dims, the mapping and the mode are stored in every checkpoint
(item norm_stats); `GR1Policy.from_checkpoint(workdir)` normalises the robot's state and
un-normalises its actions with them.

Variants:
  (default)  official sizes and layout, CALVIN's fine-tuning recipe (finetune_calvin.py), on
             data.path; mean/std normalisation; the last episode is the validation split.
  debug      tiny model, a few steps, batch 4, on a small dataset at --config.data.path
             (e.g. `python -m data_pipelines.lerobot.make_fake --out DIR`; tests).
"""
from __future__ import annotations

from experiments.configs import finetune_calvin, train_base


def get_config(variant: str = "default"):
  if variant == "default":
    c = finetune_calvin.get_config("default")
    c.data.update(name="lerobot", path="")
  elif variant == "debug":
    c = finetune_calvin.get_config("debug")
    c.batch_size = 4
    c.data.update(name="lerobot", path="")
  else:
    raise ValueError(f"unknown variant {variant!r} of experiments/configs/finetune_lerobot.py; "
                     "choose default or debug")
  c.data.lerobot = train_base.lerobot_defaults()
  return c
