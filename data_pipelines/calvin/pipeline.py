"""Grain pipelines: converted (or raw) CALVIN -> GR-1 batches (numpy, no JAX).

Entry points (all return Grain datasets of dicts of numpy arrays):

    ds = make_calvin_dataset("/data/tfds", "train", batch_size=32, seed=0,
                             worker_count=2, shard_index=jax.process_index(),
                             shard_count=jax.process_count())
    it = iter(ds); batch = next(it)            # it.get_state() / it.set_state(state)

    make_calvin_dataset(data_dir, "validation", batch_size=32)   # fixed order, no augmentation, 1 epoch
    make_calvin_raw_dataset("/data/calvin_debug_dataset", "training", batch_size=8)  # no conversion
    calvin_windows(frames, ...) -> grain.MapDataset of single windows (e.g. to mix with Ego4D)

`data_dir` is the TFDS data_dir given to the converter (or directly the
``calvin_gr1/<config>/1.0.0`` directory); `split` is "train" or "validation"
("training" is accepted).  The raw reader takes the CALVIN split directory
holding training/ and validation/ (or one of those folders) and gives the same
output, reading episode_XXXXXXX.npz files directly (slow; for small data such as
calvin_debug_dataset or the fake data of make_fake.py).

Pipeline (Grain Dataset API):
    MapDataset.range(num_windows)            window i starts at frame record i
      .shuffle(seed)                         train only; reshuffled every epoch
      .repeat(num_epochs)                    None = forever (train default), 1 (validation)
      .random_map(draw shifts)               train + augment only: one (dy, dx) per camera,
                                             drawn from the GLOBAL index (same augmentation
                                             whatever shard_count is)
      [shard_index::shard_count]             per-JAX-process shard (disjoint)
      .map(read window + apply shift + tokens)
      .to_iter_dataset(ReadOptions(read_threads))
      .batch(batch_size, drop_remainder)
      .mp_prefetch(worker_count)             worker processes, if worker_count > 0

Windows: a window may start at any frame of an annotated segment (so there are
as many windows as frames); it holds seq_len consecutive frames of that segment
and is right-padded past the segment end (step_mask 0, zero images, zero arm
state, gripper one-hot "closed" [1, 0], zero actions).  Action chunk K: step t
holds rel_actions of frames t .. t+K-1 of the same segment, action_mask 0 past
its end (and for padded steps).  The video target of step t is frame t+3 of
the same window; the loss does that shift, the batch holds the L frames.

Output (per batch; see data_pipelines/batch_spec.py):
    step_mask f32 (B,L), language_tokens i32 (B,77), rgb_static u8 (B,L,200,200,3),
    rgb_gripper u8 (B,L,84,84,3), arm_state f32 (B,L,6) = robot_obs[0:6],
    gripper_state f32 (B,L,2) = one-hot((robot_obs[14]+1)/2), arm_action f32 (B,L,K,6)
    = rel_actions[0:6], gripper_action f32 (B,L,K) = (rel_actions[6]+1)/2,
    action_mask f32 (B,L,K); trace fields frame_id i32 (B,L) (global CALVIN frame id,
    -1 when padded) and segment_id i32 (B,) (index in auto_lang_ann.npy).
    With pretrain_video_only=True: step_mask, language_tokens, rgb_static (+ trace).
Images stay uint8 at native resolution: resize to 224 and ImageNet normalisation
run on device in the jitted step.  Augmentation (train): GR-1's random shift,
replicate pad 10 px (static) / 4 px (wrist) then a random crop back, the same
shift for every frame of a window, independent per camera.

Frame reuse (frame_reuse = W > 0, data_pipelines/frame_reuse.py): elements are segments
instead of windows, i.e. windows of S = seq_len + W - 1 steps read by the same code;
their starts tile every annotated segment in chunks of W (first frame + 0, W, 2W, ...),
and MapDataset.range runs over those starts instead of every record. The random shift
is then one per segment and camera. Steps w .. w+seq_len-1 of a segment are exactly the
window starting at its frame w (or all padding past the annotated segment's end).

Determinism: the output is a pure function of (data, seed, shard_index,
shard_count, worker_count, batch_size): shuffling and augmentation are keyed by
the seed and the element index, and Grain keeps the order with threads and
worker processes.  (worker_count changes which windows share a batch, because
each worker batches its own slice.)  Iterator state: `it.get_state()` /
`it.set_state()`, or Orbax `grain.checkpoint.CheckpointSave(it)` /
`CheckpointRestore(it)`; a restored iterator yields the same next batches.

Record access: converted splits are read with ArrayRecordReader directly (file
list and segment table from TFDS's dataset_info.json / metadata.json, records
parsed with TFDS's tf.train.Example proto).  Same bytes as
``tfds.builder_from_directory(dir).as_data_source(split)`` but ~10x less
overhead per record than TFDS's generic deserialiser (0.6 ms vs 5.5 ms for 10).
JPEG decoding is about two thirds of the CPU time per window, hence
data_pipelines.image_codec (simplejpeg, 2x less CPU than Pillow, same pixels).
"""
from __future__ import annotations

