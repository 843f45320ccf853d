"""Random batch_spec-conformant batches (numpy, no JAX): for tests, benchmarks and smoke runs.

    ds = synthetic_dataset(batch_size=8, seq_len=10, image_size=200, hand_size=84, finetune=True)
    batch = next(iter(ds))

Every batch is a pure function of (seed, batch index), so a grain iterator over it
checkpoints and resumes exactly. The last window of every batch is right-padded
from step seq_len - 2 on, to exercise the masks.
"""
from __future__ import annotations

import grain
import numpy as np

from data_pipelines import batch_spec as bs


def synthetic_batch(index: int, *, batch_size: int, seq_len: int, image_size: int, hand_size: int,
                    action_chunk: int = 1, finetune: bool = True, seed: int = 0,
                    nonfinite_from: int = -1) -> dict:
  """Batch number `index`; from batch `nonfinite_from` on (if >= 0) the step mask holds NaN,
  which makes every loss NaN (fault injection for the non-finite guard)."""
  rng = np.random.default_rng([seed, index])
  b, l, k = batch_size, seq_len, action_chunk
  mask = np.ones((b, l), np.float32)
  mask[-1, l - 2:] = 0.0
  tokens = np.zeros((b, 77), np.int32)
  tokens[:, 0], tokens[:, 1:6], tokens[:, 6] = 49406, rng.integers(1, 49405, (b, 5)), 49407
  batch = {bs.STEP_MASK: mask, bs.LANGUAGE_TOKENS: tokens,
           bs.RGB_STATIC: rng.integers(0, 256, (b, l, image_size, image_size, 3), dtype=np.uint8)}
  if finetune:
    grip = rng.integers(0, 2, (b, l))
    batch.update({
        bs.RGB_GRIPPER: rng.integers(0, 256, (b, l, hand_size, hand_size, 3), dtype=np.uint8),
        bs.ARM_STATE: rng.normal(size=(b, l, 6)).astype(np.float32),
        bs.GRIPPER_STATE: np.eye(2, dtype=np.float32)[grip],
        bs.ARM_ACTION: rng.uniform(-1, 1, (b, l, k, 6)).astype(np.float32),
        bs.GRIPPER_ACTION: rng.integers(0, 2, (b, l, k)).astype(np.float32),
        bs.ACTION_MASK: np.broadcast_to(mask[:, :, None], (b, l, k)).copy(),
    })
  if 0 <= nonfinite_from <= index:
    batch[bs.STEP_MASK] = np.full_like(mask, np.nan)
  return batch


class _MakeBatch(grain.transforms.Map):

  def __init__(self, shard_index: int, shard_count: int, **kwargs):
    self.shard_index, self.shard_count, self.kwargs = shard_index, shard_count, kwargs

  def map(self, index):
    batch = synthetic_batch(int(index), **self.kwargs)
    rows = self.kwargs["batch_size"] // self.shard_count
    return {k: v[self.shard_index * rows:(self.shard_index + 1) * rows] for k, v in batch.items()}


def synthetic_dataset(*, batch_size: int, seq_len: int, image_size: int, hand_size: int,
                      action_chunk: int = 1, finetune: bool = True, seed: int = 0,
                      nonfinite_from: int = -1, num_batches: int | None = None,
                      shard_index: int = 0, shard_count: int = 1) -> grain.IterDataset:
  """An (infinite unless num_batches) grain IterDataset of synthetic batches.

  batch_size is the GLOBAL batch: every process draws the same global batch and keeps
  its rows [shard_index * B / shard_count, ...), so any process count sees the same data.
  """
  if batch_size % shard_count:
    raise ValueError(f"batch_size={batch_size} is not divisible by shard_count={shard_count}")
  ds = grain.MapDataset.range(num_batches if num_batches is not None else 1 << 40)
  return ds.map(_MakeBatch(shard_index, shard_count, batch_size=batch_size, seq_len=seq_len, image_size=image_size,
                           hand_size=hand_size, action_chunk=action_chunk, finetune=finetune,
                           seed=seed, nonfinite_from=nonfinite_from)).to_iter_dataset()
