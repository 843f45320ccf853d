"""Per-dimension statistics of a LeRobot dataset's state and action, computed once into a cache file.

    python -m data_pipelines.lerobot.stats --dataset /data/libero [--out FILE] \
        [--keys observation.state,action]
    python -m data_pipelines.lerobot.stats --config experiments/configs/finetune_lerobot.py \
        --config.data.path=/data/libero            # keys and stats_file from config.data.lerobot

Writes {"dataset", "num_frames", "keys": {key: {mean, std, q01, q99, min, max}}} (lists,
one value per dimension, over every frame of every episode; q01/q99 exact quantiles)
to FILE, default <dataset>/meta/gr1_stats.json (config.data.lerobot.stats_file overrides).
Training with config.data.lerobot.normalization = mean_std | quantile reads it and stores
the statistics of the arm dims in every checkpoint (gr1_jax/norm_stats.py).
Only the parquet columns are read (no video), so this takes seconds even for large datasets.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from data_pipelines.lerobot import format as lr_format
from data_pipelines.lerobot.pipeline import STATS_FILE
from gr1_jax.norm_stats import vector_stats


def compute_stats(root, keys=("observation.state", "action")) -> dict:
  data = lr_format.open_dataset(root, list(keys))
  return {"dataset": str(Path(root).resolve()), "num_frames": data.num_frames,
          "keys": {k: {name: np.asarray(v).tolist() for name, v in vector_stats(data.arrays[k]).items()}
                   for k in keys}}


def write_stats(root, out=None, keys=("observation.state", "action")) -> Path:
  out = Path(out) if out else Path(root) / STATS_FILE
  stats = compute_stats(root, keys)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(out.name + ".tmp")
  tmp.write_text(json.dumps(stats, indent=1))
  tmp.replace(out)   # whole or nothing
  return out


def _from_config(argv) -> tuple[str, str, tuple[str, str]]:
  """(dataset, out, keys) from --config FILE[:variant] and --config.* overrides."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", None, "training config", flag_values=values)
  values(argv)
  c = holder.value
  lerobot = c.data.lerobot
  return c.data.path, lerobot.stats_file, (lerobot.state, lerobot.action)


def main(argv=None):
  argv = list(sys.argv if argv is None else [sys.argv[0]] + list(argv))
  from gr1_jax.user_errors import UserError  # pylint: disable=import-outside-toplevel
  try:
    if any(a.startswith("--config") for a in argv[1:]):
      dataset, out, keys = _from_config(argv)
      if not dataset:
        raise UserError("config.data.path is empty; pass --config.data.path=DATASET")
    else:
      parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
      parser.add_argument("--dataset", required=True, help="LeRobot dataset root (holds meta/info.json)")
      parser.add_argument("--out", default="", help=f"default <dataset>/{STATS_FILE}")
      parser.add_argument("--keys", default="observation.state,action", help="numeric features, comma-separated")
      args = parser.parse_args(argv[1:])
      dataset, out, keys = args.dataset, args.out, tuple(args.keys.split(","))
    path = write_stats(dataset, out or None, keys)
  except UserError as exc:
    print(f"error: {exc}", file=sys.stderr)
    return 2
  print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