import bisect
import dataclasses
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import grain
import numpy as np
from array_record.python import array_record_module
# Imported here, in the importing thread: a first import from several Grain
# reader threads at once deadlocks on TFDS's lazy-import locks (seen in workers).
from tensorflow_datasets.proto import tf_example_pb2

from data_pipelines import batch_spec as bs
from data_pipelines import frame_reuse as reuse
from data_pipelines import random_shift
from data_pipelines.calvin import encoding as enc
from data_pipelines.calvin import raw
from data_pipelines.errors import DataError, DataNotFoundError

NAME = "calvin_gr1"
VERSION = "1.0.0"
STATIC_SHAPE = (200, 200, 3)
GRIPPER_SHAPE = (84, 84, 3)
FRAME_ID = "frame_id"      # trace: int32 (B, L), global CALVIN frame id, -1 = padding
SEGMENT_ID = "segment_id"  # trace: int32 (B,), annotation index in auto_lang_ann.npy
_OPEN_LOCK = threading.Lock()
_EXAMPLE = tf_example_pb2.Example  # resolve TFDS's lazy module now, not in reader threads


def _tfds_split(split: str) -> str:
  names = {"train": "train", "training": "train", "validation": "validation", "val": "validation"}
  if split not in names:
    raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
  return names[split]


@dataclasses.dataclass(frozen=True)
class SegmentTable:
  """Annotated segments of a split in record order (record r of the split's frame list)."""
  segment_id: np.ndarray   # int64 (S,) annotation index in auto_lang_ann.npy
  start: np.ndarray        # int64 (S,) first frame id
  num_frames: np.ndarray   # int64 (S,)
  first_record: np.ndarray  # int64 (S,) index of the segment's first frame record
  tasks: tuple[str, ...]
  instructions: tuple[str, ...]

  @classmethod
  def from_rows(cls, rows: Sequence[dict]) -> "SegmentTable":
    first, records = [], 0
    for row in rows:
      first.append(records)
      records += int(row["num_frames"])
    col = lambda k: np.array([int(r[k]) for r in rows], np.int64)
    return cls(col("segment_id"), col("start"), col("num_frames"), np.array(first, np.int64),
               tuple(r["task"] for r in rows), tuple(r["instruction"] for r in rows))

  @property
  def num_records(self) -> int:
    return int(self.first_record[-1] + self.num_frames[-1]) if len(self.first_record) else 0

  def locate(self, record: int) -> tuple[int, int]:
    """record index -> (row in this table, frame offset inside the segment)."""
    if not 0 <= record < self.num_records:
      raise IndexError(f"record {record} outside 0..{self.num_records - 1}")
    row = bisect.bisect_right(self.first_record, record) - 1
    return row, record - int(self.first_record[row])

# The command that writes a converted dataset (data_pipelines/calvin/convert.py); messages
# that tell the user to convert name it, and a test runs it as written.
CONVERT_COMMAND = "python -m data_pipelines.calvin.convert"


