"""CALVIN pipeline throughput: conversion frames/s and training windows/s.

    python -m benchmarks.calvin_pipeline [--src CALVIN_SPLIT] [--workers 0,1,2] [--batches 30]

Without --src it first writes fake CALVIN data (make_fake, compressed npz like
the real files) into a temp dir.  It then
  1. converts it (TFDS ArrayRecord, JPEG) with --convert_workers processes and
     prints frames/s, bytes/frame;
  2. for each worker count, iterates the training pipeline (windows of 10 frames
     x 2 cameras, random-shift augmentation, CLIP tokens, action chunk 1,
     batch --batch_size) and prints windows/s over --batches batches after
     --warmup batches (worker start-up excluded).
The machine is shared: run it when it is quiet and look at the load average it
prints.
"""
from __future__ import annotations

import os
import tempfile
import time

from absl import app, flags

_SRC = flags.DEFINE_string("src", None, "CALVIN split dir (training/, validation/); default: fake data")
_FRAMES = flags.DEFINE_integer("frames", 640, "fake training frames to generate without --src")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "Grain worker counts to measure")
_READ_THREADS = flags.DEFINE_integer("read_threads", 2, "reader threads per process")
_BATCH = flags.DEFINE_integer("batch_size", 16, "windows per batch")
_BATCHES = flags.DEFINE_integer("batches", 30, "timed batches per setting")
_WARMUP = flags.DEFINE_integer("warmup", 3, "untimed batches per setting")
_CONVERT_WORKERS = flags.DEFINE_integer("convert_workers", 2, "conversion processes")
_WORK_DIR = flags.DEFINE_string("work_dir", None, "where to write fake data / conversion (default: temp)")


def _windows_per_s(data_dir: str, workers: int) -> tuple[float, float]:
  from data_pipelines.calvin import pipeline  # pylint: disable=import-outside-toplevel
  ds = pipeline.make_calvin_dataset(data_dir, "train", batch_size=_BATCH.value, seed=0,
                                    augment=True, worker_count=workers,
                                    read_threads=_READ_THREADS.value)
  it = iter(ds)
  t0 = time.perf_counter()
  for _ in range(_WARMUP.value):
    next(it)
  startup = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(it)
  rate = _BATCHES.value * _BATCH.value / (time.perf_counter() - t0)
  if hasattr(it, "close"):
    it.close()
  return rate, startup


def main(argv):
  del argv
  from data_pipelines.calvin import builder, make_fake  # pylint: disable=import-outside-toplevel
  work = _WORK_DIR.value or tempfile.mkdtemp(prefix="calvin_bench_")
  src = _SRC.value
  if src is None:
    src = os.path.join(work, "fake")
    if not os.path.isdir(src):
      t0 = time.perf_counter()
      make_fake.make_fake_dataset(src, frames=_FRAMES.value, val_frames=130, episode_len=320,
                                  segment_len=65, seed=0)
      print(f"fake CALVIN data: {_FRAMES.value} + 130 frames in {time.perf_counter() - t0:.1f} s -> {src}")
  data_dir = os.path.join(work, "tfds")
  summary = builder.convert(src, data_dir, workers=_CONVERT_WORKERS.value, progress=False)
  print(f"load average before pipeline runs: {os.getloadavg()}")
  results = []
  for workers in (int(w) for w in _WORKERS.value):
    rate, startup = _windows_per_s(data_dir, workers)
    results.append((workers, rate, startup))
    print(f"  worker_count={workers}: {rate:.0f} windows/s (start-up + warm-up {startup:.1f} s)")
  print("\nsummary")
  if not summary["already_converted"]:
    print(f"  conversion: {summary['frames']} frames, {summary['frames_per_s']:.0f} frames/s with "
          f"{_CONVERT_WORKERS.value} processes, {summary['bytes_per_frame'] / 1e3:.1f} kB/frame "
          f"(JPEG q90, static + wrist)")
  for workers, rate, _ in results:
    print(f"  windows/s (10 frames x 2 cameras, augmented, tokenized), worker_count={workers}: {rate:.0f}")
  print(f"  load average after: {os.getloadavg()}")


if __name__ == "__main__":
  app.run(main)
