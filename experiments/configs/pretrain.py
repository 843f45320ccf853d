"""Stage 1: generative video pretraining on Ego4D clips (video loss only, pretraining token layout).

    python -m experiments.pretrain --config experiments/configs/pretrain.py \
        --workdir /ckpt/gr1_pretrain --config.data.path=/data/ego4d_clips
    python -m experiments.pretrain --config experiments/configs/pretrain.py:demo --workdir /tmp/gr1_demo/pretrain
    python -m experiments.pretrain --config experiments/configs/pretrain.py:debug --workdir /tmp/gr1_debug

Variants:
  (default)  official sizes, pretraining layout (no state, no [ACT], static camera).
             Optimizer after GR-MG's pre-training config (gr1.md §4.1; GR-1's own is
             unpublished): AdamW lr 3.6e-4, betas (0.9, 0.999), weight decay 0, 5 of 50
             epochs warm-up, cosine to 1 % of peak, clip 1.0. 50 epochs of ~800k clips
             at global batch 512 = 78k steps (warm-up 7.8k).
  demo       a small model on a fake Ego4D-layout corpus that it generates (videos ->
             prepared 64-px clips) under --config.data.path (default /tmp/gr1_demo/ego4d_v4)
             if absent, over a frozen MAE that experiments/pretrain_mae.py pre-trains on
             that corpus into --config.mae_from (default /tmp/gr1_demo/mae_v4) if absent;
             a few minutes on 2 CPU cores, held-out video loss well below the mean frame.
  mini       stage 1 of the CPU-scale model (gr1_model.py:mini, pretraining layout) on the
             static-camera frames of a raw CALVIN split, actions and language unused: the
             pretraining ablation of docs/calvin_closed_loop.md.
             python -m experiments.pretrain --config experiments/configs/pretrain.py:mini \
                 --workdir /runs/mini_pretrain --config.data.path=/data/play_ABC \
                 --config.mae_from=/runs/mae_D
  debug      tiny model on synthetic batches, a few steps (tests).
data.path: a directory prepared by `python -m data_pipelines.ego4d.prepare` (train/val splits).
data.mixture (instead of data.path): weighted sources "KIND:PATH=WEIGHT,...", KIND one of
  ego4d       a prepared clip directory (as data.path)
  calvin      a converted CALVIN TFDS data_dir; its static-camera windows, video only
  calvin_raw  a raw CALVIN split directory (training/ + validation/), video only
CALVIN frames are resized on the host to data.image_size; weights need not sum to 1 and
set each source's share of the windows (a fixed interleave, deterministic per seed).

    python -m experiments.pretrain --config experiments/configs/pretrain.py \
        --workdir /ckpt/gr1_pretrain_mix \
        --config.data.mixture=ego4d:/data/ego4d_clips=0.9,calvin:/data/tfds=0.1
"""
from __future__ import annotations

from experiments.configs import gr1_model, train_base


def get_config(variant: str = "default"):
  c = train_base.base_config()
  c.model = gr1_model.get_config("pretrain")
  c.batch_size = 512
  c.num_train_steps = 78_000
  c.optimizer.update(learning_rate=3.6e-4, warmup_steps=7_800, end_lr_fraction=0.01, weight_decay=0.0)
  c.data.update(name="ego4d", path="", image_size=224)
  c.model.dtype = "bfloat16"   # TPU/GPU default: bf16 compute, fp32 parameters and optimizer
  if variant == "default":
    pass
  elif variant == "demo":
    train_base.apply_demo(c, num_train_steps=1200)
    c.optimizer.learning_rate = 3e-3
    # Versioned paths: generation is skipped when the directory exists, so a changed demo
    # corpus or MAE gets a new name instead of silently reusing an older one.
    c.data.update(path="/tmp/gr1_demo/ego4d_v4", image_size=64, augment=True, generate_demo_data=True)
    c.mae_from = "/tmp/gr1_demo/mae_v4"   # pre-trained on the demo corpus by experiments/pretrain_mae.py if absent
  elif variant == "mini":
    c.model = gr1_model.get_config("mini")
    c.model.update(use_state=False, act_pred=False, use_hand_rgb=False, fwd_pred_hand=False)
    c.batch_size = 16
    c.num_train_steps = 2500
    c.optimizer.update(learning_rate=1e-3, warmup_steps=200)
    c.data.update(name="calvin_raw", path="", augment=True, worker_count=1)
    c.log_every, c.eval_every, c.image_every, c.checkpoint_every = 50, 500, 2500, 500
  elif variant == "debug":
    train_base.apply_debug(c, "tiny_pretrain")
  else:
    raise ValueError(f"unknown variant {variant!r} of experiments/configs/pretrain.py; "
                     "choose default, demo, mini or debug")
  return c