class ConvertedFrames:
  """Frame records of one split of a converted dataset (see builder.py), random access."""

  def __init__(self, data_dir: str | os.PathLike, split: str, *, config: str = "jpeg"):
    self.split = _tfds_split(split)
    self.path = resolve_dataset_dir(data_dir, config)
    info = json.loads((self.path / "dataset_info.json").read_text())
    meta = json.loads((self.path / "metadata.json").read_text())
    splits = {s["name"]: s for s in info.get("splits", [])}
    if self.split not in splits or self.split not in meta:
      raise DataError(f"{self.path}: split {self.split!r} was not converted (has {sorted(splits)})")
    template = info.get("fileFormat", "array_record")
    if template != "array_record":
      raise DataError(f"{self.path}: file format {template!r}, expected array_record")
    lengths = [int(n) for n in splits[self.split]["shardLengths"]]
    num = len(lengths)
    self.paths = [str(self.path / f"{NAME}-{self.split}.array_record-{i:05d}-of-{num:05d}")
                  for i in range(num)]
    for p in self.paths:
      if not os.path.isfile(p):
        raise DataNotFoundError(f"{p}: shard listed in {self.path / 'dataset_info.json'} is missing")
    self.shard_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    self.table = SegmentTable.from_rows(meta[self.split]["segments"])
    if self.table.num_records != self.shard_starts[-1]:
      raise DataError(f"{self.path}: metadata.json lists {self.table.num_records} frame records for "
                      f"{self.split!r}, the shards hold {self.shard_starts[-1]}")
    self._readers = None  # per process: opened on first read

  def __len__(self) -> int:
    return self.table.num_records

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_readers"] = None  # readers and locks are re-created in each process
    return state

  def _reader(self, shard: int):
    with _OPEN_LOCK:
      if self._readers is None:
        self._readers = [(None, threading.Lock()) for _ in self.paths]
      reader, lock = self._readers[shard]
      if reader is None:
        reader = array_record_module.ArrayRecordReader(self.paths[shard], "readahead_buffer_size:0")
        self._readers[shard] = (reader, lock)
    return reader, lock

  def _raw_records(self, start: int, count: int) -> list[bytes]:
    out = []
    end = start + count
    while start < end:
      shard = int(np.searchsorted(self.shard_starts, start, side="right") - 1)
      stop = min(end, int(self.shard_starts[shard + 1]))
      reader, lock = self._reader(shard)
      base = int(self.shard_starts[shard])
      with lock:
        out.extend(reader.read(start - base, stop - base))
      start = stop
    return out

  def read(self, start: int, count: int, num_images: int, cameras: Sequence[str]) -> dict:
    """Records start .. start+count-1; images decoded for the first num_images only."""
    robot_obs = np.empty((count, 15), np.float32)
    rel_actions = np.empty((count, 7), np.float32)
    frame_id = np.empty(count, np.int64)
    images = {c: [] for c in cameras}
    for i, record in enumerate(self._raw_records(start, count)):
      feature = _EXAMPLE.FromString(record).features.feature
      robot_obs[i] = feature["robot_obs"].float_list.value
      rel_actions[i] = feature["rel_actions"].float_list.value
      frame_id[i] = feature["frame_id"].int64_list.value[0]
      if i < num_images:
        for c in cameras:
          images[c].append(enc.decode_image(feature[c].bytes_list.value[0]))
    return {"robot_obs": robot_obs, "rel_actions": rel_actions, "frame_id": frame_id, **images}


class RawFrames:
  """Frames of a raw CALVIN split folder, read from episode_XXXXXXX.npz (no conversion).

  Folder-level checks (annotations, missing episode files) run here, once; frame
  contents are checked when read and raise CalvinDataError naming the file.
  """

  def __init__(self, folder: str | os.PathLike, *, on_bad: str = "raise"):
    self.folder = Path(folder)
    split = raw.load_split(self.folder, on_bad=on_bad)
    self.skipped = split.skipped
    self.table = SegmentTable.from_rows([
        {"segment_id": s.segment_id, "start": s.start, "num_frames": s.num_frames,
         "task": s.task, "instruction": s.instruction} for s in split.segments])

  def __len__(self) -> int:
    return self.table.num_records

  def read(self, start: int, count: int, num_images: int, cameras: Sequence[str]) -> dict:
    row, offset = self.table.locate(start)
    first_frame = int(self.table.start[row]) + offset
    out = {"robot_obs": np.empty((count, 15), np.float32),
           "rel_actions": np.empty((count, 7), np.float32),
           "frame_id": np.arange(first_frame, first_frame + count, dtype=np.int64),
           **{c: [] for c in cameras}}
    for i in range(count):
      keys = ("robot_obs", "rel_actions") + (tuple(cameras) if i < num_images else ())
      frame = raw.read_frame(self.folder, first_frame + i, keys)
      out["robot_obs"][i] = frame["robot_obs"]
      out["rel_actions"][i] = frame["rel_actions"]
      for c in cameras if i < num_images else ():
        out[c].append(frame[c])
    return out


