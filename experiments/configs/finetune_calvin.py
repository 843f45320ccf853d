"""Stage 2: fine-tuning on CALVIN with all losses (arm, gripper, both cameras' video).

    python -m experiments.finetune --config experiments/configs/finetune_calvin.py \
        --workdir /ckpt/gr1_calvin --config.data.path=/data/tfds \
        --config.init_from=/ckpt/gr1_pretrain        # or a converted official checkpoint
    python -m experiments.finetune --config experiments/configs/finetune_calvin.py:demo \
        --workdir /tmp/gr1_demo/finetune --config.init_from=/tmp/gr1_demo/pretrain

Variants:
  (default)  official sizes and layout; data.name 'calvin' = a converted split
             (`python -m data_pipelines.calvin.builder`, data.path = its TFDS data_dir).
             Optimizer after GR1-Training, the public fine-tuning of GR-1 (gr1.md §4.2):
             AdamW lr 9e-4, weight decay 1e-4 (matrices only), cosine with 1 warm-up
             epoch, clip 1.0, global batch 512 (GR1-Training: 528), 20 epochs ~ 40k steps.
             Loss weights arm 100, gripper 1, video 1 + 1 (GR1-Training's; the paper: all 1).
  demo       the pretrain demo's model in the fine-tuning layout, 1000 steps on fake raw
             CALVIN data (4800 + 600 frames) it generates under --config.data.path
             (default /tmp/gr1_demo/calvin_v2) if absent; init_from the pretrain demo's workdir.
  mini       CPU-scale GR-1 (configs/gr1_model.py:mini) for the closed-loop runs
             on scripted scene-D demonstrations (docs/calvin_closed_loop.md): batch 16,
             2500 steps, read straight from the recorded CALVIN-layout split:
             python -m experiments.finetune --config experiments/configs/finetune_calvin.py:mini \
                 --workdir /runs/mini_D --config.data.path=/data/scripted_D \
                 --config.mae_from=/runs/mae_D
  debug      tiny model on synthetic batches, a few steps (tests).
"""
from __future__ import annotations

from experiments.configs import gr1_model, train_base


def get_config(variant: str = "default"):
  c = train_base.base_config()
  c.model = gr1_model.get_config("official")
  c.batch_size = 512
  c.num_train_steps = 40_000
  c.optimizer.update(learning_rate=9e-4, warmup_steps=2_000, end_lr_fraction=0.0, weight_decay=1e-4)
  c.data.update(name="calvin", path="")
  c.model.dtype = "bfloat16"   # TPU/GPU default: bf16 compute, fp32 parameters and optimizer
  if variant == "default":
    pass
  elif variant == "demo":
    train_base.apply_demo(c, num_train_steps=1000)
    # No random shifts: in 1000 steps they cost this small model more than they teach it
    # (held-out static-camera video loss 0.346 without vs 0.408 with after 600 steps, on an
    # earlier version of the fake scene).
    c.data.update(name="calvin_raw", path="/tmp/gr1_demo/calvin_v2", augment=False, generate_demo_data=True)
    c.eval_batches = 8
  elif variant == "mini":
    c.model = gr1_model.get_config("mini")
    c.batch_size = 16
    c.num_train_steps = 2500
    c.optimizer.update(learning_rate=1e-3, warmup_steps=200)
    c.data.update(name="calvin_raw", path="", augment=True, worker_count=1)
    c.log_every, c.eval_every, c.image_every, c.checkpoint_every = 50, 500, 2000, 500
    c.eval_batches = 4
  elif variant == "debug":
    train_base.apply_debug(c, "tiny")
  else:
    raise ValueError(f"unknown variant {variant!r} of experiments/configs/finetune_calvin.py; "
                     "choose default, demo, mini or debug")
  return c
