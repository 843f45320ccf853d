"""config.data -> per-process Grain iterators of numpy batches, and their assembly into global arrays.

Sources (config.data.name):
  ego4d       stage 1: prepared Ego4D clip shards (data_pipelines/ego4d), split 'train' / 'val'
  calvin      stage 2: a converted CALVIN TFDS dir (data_pipelines/calvin), 'train' / 'validation'
  calvin_raw  stage 2 straight from a raw CALVIN split folder (small data, the demo)
  synthetic   random batch_spec batches (tests, benchmarks)
Every process reads its own 1/process_count of the global batch (disjoint shards);
`to_global` turns the per-process numpy batches into one globally sharded array per key.
Evaluation reads the first config.eval_batches batches of the validation split in a
fixed order, the same ones at every evaluation.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np

from gr1_jax import sharding
from gr1_jax.model_config import GR1Config

DATA_SOURCES = ("ego4d", "calvin", "calvin_raw", "synthetic")


def _local_batch(global_batch: int) -> int:
  return global_batch // jax.process_count()


def make_dataset(data: Mapping, model: GR1Config, *, global_batch: int, seed: int, train: bool):
  """A grain IterDataset of this process's share of each batch."""
  name = data["name"]
  batch = _local_batch(global_batch)
  shard = {"shard_index": jax.process_index(), "shard_count": jax.process_count()}
  if name == "synthetic":
    from data_pipelines.synthetic import synthetic_dataset
    return synthetic_dataset(batch_size=global_batch, seq_len=model.seq_len, image_size=data["image_size"],
                             hand_size=data["hand_size"], action_chunk=model.action_chunk,
                             finetune=model.use_state or model.use_hand_rgb,
                             seed=seed * 2 + int(not train),
                             nonfinite_from=data["nonfinite_from"] if train else -1, **shard)
  if name == "ego4d":
    from data_pipelines.ego4d.pipeline import make_pretrain_dataset
    return make_pretrain_dataset(
        [(data["path"], 1.0)], batch_size=batch, seq_len=model.seq_len, seed=seed, shuffle=train,
        augment=train and data["augment"], split="train" if train else "val",
        image_size=data["image_size"], worker_count=data["worker_count"] if train else 0, **shard)
  if name in ("calvin", "calvin_raw"):
    from data_pipelines.calvin import pipeline as calvin
    kwargs = dict(batch_size=batch, seq_len=model.seq_len, action_chunk=model.action_chunk, seed=seed,
                  shuffle=train, augment=train and data["augment"], num_epochs=None, drop_remainder=True,
                  worker_count=data["worker_count"] if train else 0,
                  pretrain_video_only=not (model.use_state or model.use_hand_rgb), **shard)
    split = "train" if train else "validation"
    if name == "calvin":
      return calvin.make_calvin_dataset(data["path"], split, **kwargs)
    return calvin.make_calvin_raw_dataset(data["path"], split, **kwargs)
  raise ValueError(f"config.data.name={name!r}; expected one of {', '.join(DATA_SOURCES)}")


def to_global(local: Mapping[str, np.ndarray], keys, mesh) -> dict[str, jax.Array]:
  """This process's rows of each model key -> one global array sharded over the batch axes."""
  target = sharding.batch_sharding(mesh)
  out = {}
  for key in keys:
    value = np.asarray(local[key])
    global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
    out[key] = jax.make_array_from_process_local_data(target, value, global_shape)
  return out