def resolve_dataset_dir(data_dir: str | os.PathLike, config: str = "jpeg") -> Path:
  """Accepts DATA_DIR (TFDS root) or the calvin_gr1/<config>/<version> dir itself."""
  data_dir = Path(data_dir)
  for candidate in (data_dir, data_dir / NAME / config / VERSION):
    if (candidate / "dataset_info.json").is_file() and (candidate / "metadata.json").is_file():
      return candidate
  expected = data_dir / NAME / config / VERSION
  unfinished = sorted((data_dir / NAME / config).glob(f"incomplete.*_{VERSION}"))
  hint = (f"; {unfinished[0]} is an unfinished conversion, re-run the converter to finish it"
          if unfinished else "")
  raise DataNotFoundError(
      f"no converted CALVIN dataset at {data_dir} (expected {expected}/dataset_info.json and "
      f"metadata.json); create it with `{CONVERT_COMMAND} --src CALVIN_SPLIT --data_dir {data_dir}`{hint}")


class _DrawShifts(grain.transforms.RandomMap):
  """record index -> (record index, [dy_static, dx_static, dy_gripper, dx_gripper])."""

  def __init__(self, cameras: Sequence[str]):
    self.cameras = tuple(cameras)

  def random_map(self, record, rng: np.random.Generator):
    shifts = [random_shift.sample_shift(rng, random_shift.STATIC_PAD)]
    if bs.RGB_GRIPPER in self.cameras:
      shifts.append(random_shift.sample_shift(rng, random_shift.GRIPPER_PAD))
    return int(record), np.array(shifts, np.int64).reshape(-1)


class _SegmentStart(grain.transforms.Map):
  """segment index -> its first record (frame_reuse)."""

  def __init__(self, starts: np.ndarray):
    self.starts = starts

  def map(self, index):
    return int(self.starts[int(index)])


