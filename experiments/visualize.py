"""Pictures: GR-1's attention mask for a config, and predicted vs real future frames.

    # attention mask (rows attend to columns) of a model config or a checkpoint's config
    python -m experiments.visualize attention-mask --config official --seq_len 4 --valid_steps 3 \
        --out docs/attention_mask.png
    python -m experiments.visualize attention-mask --checkpoint CKPT_DIR --out mask.png

    # the frames predicted for one validation window next to the real ones (PNG grid + GIF/MP4)
    python -m experiments.visualize predictions --checkpoint CKPT_DIR --data /data/task_D_D \
        [--window 0] [--camera static|gripper] [--animation gif|mp4] --out_dir viz/

Predictions are un-normalised to RGB. A checkpoint trained with norm-pix (the
official default) predicts per-patch standardised pixels; those are shown with
each real patch's mean/std put back, i.e. structure only. For true-colour
predictions, train without norm-pix (model.norm_pix_loss=False).
"""
from __future__ import annotations

import argparse
import os
import sys

from experiments import cli
from gr1_jax.user_errors import UserError


CHECKPOINT_EXPECTED = "a checkpoint directory or a training workdir"


def _model_config(args):
  from experiments.configs.gr1_model import get_config
  from gr1_jax.model_config import GR1Config
  if args.checkpoint:
    from gr1_jax.model_checkpoint import load_config
    with cli.naming("--checkpoint", args.checkpoint):
      config, _ = load_config(cli.existing_path("--checkpoint", args.checkpoint, CHECKPOINT_EXPECTED))
  else:
    try:
      config = GR1Config.from_dict(get_config(args.config).to_dict())
    except ValueError as exc:   # an unknown variant
      raise UserError(f"--config {args.config}: {exc}") from None
  if args.seq_len:
    config = config.replace(seq_len=args.seq_len,
                            fwd_pred_next_n=min(config.fwd_pred_next_n, args.seq_len - 1))
  return config


def attention_mask_cmd(args) -> str:
  import numpy as np

  from gr1_jax import visualization as viz
  config = _model_config(args)
  valid = None
  if args.valid_steps is not None:
    if not 1 <= args.valid_steps <= config.seq_len:
      raise UserError(f"--valid_steps={args.valid_steps} must be in [1, seq_len={config.seq_len}]")
    valid = np.arange(config.seq_len) < args.valid_steps
  image = viz.attention_mask_image(config, valid, cell=args.cell)
  path = viz.save_png(args.out, image)
  print(f"wrote {path} ({image.shape[1]}x{image.shape[0]})")
  return path


def predictions_cmd(args) -> dict:
  from experiments.evaluate import DATA_EXPECTED, validation_batches
  cli.existing_path("--checkpoint", args.checkpoint, CHECKPOINT_EXPECTED)   # before the slow imports
  cli.existing_path("--data", args.data, DATA_EXPECTED)
  import jax
  import numpy as np

  from data_pipelines import batch_spec as bs
  from gr1_jax import visualization as viz
  from gr1_jax.model_inputs import model_inputs, required_keys
  from gr1_jax.model_checkpoint import load_model
  with cli.naming("--checkpoint", args.checkpoint):
    model = load_model(args.checkpoint)
  cfg = model.config
  if not cfg.fwd_pred:
    raise UserError(f"--checkpoint {args.checkpoint} has fwd_pred=False: it predicts no frames")
  if args.camera == "gripper" and not cfg.fwd_pred_hand:
    raise UserError(f"--checkpoint {args.checkpoint} has fwd_pred_hand=False: no wrist-camera predictions; "
                    "use --camera static")
  batches = validation_batches(args.data, split=args.split, batch_size=1, config=cfg, data_format=args.format)
  for i, batch in enumerate(batches):
    if i == args.window:
      break
  else:
    raise UserError(f"--window {args.window} is past the end of the split ({i + 1} windows)")
  inputs = jax.jit(lambda b: model_inputs(b, cfg))(
      {k: batch[k] for k in required_keys(cfg) if k in batch})
  out = jax.jit(lambda kw: model(**kw))(inputs)
  rgb = np.asarray(inputs["rgb"], np.float32)
  hand = np.asarray(inputs["hand_rgb"], np.float32) if cfg.use_hand_rgb else None
  size = cfg.mae.image_size
  images, preds = (rgb, out["obs_preds"]) if args.camera == "static" else (hand, out["obs_hand_preds"])
  real, pred, valid = viz.window_prediction_frames(
      np.asarray(images[0]), np.asarray(preds[0]), step_mask=batch[bs.STEP_MASK][0],
      patch_size=cfg.mae.patch_size, fwd_pred_next_n=cfg.fwd_pred_next_n, norm_pix=cfg.norm_pix_loss)
  scale = args.scale or max(1, 224 // size)
  real, pred = viz.upscale_nearest(real, scale), viz.upscale_nearest(pred, scale)
  n = cfg.fwd_pred_next_n
  grid = viz.prediction_grid(real, pred, step_valid=valid, labels=(f"real t+{n}", "predicted"))
  os.makedirs(args.out_dir, exist_ok=True)
  paths = {"grid": viz.save_png(os.path.join(args.out_dir, f"predictions_{args.camera}.png"), grid),
           "animation": viz.save_animation(
               os.path.join(args.out_dir, f"predictions_{args.camera}.{args.animation}"),
               viz.side_by_side_frames(real, pred, valid=valid), fps=args.fps)}
  if cfg.norm_pix_loss:
    print("note: norm-pix checkpoint: predicted patches are shown with the real patches' mean/std "
          "(structure only); train with norm_pix_loss=False for true-colour predictions", file=sys.stderr)
  print(f"wrote {paths['grid']} and {paths['animation']}")
  return paths


def parse_args(argv=None):
  parser = cli.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  mask = sub.add_parser("attention-mask", help="PNG of the attention mask of a config")
  mask.add_argument("--config", default="official",
                    help="model variant of experiments/configs/gr1_model.py "
                         "(official, act_only, pretrain, tiny)")
  mask.add_argument("--checkpoint", default=None, help="use this checkpoint's model config instead")
  mask.add_argument("--seq_len", type=int, default=None, help="fewer steps for a legible picture")
  mask.add_argument("--valid_steps", type=int, default=None, help="mark the later steps as padding")
  mask.add_argument("--cell", type=int, default=None, help="pixels per token (default: fit ~900 px)")
  mask.add_argument("--out", required=True)
  pred = sub.add_parser("predictions", help="predicted vs real future frames of a validation window")
  pred.add_argument("--checkpoint", required=True)
  pred.add_argument("--data", required=True, help="raw CALVIN split dir or converted TFDS dir")
  pred.add_argument("--split", default="validation")
  pred.add_argument("--format", choices=("auto", "raw", "converted"), default="auto")
  pred.add_argument("--window", type=int, default=0, help="index of the window in the split")
  pred.add_argument("--camera", choices=("static", "gripper"), default="static")
  pred.add_argument("--animation", choices=("gif", "mp4"), default="gif")
  pred.add_argument("--fps", type=float, default=3.0)
  pred.add_argument("--scale", type=int, default=None, help="integer upscaling (default to ~224 px)")
  pred.add_argument("--out_dir", required=True)
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  if args.command == "attention-mask":
    return attention_mask_cmd(args)
  return predictions_cmd(args)


if __name__ == "__main__":
  cli.run(main)
