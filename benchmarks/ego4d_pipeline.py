r"""Ego4D pipeline speed on this machine: clip preparation and grain loading.

    python benchmarks/ego4d_pipeline.py [--num_videos 4 --seconds 30 --workers 0,1,2]

1. Writes an Ego4D-layout corpus of 256x256 30 fps h264 videos (make_fake content,
   libx264 veryfast, keyframe every 2 s) unless it exists in --work_dir.
2. Preparation (prepare.py, one process, FFmpeg threads 1 and auto): decoded frames/s
   (every source frame is decoded; 1 in 3 is converted + JPEG-encoded), clips/s,
   bytes per stored frame.  Target >= 300 decoded frames/s per process.
3. Loader (make_pretrain_dataset, train mode: shuffle + random windows + random shift,
   seq_len 10, 224x224): windows/s with 0, 1, 2 grain worker processes after a warm-up
   batch, and the CPU time per window summed over the main and worker processes
   (psutil), which tells the rate the code would reach on idle cores.  Target >= 150
   windows/s with 2 workers.
The machine is shared: run it twice, numbers move with the load (printed first).
"""
from __future__ import annotations

import json
import os
import shutil
import time

from absl import app
from absl import flags

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/gr1_ego4d_bench", "corpus and prepared clips")
_NUM_VIDEOS = flags.DEFINE_integer("num_videos", 4, "videos in the corpus")
_SECONDS = flags.DEFINE_float("seconds", 30.0, "length of each video")
_BATCH = flags.DEFINE_integer("batch_size", 16, "loader batch size")
_BATCHES = flags.DEFINE_integer("num_batches", 25, "timed batches per loader setting")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "grain worker counts to time")
_THREADS = flags.DEFINE_list("threads", ["1", "0"], "FFmpeg decoder threads to time (0 = auto)")
_SKIP_PREPARE = flags.DEFINE_bool("skip_prepare", False, "reuse the prepared clips of an earlier run")


def _corpus(root: str) -> dict:
  from data_pipelines.ego4d import make_fake
  desc_path = os.path.join(root, "fake_corpus.json")
  if os.path.isfile(desc_path):
    with open(desc_path) as f:
      desc = json.load(f)
    if len(desc["videos"]) == _NUM_VIDEOS.value and desc["videos"][0]["seconds"] == _SECONDS.value:
      return desc
    shutil.rmtree(root)
  t = time.time()
  desc = make_fake.make_fake(root, num_videos=_NUM_VIDEOS.value, seconds=_SECONDS.value, size=256, codec="libx264",
                             broken=False, missing=False, mixed_aspect=False, gop=60)
  print(f"corpus: {len(desc['videos'])} x {_SECONDS.value:.0f} s of 256x256 h264 written in {time.time() - t:.1f} s")
  return desc


def _bench_prepare(root: str, out_root: str) -> str:
  from data_pipelines.ego4d import prepare
  source = prepare.build_source(root, None, None)
  out = None
  for threads in [] if _SKIP_PREPARE.value else _THREADS.value:
    out = os.path.join(out_root, f"clips_threads{threads}")
    shutil.rmtree(out, ignore_errors=True)
    cpu = time.process_time()
    m = prepare.prepare_shard(source, out, shard_index=0, num_shards=1, threads=int(threads), progress=False)
    cpu = time.process_time() - cpu
    c, secs = m["counts"], m["seconds"]
    nbytes = sum(m["bytes"].values())
    print(f"prepare (1 process, FFmpeg threads={threads or 'auto'}): {c['decoded_frames'] / secs:7.0f} decoded frames/s "
          f"{c['clips_written'] / secs:6.1f} clips/s  {c['frames_written'] / secs:6.0f} stored frames/s  "
          f"{nbytes / c['frames_written'] / 1024:.1f} KiB/frame (JPEG q90, 224x224)  "
          f"[{c['videos']} videos, {c['clips_written']} clips, {c['decoded_frames']} decoded, {secs:.1f} s, "
          f"CPU {cpu:.1f} s]")
  return out or os.path.join(out_root, f"clips_threads{_THREADS.value[-1]}")


def _bench_loader(clips_dir: str) -> None:
  from data_pipelines.ego4d import pipeline
  for workers in [int(w) for w in _WORKERS.value]:
    ds = pipeline.make_pretrain_dataset(clips_dir, batch_size=_BATCH.value, seed=0, shuffle=True, augment=True,
                                        worker_count=workers)
    it = iter(ds)
    t0 = time.time()
    next(it)
    warm = time.time() - t0
    t, cpu = time.time(), _tree_cpu()
    for _ in range(_BATCHES.value):
      next(it)
    secs, cpu = time.time() - t, _tree_cpu() - cpu
    it.close()
    windows = _BATCHES.value * _BATCH.value
    ms = 1e3 * cpu / windows
    print(f"loader workers={workers}: {windows / secs:6.0f} windows/s "
          f"(batch {_BATCH.value}, {_BATCHES.value} batches in {secs:.1f} s; first batch {warm:.1f} s); "
          f"CPU {ms:.1f} ms/window in all processes -> {os.cpu_count() * 1e3 / ms:.0f} windows/s if "
          f"{os.cpu_count()} cores were free")


def _tree_cpu() -> float:
  """User + system CPU seconds of this process and its live child processes (grain workers)."""
  import psutil
  me = psutil.Process()
  total = 0.0
  for p in [me] + me.children(recursive=True):
    try:
      t = p.cpu_times()
      total += t.user + t.system
    except psutil.NoSuchProcess:
      pass
  return total


def main(argv):
  del argv
  print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
  root = os.path.join(_WORK_DIR.value, "raw")
  _corpus(root)
  clips_dir = _bench_prepare(root, _WORK_DIR.value)
  _bench_loader(clips_dir)
  print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  app.run(main)
