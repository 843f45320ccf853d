"""Command line for the CALVIN -> ArrayRecord conversion (see builder.py).

    python -m data_pipelines.calvin.convert --src /data/calvin/task_D_D --data_dir /data/tfds \
        [--config jpeg|png] [--workers N] [--splits train,validation] [--skip_bad] [--keep_cache]

Prints progress bars and a summary (segments, frames, bytes, seconds); exits
with "error: <file>: <problem>" on bad input.  Re-run the same command to finish
an interrupted conversion (finished segments are reused from the cache).
"""
from __future__ import annotations

import argparse
import logging
import sys

from data_pipelines.calvin import raw
from data_pipelines.calvin.builder import CalvinGr1, convert


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description="Convert a raw CALVIN split for GR-1 (TFDS ArrayRecord).")
  parser.add_argument("--src", required=True, help="CALVIN split folder holding training/ and validation/")
  parser.add_argument("--data_dir", required=True, help="TFDS data_dir to write into")
  parser.add_argument("--config", default="jpeg", choices=[c.name for c in CalvinGr1.BUILDER_CONFIGS])
  parser.add_argument("--workers", type=int, default=None, help="encoding processes (default: cores - 1)")
  parser.add_argument("--splits", default="train,validation", help="comma-separated tfds splits")
  parser.add_argument("--skip_bad", action="store_true",
                      help="skip (count and log) annotations with missing/corrupt/wrong frames instead of failing")
  parser.add_argument("--keep_cache", action="store_true", help="keep the per-segment cache after success")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  try:
    convert(args.src, args.data_dir, config=args.config, workers=args.workers,
            on_bad="skip" if args.skip_bad else "raise", keep_cache=args.keep_cache,
            splits=tuple(s for s in args.splits.split(",") if s))
  except raw.CalvinDataError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  main(sys.argv[1:])
