"""Clip records (one ArrayRecord record per clip) and the shard layout on disk.

Record bytes:
    MAGIC (8 bytes, b"GR1CLIP1") | uint32 little-endian n | n bytes of UTF-8 JSON header
    | JPEG_0 | JPEG_1 | ...
Header fields: clip_uid, video_uid, source, text, raw_text, start_sec, end_sec,
timestamp_sec (narration time or null), fps (source), sample_fps, frame_index (source
frame of each stored frame), frame_time (seconds), jpeg_size (bytes of each JPEG),
height, width.  Frames are RGB JPEGs of height x width.

Shard files (independent, any subset can be read):
    <out>/ego4d_clips-<split>.array_record-<i:05d>-of-<N:05d>
    <out>/_done/shard-<i:05d>-of-<N:05d>.json     completion marker + statistics,
                                                  written (tmp + rename) after the data
"""
from __future__ import annotations

import glob
import json
import os
import re
import struct

import numpy as np

from data_pipelines import image_codec
from data_pipelines.errors import DataError, DataNotFoundError

MAGIC = b"GR1CLIP1"
_LEN = struct.Struct("<I")
PREFIX = "ego4d_clips"
SPLITS = ("train", "val")
DONE_DIR = "_done"


def encode_record(header: dict, jpegs: list[bytes]) -> bytes:
  header = dict(header, jpeg_size=[len(j) for j in jpegs])
  blob = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
  return b"".join([MAGIC, _LEN.pack(len(blob)), blob, *jpegs])


def decode_header(record: bytes) -> tuple[dict, int]:
  """(header, offset of the first JPEG)."""
  if record[:8] != MAGIC:
    raise ValueError(f"not a clip record: starts with {bytes(record[:8])!r}, expected {MAGIC!r}")
  (n,) = _LEN.unpack_from(record, 8)
  header = json.loads(bytes(record[12:12 + n]).decode("utf-8"))
  return header, 12 + n


def jpeg_slices(header: dict, offset: int) -> list[tuple[int, int]]:
  ends = np.cumsum([offset] + list(header["jpeg_size"]))
  return [(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]


def decode_jpeg(data: bytes | memoryview) -> np.ndarray:
  return image_codec.decode_image(data)


def decode_frames(record: bytes, which: list[int] | None = None) -> tuple[dict, np.ndarray]:
  """(header, uint8 frames (n, H, W, 3)) for the stored frames `which` (default all)."""
  header, offset = decode_header(record)
  slices = jpeg_slices(header, offset)
  which = range(len(slices)) if which is None else which
  view = memoryview(record)
  frames = [decode_jpeg(view[slices[i][0]:slices[i][1]]) for i in which]
  if not frames:
    return header, np.zeros((0, header["height"], header["width"], 3), np.uint8)
  return header, np.stack(frames)


def shard_name(split: str, index: int, count: int) -> str:
  return f"{PREFIX}-{split}.array_record-{index:05d}-of-{count:05d}"


def marker_path(out_dir: str, index: int, count: int) -> str:
  return os.path.join(out_dir, DONE_DIR, f"shard-{index:05d}-of-{count:05d}.json")


def read_marker(out_dir: str, index: int, count: int) -> dict | None:
  path = marker_path(out_dir, index, count)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def write_json_atomic(path: str, obj) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


_SHARD_RE = re.compile(re.escape(PREFIX) + r"-(\w+)\.array_record-(\d{5})-of-(\d{5})$")


def list_shards(data_dir: str, split: str, *, require_complete: bool = True) -> list[str]:
  """The non-empty shard files of `split`, in shard order.

  With require_complete, every shard of the run must have its completion marker
  (an unfinished run raises naming the missing shards).
  """
  paths = sorted(glob.glob(os.path.join(data_dir, f"{PREFIX}-{split}.array_record-*")))
  paths = [p for p in paths if _SHARD_RE.search(os.path.basename(p))]
  markers = sorted(glob.glob(os.path.join(data_dir, DONE_DIR, "shard-*-of-*.json")))
  if not markers:
    raise DataNotFoundError(f"{data_dir!r} holds no finished shard ({DONE_DIR}/shard-*.json); "
                            "run `python -m data_pipelines.ego4d.prepare` first")
  counts = {int(m.rsplit("-of-", 1)[1].split(".")[0]) for m in markers}
  if len(counts) != 1:
    raise DataError(f"{data_dir!r} mixes runs with different --num_shards {sorted(counts)}")
  (num_shards,) = counts
  done = {}
  for i in range(num_shards):
    done[i] = read_marker(data_dir, i, num_shards)
  missing = [i for i, m in done.items() if m is None]
  if missing and require_complete:
    raise DataError(f"{data_dir!r}: shards {missing[:20]} of {num_shards} are not finished "
                    "(no completion marker); finish them or pass require_complete=False")
  out = []
  for i, marker in done.items():
    if marker is None or marker["records"].get(split, 0) == 0:
      continue
    path = os.path.join(data_dir, shard_name(split, i, num_shards))
    if not os.path.isfile(path):
      raise DataNotFoundError(f"{path} is listed as finished with {marker['records'][split]} records "
                              "but does not exist")
    out.append(path)
  if not out:
    raise DataError(f"{data_dir!r} has no {split!r} records")
  return out