class _ReadWindow(grain.transforms.Map):
  """(record[, shifts]) -> one GR-1 window (unbatched), see the module docstring."""

  def __init__(self, frames, seq_len: int, action_chunk: int, tokens: np.ndarray,
               video_only: bool, image_shapes=None, robot=None):
    self.frames = frames
    self.seq_len = seq_len
    self.action_chunk = action_chunk
    self.tokens = tokens
    self.video_only = video_only
    self.cameras = (bs.RGB_STATIC,) if video_only else (bs.RGB_STATIC, bs.RGB_GRIPPER)
    self.image_shapes = dict(image_shapes or {bs.RGB_STATIC: STATIC_SHAPE, bs.RGB_GRIPPER: GRIPPER_SHAPE})
    self.robot = robot or calvin_robot

  def map(self, element):
    if isinstance(element, tuple):
      record, shifts = element
    else:
      record, shifts = int(element), None
    table = self.frames.table
    length, chunk = self.seq_len, self.action_chunk
    row, offset = table.locate(record)
    remaining = int(table.num_frames[row]) - offset
    n_valid = min(length, remaining)
    n_read = n_valid if self.video_only else min(length + chunk - 1, remaining)
    data = self.frames.read(record, n_read, n_valid, self.cameras)

    step_mask = np.zeros(length, np.float32)
    step_mask[:n_valid] = 1.0
    frame_id = np.full(length, -1, np.int32)
    frame_id[:n_valid] = data["frame_id"][:n_valid]
    out = {bs.STEP_MASK: step_mask,
           bs.LANGUAGE_TOKENS: self.tokens[row],
           FRAME_ID: frame_id,
           SEGMENT_ID: np.int32(table.segment_id[row])}
    for i, camera in enumerate(self.cameras):
      shape = tuple(self.image_shapes[camera])
      images = np.zeros((length,) + shape, np.uint8)
      for t, image in enumerate(data[camera]):
        if image.shape != shape:
          raise ValueError(f"record {record + t} of {table.tasks[row]!r}: {camera} has shape "
                           f"{image.shape}, expected {shape}")
        images[t] = image
      if shifts is not None:
        pad = random_shift.STATIC_PAD if camera == bs.RGB_STATIC else random_shift.GRIPPER_PAD
        images[:n_valid] = random_shift.apply_shift(images[:n_valid], pad,
                                                     (int(shifts[2 * i]), int(shifts[2 * i + 1])))
      out[camera] = images
    if self.video_only:
      return out

    robot = self.robot(data)
    arm_state = np.zeros((length, robot["arm_state"].shape[1]), np.float32)
    arm_state[:n_valid] = robot["arm_state"][:n_valid]
    gripper_state = np.zeros((length, 2), np.float32)
    gripper_state[:, 0] = 1.0  # "closed" one-hot for padding
    is_open = robot["gripper_open"][:n_valid]
    gripper_state[:n_valid, 0] = ~is_open
    gripper_state[:n_valid, 1] = is_open
    # action (t, k) = action of frame t + k of the window, valid while t is a real step
    # and t + k is still inside the segment.
    idx = np.arange(length)[:, None] + np.arange(chunk)[None, :]
    valid = (np.arange(length)[:, None] < n_valid) & (idx < n_read)
    take = np.minimum(idx, n_read - 1)
    arm_action, gripper_action = robot["arm_action"][take], robot["gripper_action"][take]  # (L, K, 6), (L, K)
    out[bs.ARM_STATE] = arm_state
    out[bs.GRIPPER_STATE] = gripper_state
    out[bs.ARM_ACTION] = np.where(valid[..., None], arm_action, 0.0).astype(np.float32)
    out[bs.GRIPPER_ACTION] = np.where(valid, gripper_action, 0.0).astype(np.float32)
    out[bs.ACTION_MASK] = valid.astype(np.float32)
    return out


def calvin_robot(data: dict) -> dict:
  """CALVIN frames -> the robot arrays of a window (per frame read): arm_state (n, 6) =
  robot_obs[0:6], gripper_open (n,) bool = robot_obs[14] > 0, arm_action (n, 6) =
  rel_actions[0:6], gripper_action (n,) = rel_actions[6] > 0 as 0/1.  Other sources
  (data_pipelines/lerobot) pass their own mapping to calvin_windows(robot=...)."""
  robot_obs, rel = data["robot_obs"], data["rel_actions"]
  return {"arm_state": robot_obs[:, :6], "gripper_open": robot_obs[:, 14] > 0,
          "arm_action": rel[:, :6], "gripper_action": (rel[:, 6] > 0).astype(np.float32)}


def _seeds(seed: int) -> tuple[int, int]:
  shuffle_seed, augment_seed = np.random.SeedSequence(seed).generate_state(2)
  return int(shuffle_seed), int(augment_seed)


def tokenize_instructions(instructions: Sequence[str]) -> np.ndarray:
  """CLIP token ids (N, 77) int32 of each distinct instruction, computed once."""
  from gr1_jax.tokenizer import tokenize  # pylint: disable=import-outside-toplevel
  unique = sorted(set(instructions))
  if not unique:
    return np.zeros((0, 77), np.int32)
  ids = dict(zip(unique, tokenize(unique, context_length=77, truncate=True)))
  return np.stack([ids[s] for s in instructions]).astype(np.int32)


