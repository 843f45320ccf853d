"""A small LeRobot-format dataset whose every value says which frame it belongs to (tests, demos).

    python -m data_pipelines.lerobot.make_fake --out /tmp/lerobot_fake [--version v3.0|v2.1] \
        [--lengths 12,20,9] [--size 64]

Written by this project's own minimal writer following LeRobot's format (format.py's
docstring): meta/info.json, meta/tasks (parquet in v3.0, jsonl in v2.1), the episodes
metadata, parquet data and one mp4 per camera (v3.0: all episodes in one data file and
one video file per camera, with per-episode from/to timestamps; v2.1: one of each per
episode).  Videos are AV1 (libsvtav1, yuv420p, a keyframe every 2 frames) like LeRobot's.

Content, a pure function of the global frame index i (tests/data_pipelines/lerobot_content.py
re-derives it, also for datasets written by LeRobot's own writer):
  observation.state[d] = i + d / 10 (8 dims; dim 7, the gripper, = +1 if i % 3 else -1)
  action[d]            = -i - d / 10 (7 dims; dim 6, the gripper, = +1 if i % 2 else -1)
  each camera          the value 2 i + camera (0 static, 1 wrist) in 16 bits, one flat
                       16x16 block per bit (dark 0, bright 1) that survives video compression
  task                 TASKS[episode % len(TASKS)]
"""
from __future__ import annotations

import argparse
import os
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

os.environ.setdefault("SVT_LOG", "1")   # SVT-AV1: errors only
TASKS = ("pick up the red cube", "open the top drawer")
STATE_DIM, ACTION_DIM = 8, 7
CAMERAS = ("observation.images.image", "observation.images.wrist_image")
FPS = 10
BITS = 16
_DARK, _BRIGHT = 40, 215


def state_of(i: int) -> np.ndarray:
  s = np.float32(i) + np.arange(STATE_DIM, dtype=np.float32) / np.float32(10)
  s[7] = 1.0 if i % 3 else -1.0
  return s.astype(np.float32)


def action_of(i: int) -> np.ndarray:
  a = -np.float32(i) - np.arange(ACTION_DIM, dtype=np.float32) / np.float32(10)
  a[6] = 1.0 if i % 2 else -1.0
  return a.astype(np.float32)


