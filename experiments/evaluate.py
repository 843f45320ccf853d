"""Offline metrics of a checkpoint on a CALVIN-format validation split, written as JSON.

    python -m experiments.evaluate --checkpoint CKPT_DIR --data /data/task_D_D \
        [--split validation] [--batch_size 8] [--max_batches N] [--output offline_metrics.json]

--data is a raw CALVIN split (holding validation/ with episode_*.npz, as CALVIN
downloads and `python -m data_pipelines.calvin.make_fake` produce) or a TFDS
directory written by `python -m data_pipelines.calvin.convert`. Windows are read
in fixed order, without augmentation, one epoch. Metrics (see
gr1_jax/evaluation/offline.py): arm L1 and MSE, gripper accuracy, and per camera
the PSNR / SSIM of the predicted future frames (needs a checkpoint with fwd_pred).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from experiments import cli


DATA_EXPECTED = "a raw CALVIN split directory or a TFDS directory written by data_pipelines.calvin.convert"
CHECKPOINT_EXPECTED = "a checkpoint directory or a training workdir"


def is_raw_calvin(path: str | os.PathLike) -> bool:
  """True for a raw CALVIN split dir (or one of its training/validation folders)."""
  path = Path(path)
  for folder in (path, path / "training", path / "validation"):
    if (folder / "lang_annotations" / "auto_lang_ann.npy").is_file():
      return True
  return False


def validation_batches(data: str, *, split: str, batch_size: int, config, data_format: str = "auto",
                       worker_count: int = 0):
  """Batches of the split in fixed order (no shuffling/augmentation, one epoch)."""
  from data_pipelines.calvin import pipeline
  cli.existing_path("--data", data, DATA_EXPECTED)
  raw = is_raw_calvin(data) if data_format == "auto" else data_format == "raw"
  common = dict(batch_size=batch_size, seq_len=config.seq_len, action_chunk=config.action_chunk,
                shuffle=False, augment=False, num_epochs=1, drop_remainder=False,
                worker_count=worker_count)
  if raw:
    return pipeline.make_calvin_raw_dataset(data, split, **common)
  return pipeline.make_calvin_dataset(data, split, **common)


def parse_args(argv=None):
  parser = cli.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument("--checkpoint", required=True, help="checkpoint directory or training workdir")
  parser.add_argument("--data", required=True, help="raw CALVIN split dir or converted TFDS dir")
  parser.add_argument("--split", default="validation", help="validation (default) or training")
  parser.add_argument("--format", choices=("auto", "raw", "converted"), default="auto")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--max_batches", type=int, default=None)
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
  parser.add_argument("--output", default="offline_metrics.json")
  parser.add_argument("--quiet", action="store_true")
  args = parser.parse_args(argv)
  if args.batch_size < 1:
    parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  cli.existing_path("--checkpoint", args.checkpoint, CHECKPOINT_EXPECTED)   # before the slow imports
  cli.existing_path("--data", args.data, DATA_EXPECTED)
  from gr1_jax.atomic_files import write_json
  from gr1_jax.evaluation.offline import evaluate_batches
  from gr1_jax.model_checkpoint import load_model, resolve_checkpoint_dir

  start = time.perf_counter()
  with cli.naming("--checkpoint", args.checkpoint):
    checkpoint = resolve_checkpoint_dir(args.checkpoint)
    model = load_model(checkpoint, step=args.step)
  batches = validation_batches(args.data, split=args.split, batch_size=args.batch_size,
                               config=model.config, data_format=args.format)
  metrics = evaluate_batches(model, batches, max_batches=args.max_batches)
  metrics.update({"checkpoint": checkpoint, "data": os.path.abspath(args.data), "split": args.split,
                  "seconds": round(time.perf_counter() - start, 2)})
  write_json(args.output, metrics)
  if not args.quiet:
    import json
    print(json.dumps(metrics, indent=2))
    print(f"wrote {os.path.abspath(args.output)}", file=sys.stderr)
  return metrics


if __name__ == "__main__":
  cli.run(main)