def calvin_windows(frames, *, seq_len: int = 10, action_chunk: int = 1, seed: int = 0,
                   shuffle: bool = True, augment: bool = True, num_epochs: int | None = None,
                   shard_index: int = 0, shard_count: int = 1,
                   pretrain_video_only: bool = False, image_shapes=None,
                   robot=None, frame_reuse: int = 0) -> grain.MapDataset:
  """Unbatched windows of a frame source (ConvertedFrames or RawFrames) as a MapDataset.

  Order: range -> shuffle -> repeat -> (draw shifts) -> shard -> read window.
  Any frame source with a SegmentTable `table` and `read(start, count, num_images,
  cameras)` works (data_pipelines/lerobot): image_shapes {camera: (H, W, 3)} replaces
  CALVIN's 200x200 / 84x84, robot(data) -> dict (see calvin_robot) CALVIN's state/action
  mapping.
  frame_reuse = W > 0: segments of seq_len + W - 1 steps holding W windows each (see the
  module docstring and data_pipelines/frame_reuse.py); order range(segments) -> shuffle ->
  repeat -> first record -> (draw shifts) -> shard -> read segment.
  """
  if seq_len < 1 or action_chunk < 1:
    raise ValueError(f"seq_len ({seq_len}) and action_chunk ({action_chunk}) must be >= 1")
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, shard_count={shard_count})")
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f"num_epochs must be None (forever) or >= 1, got {num_epochs}")
  if frame_reuse < 0:
    raise ValueError(f"frame_reuse must be 0 (per-window) or the windows per segment, got {frame_reuse}")
  starts = None
  if frame_reuse:
    starts = reuse.chunk_starts(frames.table.first_record, frames.table.num_frames, frame_reuse)
  num_windows = len(frames) if starts is None else len(starts)
  if num_windows < shard_count:
    what = "windows" if starts is None else "segments"
    raise ValueError(f"{num_windows} {what} cannot be split into {shard_count} shards")
  shuffle_seed, augment_seed = _seeds(seed)
  tokens = tokenize_instructions(frames.table.instructions)
  ds = grain.MapDataset.range(num_windows)
  if shuffle:
    ds = ds.shuffle(seed=shuffle_seed)
  ds = ds.repeat(num_epochs)
  if starts is not None:
    ds = ds.map(_SegmentStart(starts))
    seq_len = reuse.segment_length(seq_len, frame_reuse)
  reader = _ReadWindow(frames, seq_len, action_chunk, tokens, pretrain_video_only, image_shapes, robot)
  if augment:
    ds = ds.random_map(_DrawShifts(reader.cameras), seed=augment_seed)
  if shard_count > 1:
    ds = ds[shard_index::shard_count]
  return ds.map(reader)


def batch_windows(windows: grain.MapDataset, *, batch_size: int, drop_remainder: bool = True,
                  worker_count: int = 0, read_threads: int = 2,
                  worker_buffer_size: int = 2) -> grain.IterDataset:
  """MapDataset of windows -> batched IterDataset, prefetched by threads / worker processes."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  read_options = grain.ReadOptions(num_threads=max(read_threads, 1),
                                   prefetch_buffer_size=max(2 * batch_size, 4))
  ds = windows.to_iter_dataset(read_options).batch(batch_size, drop_remainder=drop_remainder)
  if worker_count > 0:
    _ensure_absl_flags_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                     per_worker_buffer_size=worker_buffer_size))
  return ds


def _ensure_absl_flags_parsed() -> None:
  """Grain worker processes read absl flags; outside absl.app.run they are unparsed
  (UnparsedFlagAccessError).  Marks them parsed with their defaults in that case;
  a later absl.app.run / FLAGS(argv) still parses the command line normally."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _defaults(split: str, shuffle, augment, num_epochs, drop_remainder):
  train = _tfds_split(split) == "train"
  return (train if shuffle is None else shuffle, train if augment is None else augment,
          (None if train else 1) if num_epochs == "auto" else num_epochs,
          train if drop_remainder is None else drop_remainder)


def _make(frames, split, *, batch_size, seq_len, action_chunk, seed, shuffle, augment, num_epochs,
          shard_index, shard_count, worker_count, read_threads, drop_remainder, pretrain_video_only,
          frame_reuse=0):
  shuffle, augment, num_epochs, drop_remainder = _defaults(split, shuffle, augment, num_epochs,
                                                           drop_remainder)
  windows = calvin_windows(frames, seq_len=seq_len, action_chunk=action_chunk, seed=seed,
                           shuffle=shuffle, augment=augment, num_epochs=num_epochs,
                           shard_index=shard_index, shard_count=shard_count,
                           pretrain_video_only=pretrain_video_only, frame_reuse=frame_reuse)
  return batch_windows(windows, batch_size=batch_size, drop_remainder=drop_remainder,
                       worker_count=worker_count, read_threads=read_threads)