def image_of(i: int, camera: int, size: int = 64) -> np.ndarray:
  """uint8 (size, size, 3): the bits of 2 i + camera as a 4x4 grid of flat blocks."""
  value = 2 * i + camera
  cell = size // 4
  image = np.full((size, size, 3), _DARK, np.uint8)
  for bit in range(BITS):
    if (value >> bit) & 1:
      r, c = divmod(bit, 4)
      image[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = _BRIGHT
  return image


def decode_image(image: np.ndarray) -> tuple[int, int]:
  """(frame index, camera) read back from a (possibly compressed) image_of picture."""
  size = image.shape[0]
  cell = size // 4
  value = 0
  for bit in range(BITS):
    r, c = divmod(bit, 4)
    block = image[r * cell + 3:(r + 1) * cell - 3, c * cell + 3:(c + 1) * cell - 3].astype(np.float32)
    if block.mean() > (_DARK + _BRIGHT) / 2:
      value |= 1 << bit
  return value // 2, value % 2


def _write_video(path: Path, images, fps: int) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  codec = "libsvtav1"
  try:
    av.codec.Codec(codec, "w")
  except Exception:  # noqa: BLE001 - an FFmpeg build without SVT-AV1
    codec = "libx264"
  with av.open(str(path), "w") as container:
    stream = container.add_stream(codec, rate=fps, options={"g": "2", "crf": "30"})
    stream.pix_fmt = "yuv420p"
    stream.height, stream.width = images[0].shape[:2]
    stream.time_base = Fraction(1, fps)
    for n, image in enumerate(images):
      frame = av.VideoFrame.from_ndarray(image, format="rgb24")
      frame.pts = n
      frame.time_base = Fraction(1, fps)
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def _features(size: int) -> dict:
  video = {"dtype": "video", "shape": [size, size, 3], "names": ["height", "width", "channels"]}
  scalar = lambda dtype: {"dtype": dtype, "shape": [1], "names": None}
  return {**{cam: dict(video) for cam in CAMERAS},
          "observation.state": {"dtype": "float32", "shape": [STATE_DIM], "names": None},
          "action": {"dtype": "float32", "shape": [ACTION_DIM], "names": None},
          "timestamp": scalar("float32"), "frame_index": scalar("int64"), "episode_index": scalar("int64"),
          "index": scalar("int64"), "task_index": scalar("int64")}


def _frame_table(indices, episode: int, first: int, task_index: int) -> pa.Table:
  n = len(indices)
  return pa.table({
      "observation.state": pa.array([state_of(i).tolist() for i in indices], pa.list_(pa.float32(), STATE_DIM)),
      "action": pa.array([action_of(i).tolist() for i in indices], pa.list_(pa.float32(), ACTION_DIM)),
      "timestamp": pa.array(np.arange(n, dtype=np.float32) / np.float32(FPS), pa.float32()),
      "frame_index": pa.array(np.arange(n), pa.int64()),
      "episode_index": pa.array(np.full(n, episode), pa.int64()),
      "index": pa.array(np.arange(first, first + n), pa.int64()),
      "task_index": pa.array(np.full(n, task_index), pa.int64()),
  })


def make_fake_dataset(out, *, lengths=(12, 20, 9), size: int = 64, version: str = "v3.0") -> Path:
  out = Path(out)
  if (out / "meta/info.json").exists():
    raise FileExistsError(f"{out} already holds a dataset")
  (out / "meta").mkdir(parents=True, exist_ok=True)
  starts = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
  task_of = [e % len(TASKS) for e in range(len(lengths))]
  used = sorted(set(task_of))
  info = {"codebase_version": version, "robot_type": "fake", "total_episodes": len(lengths),
          "total_frames": int(starts[-1]), "total_tasks": len(used), "chunks_size": 1000, "fps": FPS,
          "splits": {"train": f"0:{len(lengths)}"}, "features": _features(size)}
  tables = [_frame_table(range(starts[e], starts[e + 1]), e, int(starts[e]), task_of[e]) for e in range(len(lengths))]
  frames = {cam: [[image_of(i, c, size) for i in range(starts[e], starts[e + 1])] for e in range(len(lengths))]
            for c, cam in enumerate(CAMERAS)}
  if version == "v3.0":
    info.update(data_path="data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                video_path="videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
                data_files_size_in_mb=100, video_files_size_in_mb=200)
    (out / "data/chunk-000").mkdir(parents=True)
    pq.write_table(pa.concat_tables(tables), out / "data/chunk-000/file-000.parquet")
    for cam in CAMERAS:
      _write_video(out / f"videos/{cam}/chunk-000/file-000.mp4", [im for ep in frames[cam] for im in ep], FPS)
    pq.write_table(pa.table({"task_index": pa.array(used, pa.int64()),
                             "__index_level_0__": [TASKS[t] for t in used]}),   # pandas: the index
                   out / "meta/tasks.parquet")
    rows = {"episode_index": list(range(len(lengths))), "tasks": [[TASKS[t]] for t in task_of],
            "length": list(lengths), "data/chunk_index": [0] * len(lengths), "data/file_index": [0] * len(lengths),
            "dataset_from_index": starts[:-1].tolist(), "dataset_to_index": starts[1:].tolist(),
            "meta/episodes/chunk_index": [0] * len(lengths), "meta/episodes/file_index": [0] * len(lengths)}
    for cam in CAMERAS:
      rows.update({f"videos/{cam}/chunk_index": [0] * len(lengths), f"videos/{cam}/file_index": [0] * len(lengths),
                   f"videos/{cam}/from_timestamp": (starts[:-1] / FPS).tolist(),
                   f"videos/{cam}/to_timestamp": (starts[1:] / FPS).tolist()})
    (out / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(rows), out / "meta/episodes/chunk-000/file-000.parquet")
  elif version == "v2.1":
    info.update(data_path="data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
                video_path="videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
                total_chunks=1, total_videos=len(CAMERAS) * len(lengths))
    (out / "data/chunk-000").mkdir(parents=True)
    for e, table in enumerate(tables):
      pq.write_table(table, out / f"data/chunk-000/episode_{e:06d}.parquet")
      for cam in CAMERAS:
        _write_video(out / f"videos/chunk-000/{cam}/episode_{e:06d}.mp4", frames[cam][e], FPS)
    (out / "meta/tasks.jsonl").write_text("".join(json.dumps({"task_index": t, "task": TASKS[t]}) + "\n"
                                                  for t in used))
    (out / "meta/episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": e, "tasks": [TASKS[task_of[e]]], "length": n}) + "\n"
        for e, n in enumerate(lengths)))
  else:
    raise ValueError(f"version must be v3.0 or v2.1, got {version!r}")
  (out / "meta/info.json").write_text(json.dumps(info, indent=2))
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--version", default="v3.0", choices=("v3.0", "v2.1"))
  parser.add_argument("--lengths", default="12,20,9", help="frames per episode, comma-separated")
  parser.add_argument("--size", type=int, default=64)
  args = parser.parse_args(argv)
  path = make_fake_dataset(args.out, lengths=[int(x) for x in args.lengths.split(",")], size=args.size,
                           version=args.version)
  print(path)


if __name__ == "__main__":
  main()
