"""Fields shared by the training configs (pretrain.py, finetune_calvin.py) and the demo model size.

Every field is listed in gr1_jax/training/experiment_config.py, which rejects
unknown or missing ones by name.
"""
from __future__ import annotations

import ml_collections

from experiments.configs import gr1_model


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = gr1_model.get_config("official")
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})   # -1: all remaining devices
  c.batch_size = 512                    # global, over all processes
  c.num_train_steps = 10_000
  c.optimizer = ml_collections.ConfigDict({
      "learning_rate": 1e-3, "warmup_steps": 500, "end_lr_fraction": 0.0,
      "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "grad_clip_norm": 1.0})
  c.loss_weights = ml_collections.ConfigDict({"video": 1.0, "video_hand": 1.0, "arm": 100.0, "gripper": 1.0})
  c.data = ml_collections.ConfigDict({
      "name": "synthetic", "path": "", "augment": True, "worker_count": 0,
      "mixture": "",         # ego4d only, instead of path: "KIND:PATH=WEIGHT,..." (configs/pretrain.py)
      "image_size": 224,     # ego4d: the size clips were prepared at; synthetic: static camera size
      "hand_size": 84,       # synthetic only: wrist camera size
      "nonfinite_from": -1,  # synthetic only: NaN batches from this index on (tests of the guard)
      "generate_demo_data": False,   # demo: write fake data to `path` if it does not exist
      "lerobot": lerobot_defaults(),  # data.name 'lerobot' (and mixture kind lerobot) only
      # Training batches of segments of seq_len + W - 1 frames, W windows each, whose frames are
      # encoded once (data_pipelines/frame_reuse.py, docs/frame_reuse.md); batch_size still counts
      # windows. 0: the faithful per-window batches (evaluation is always per-window).
      "frame_reuse": 0,
  })
  c.init_from = ""                      # stage-1 workdir or converted official checkpoint
  c.mae_from = ""                       # frozen MAE weights from experiments/pretrain_mae.py (over init_from's)
  c.log_every = 50
  c.eval_every = 1000
  c.eval_batches = 4
  c.image_every = 1000                  # frame grids at evaluations that are multiples of this
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.async_checkpointing = True
  c.max_consecutive_nonfinite = 10
  return c


def lerobot_defaults() -> ml_collections.ConfigDict:
  """How a LeRobot dataset maps onto GR-1 (data_pipelines/lerobot/pipeline.py's docstring).

  Defaults fit LIBERO-style data: 'observation.images.image' + 'observation.images.wrist_image',
  arm = the first 6 dims of state and action, gripper = their last dim thresholded at 0."""
  return ml_collections.ConfigDict({
      "cameras": ml_collections.ConfigDict({"static": "observation.images.image",
                                            "wrist": "observation.images.wrist_image"}),
      "state": "observation.state", "action": "action",
      "arm_state_dims": (0, 1, 2, 3, 4, 5), "gripper_state_dim": -1, "gripper_state_threshold": 0.0,
      "arm_action_dims": (0, 1, 2, 3, 4, 5), "gripper_action_dim": -1, "gripper_action_threshold": 0.0,
      "gripper_action_values": (-1.0, 1.0),   # what the policy outputs for gripper class 0 / 1
      "normalization": "mean_std",             # none | mean_std | quantile (arm dims of state and action)
      "stats_file": "",                        # '' = <data.path>/meta/gr1_stats.json (data_pipelines.lerobot.stats)
      "val_episodes": 1,                       # the last N episodes are the validation split (0: all, both)
      "tolerance_s": 1e-4,                     # max. distance between a frame's timestamp and its video frame
  })


def apply_demo_model(model: ml_collections.ConfigDict) -> None:
  """A model that trains visibly in minutes on 2 CPU cores: 64-px frames, 16 patches, 2 layers.

  Without norm-pix targets: a model this small (and with random frozen encoders) first
  learns the scene's colours and layout, which norm-pix removes from the target, and its
  predicted frames are then viewable as they are (gr1.md §3.1). No dropout: the demo model
  underfits (its training loss stays at its held-out loss), and dropout only slows it down
  (held-out loss at 64 % of the mean-frame baseline after 600 steps, 69 % with dropout 0.1)."""
  gr1_model.apply_tiny(model)
  model.norm_pix_loss = False
  model.dropout = 0.0
  model.hidden_size, model.num_layers, model.num_heads, model.mlp_dim = 64, 2, 4, 256
  model.mae.update(image_size=64, patch_size=16, width=64, depth=1, heads=4, mlp_dim=128)
  model.resampler.update(depth=1, dim_head=16, heads=2, num_latents=4)
  model.decoder.update(depth=1, heads=4)


def apply_demo(c: ml_collections.ConfigDict, num_train_steps: int) -> None:
  """The demo run shared by both stages: the demo model in fp32, batch 8, a short schedule."""
  apply_demo_model(c.model)
  c.model.dtype = "float32"
  c.batch_size = 8
  c.num_train_steps = num_train_steps
  c.optimizer.update(learning_rate=1e-3, warmup_steps=20)
  c.log_every, c.eval_every, c.image_every, c.checkpoint_every = 25, 100, 100, 100
  c.eval_batches = 2


def apply_debug(c: ml_collections.ConfigDict, model_variant: str) -> None:
  """Tiny model on synthetic batches: seconds per run, for tests."""
  c.model = gr1_model.get_config(model_variant)   # float32
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.batch_size = 8
  c.num_train_steps = 6
  c.optimizer.update(learning_rate=1e-3, warmup_steps=1)
  c.data.update(name="synthetic", path="", image_size=40, hand_size=20, worker_count=0)
  c.log_every = c.eval_every = c.image_every = c.checkpoint_every = 3
  c.eval_batches = 1
  c.keep_checkpoints = 2