def make_calvin_dataset(data_dir: str | os.PathLike, split: str, *, batch_size: int,
                        config: str = "jpeg", seq_len: int = 10, action_chunk: int = 1,
                        seed: int = 0, shuffle: bool | None = None, augment: bool | None = None,
                        num_epochs: int | None | str = "auto", shard_index: int = 0,
                        shard_count: int = 1, worker_count: int = 0, read_threads: int = 2,
                        drop_remainder: bool | None = None,
                        pretrain_video_only: bool = False, frame_reuse: int = 0) -> grain.IterDataset:
  """Batched GR-1 windows from a converted split (see the module docstring).

  Defaults by split: "train" shuffles, augments, repeats forever and drops the
  last partial batch; "validation" keeps the fixed record order, no
  augmentation, one epoch, keeps the partial batch.  shard_index/shard_count:
  pass jax.process_index()/jax.process_count().  worker_count: Grain worker
  processes (0 = in-process, with `read_threads` reader threads).  frame_reuse = W > 0:
  batches of batch_size segments of seq_len + W - 1 steps, W windows each (module docstring).
  """
  return _make(ConvertedFrames(data_dir, split, config=config), split, batch_size=batch_size,
               seq_len=seq_len, action_chunk=action_chunk, seed=seed, shuffle=shuffle,
               augment=augment, num_epochs=num_epochs, shard_index=shard_index,
               shard_count=shard_count, worker_count=worker_count, read_threads=read_threads,
               drop_remainder=drop_remainder, pretrain_video_only=pretrain_video_only,
               frame_reuse=frame_reuse)


def raw_split_folder(calvin_dir: str | os.PathLike, split: str) -> Path:
  """CALVIN split dir + split name -> training/ or validation/ folder (or the folder itself)."""
  calvin_dir = Path(calvin_dir)
  folder_name = raw.SPLIT_FOLDERS[0] if _tfds_split(split) == "train" else raw.SPLIT_FOLDERS[1]
  if calvin_dir.name in raw.SPLIT_FOLDERS:
    return calvin_dir
  return calvin_dir / folder_name


def make_calvin_raw_dataset(calvin_dir: str | os.PathLike, split: str, *, batch_size: int,
                            on_bad: str = "raise", seq_len: int = 10, action_chunk: int = 1,
                            seed: int = 0, shuffle: bool | None = None,
                            augment: bool | None = None, num_epochs: int | None | str = "auto",
                            shard_index: int = 0, shard_count: int = 1, worker_count: int = 0,
                            read_threads: int = 2, drop_remainder: bool | None = None,
                            pretrain_video_only: bool = False, frame_reuse: int = 0) -> grain.IterDataset:
  """Like make_calvin_dataset, straight from a raw CALVIN split (no conversion).

  calvin_dir holds training/ and validation/ (e.g. calvin_debug_dataset); split
  picks the folder.  on_bad="skip" drops (counts, logs) annotations whose
  episode files are missing instead of raising.
  """
  frames = RawFrames(raw_split_folder(calvin_dir, split), on_bad=on_bad)
  return _make(frames, split, batch_size=batch_size, seq_len=seq_len, action_chunk=action_chunk,
               seed=seed, shuffle=shuffle, augment=augment, num_epochs=num_epochs,
               shard_index=shard_index, shard_count=shard_count, worker_count=worker_count,
               read_threads=read_threads, drop_remainder=drop_remainder,
               pretrain_video_only=pretrain_video_only, frame_reuse=frame_reuse)


def output_keys(pretrain_video_only: bool = False) -> tuple[str, ...]:
  """Model keys of the batches (trace keys FRAME_ID and SEGMENT_ID come on top)."""
  return bs.PRETRAIN_KEYS if pretrain_video_only else bs.FINETUNE_KEYS
