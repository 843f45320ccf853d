"""Grain pipeline: a LeRobot dataset (v3.0 / v2.1, read directly) -> GR-1 batches (numpy, no JAX).

    spec = LeRobotSpec.from_config(config.data.lerobot)      # cameras, keys, arm/gripper mapping
    ds = make_lerobot_dataset("/data/libero", "train", spec, batch_size=32, seed=0,
                              shard_index=jax.process_index(), shard_count=jax.process_count())

The windows, padding, masks, shuffling, sharding, augmentation, batching and iterator
state are CALVIN's (data_pipelines/calvin/pipeline.py: calvin_windows, batch_windows),
fed by `LeRobotFrames`, so the batches have the same keys and the same contract
(data_pipelines/batch_spec.py): a window holds seq_len consecutive frames of ONE episode
(right-padded at its end, never crossing into the next), step t's action chunk holds the
actions of frames t .. t+K-1 of that episode; trace fields frame_id = LeRobot's global
`index` of each frame (-1 when padded) and segment_id = episode_index.

Mapping a robot onto GR-1's heads (LeRobotSpec; all configurable):
  rgb_static / rgb_gripper  the video features cameras.static / cameras.wrist, uint8 at the
                            video's resolution (resized on device like CALVIN's)
  arm_state                 state[arm_state_dims] (6 dims), normalised (see below)
  gripper_state             one-hot [state[gripper_state_dim] <= thr, > thr]
  arm_action                action[arm_action_dims] (6 dims), normalised
  gripper_action            1.0 if action[gripper_action_dim] > gripper_action_threshold else 0.0
  language_tokens           the task of the episode's first frame (meta/tasks)
Default: arm = the first 6 dims, gripper = the last dim thresholded at 0 (e.g. LIBERO's
7-D delta action with a -1/+1 gripper).  A robot whose arm is not 6-D (joint space of a
5-DoF arm, a quaternion pose) needs its own 6-D choice of dims.

Normalisation (gr1_jax/norm_stats.py): mode none | mean_std | quantile of the arm dims,
from the statistics file written by `python -m data_pipelines.lerobot.stats` (default
<dataset>/meta/gr1_stats.json); the training loop stores them in every checkpoint and
GR1Policy un-normalises with them.

Splits: LeRobot datasets have none; "validation" = the last `val_episodes` episodes,
"train" = the others (val_episodes=0: both use every episode).

Video: per window and camera one seek + a short decode (data_pipelines/lerobot/video.py),
at the frames' `timestamp` (+ the episode's from_timestamp in v3.0 files), never a whole
episode.  Video-only (stage-1 layout) windows read the static camera only.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import grain
import numpy as np

from data_pipelines import batch_spec as bs
from data_pipelines.calvin import pipeline as windows_lib
from data_pipelines.errors import DataError, DataNotFoundError
from data_pipelines.lerobot import format as lr_format
from data_pipelines.lerobot.video import decode_frames
from gr1_jax import norm_stats as ns

STATS_FILE = "meta/gr1_stats.json"
STATS_COMMAND = "python -m data_pipelines.lerobot.stats"


@dataclasses.dataclass(frozen=True)
class LeRobotSpec:
  """config.data.lerobot as a value (experiments/configs/train_base.py lists the fields)."""
  static_camera: str = "observation.images.image"
  wrist_camera: str = "observation.images.wrist_image"
  state: str = "observation.state"
  action: str = "action"
  arm_state_dims: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
  gripper_state_dim: int = -1
  gripper_state_threshold: float = 0.0
  arm_action_dims: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
  gripper_action_dim: int = -1
  gripper_action_threshold: float = 0.0
  gripper_action_values: tuple[float, float] = (-1.0, 1.0)
  normalization: str = "mean_std"
  stats_file: str = ""
  val_episodes: int = 1
  tolerance_s: float = 1e-4

  @classmethod
  def from_config(cls, c: Mapping) -> "LeRobotSpec":
    c = dict(c)
    cams = dict(c.pop("cameras", {}))
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(c) - fields)
    if unknown:
      raise ValueError(f"unknown key config.data.lerobot.{unknown[0]}")
    for name in ("arm_state_dims", "arm_action_dims", "gripper_action_values"):
      if name in c:
        c[name] = tuple(c[name])
    return cls(static_camera=cams.get("static", cls.static_camera),
               wrist_camera=cams.get("wrist", cls.wrist_camera), **c)

  def stats_path(self, root) -> Path:
    return Path(self.stats_file) if self.stats_file else Path(root) / STATS_FILE


def load_norm_stats(root, spec: LeRobotSpec, data: lr_format.LeRobotData | None = None) -> ns.NormStats:
  """The NormStats of a dataset and spec: the mapping, plus the arm dims' statistics from the
  stats file unless the mode is none."""
  if data is None:
    data = lr_format.open_dataset(root, [spec.state, spec.action])

  def vector(key, arm_dims, gripper_dim, threshold, stats):
    dim = data.feature_dim(key)
    for d in list(arm_dims) + [gripper_dim]:
      if not -dim <= d < dim:
        raise DataError(f"{root}: dim {d} of {key!r} does not exist (it has {dim} dims); "
                        "fix config.data.lerobot's dims")
    chosen = ns.select_stats(stats[key], arm_dims) if stats is not None else {}
    return ns.VectorMap(key=key, dim=dim, arm_dims=tuple(arm_dims), gripper_dim=gripper_dim % dim,
                        gripper_threshold=float(threshold), stats=chosen)

  stats, source = None, ""
  if spec.normalization != "none":
    path = spec.stats_path(root)
    stats = read_stats_file(path, [spec.state, spec.action], root)
    source = str(path)
  return ns.NormStats(
      mode=spec.normalization,
      state=vector(spec.state, spec.arm_state_dims, spec.gripper_state_dim, spec.gripper_state_threshold, stats),
      action=vector(spec.action, spec.arm_action_dims, spec.gripper_action_dim, spec.gripper_action_threshold,
                    stats),
      gripper_values=tuple(spec.gripper_action_values), source=source)


def read_stats_file(path: Path, keys: Sequence[str], root) -> dict:
  import json  # pylint: disable=import-outside-toplevel
  if not Path(path).is_file():
    raise DataNotFoundError(f"no normalisation statistics at {path}; compute them once with "
                            f"`{STATS_COMMAND} --dataset {root}` (or set config.data.lerobot.normalization='none')")
  stats = json.loads(Path(path).read_text()).get("keys", {})
  for key in keys:
    if key not in stats or any(n not in stats[key] for n in ns.STAT_NAMES):
      raise DataError(f"{path} has no statistics {', '.join(ns.STAT_NAMES)} of {key!r}; re-run "
                      f"`{STATS_COMMAND} --dataset {root}`")
  return stats


def _split_episodes(episodes: list, split: str, val_episodes: int) -> list:
  names = {"train": "train", "training": "train", "validation": "validation", "val": "validation"}
  if split not in names:
    raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
  if val_episodes <= 0:
    return list(episodes)
  if val_episodes >= len(episodes):
    raise DataError(f"config.data.lerobot.val_episodes={val_episodes} leaves no training episode "
                    f"(the dataset has {len(episodes)})")
  return list(episodes[-val_episodes:]) if names[split] == "validation" else list(episodes[:-val_episodes])


class LeRobotFrames:
  """Frames of some episodes of a LeRobot dataset as a frame source of calvin_windows."""

  def __init__(self, root: str | os.PathLike, spec: LeRobotSpec, split: str = "train", *,
               video_only: bool = False):
    self.root = Path(root)
    self.spec = spec
    self.video_only = video_only
    numeric = [] if video_only else [spec.state, spec.action]
    cameras = {bs.RGB_STATIC: spec.static_camera}
    if not video_only:
      cameras[bs.RGB_GRIPPER] = spec.wrist_camera
    self.cameras = cameras
    data = lr_format.open_dataset(self.root, numeric, list(cameras.values()))
    self.fps = data.fps
    self.image_shapes = {cam: _image_shape(data.features[key], key) for cam, key in cameras.items()}
    self.norm = None if video_only else load_norm_stats(self.root, spec, data)
    self.episodes = _split_episodes(data.episodes, split, spec.val_episodes)
    self.arrays = data.arrays
    self.table = windows_lib.SegmentTable.from_rows([
        {"segment_id": e.index, "start": int(data.arrays["index"][e.first_row]), "num_frames": e.length,
         "task": e.task, "instruction": e.task} for e in self.episodes])

  def __len__(self) -> int:
    return self.table.num_records

  def read(self, start: int, count: int, num_images: int, cameras: Sequence[str]) -> dict:
    row, offset = self.table.locate(start)
    episode = self.episodes[row]
    rows = episode.first_row + offset + np.arange(count)
    out = {"frame_id": self.arrays["index"][rows].astype(np.int64)}
    if not self.video_only:
      out["state"], out["action"] = self.arrays[self.spec.state][rows], self.arrays[self.spec.action][rows]
    for cam in cameras:
      if num_images == 0:
        out[cam] = []
        continue
      path, from_timestamp = episode.videos[self.cameras[cam]]
      times = self.arrays["timestamp"][rows[:num_images]].astype(np.float64) + from_timestamp
      out[cam] = decode_frames(path, times, tolerance_s=self.spec.tolerance_s)
    return out

  def robot(self, data: dict) -> dict:
    """calvin_windows' robot mapping (see the module docstring)."""
    norm = self.norm
    state, action = data["state"], data["action"]
    return {"arm_state": norm.normalise_arm_state(norm.state.arm(state)),
            "gripper_open": norm.state.gripper_above(state),
            "arm_action": norm.normalise_arm_action(norm.action.arm(action)),
            "gripper_action": norm.action.gripper_above(action).astype(np.float32)}


def _image_shape(feature: Mapping, key: str) -> tuple[int, int, int]:
  shape = list(feature.get("shape", []))
  names = list(feature.get("names") or [])
  if len(shape) != 3:
    raise DataError(f"video feature {key!r} has shape {shape}, expected (height, width, channels)")
  if names[:3] == ["channels", "height", "width"]:
    shape = shape[1:] + shape[:1]
  if shape[2] != 3:
    raise DataError(f"video feature {key!r} has shape {feature.get('shape')} (names {names}); expected RGB")
  return tuple(int(s) for s in shape)


def lerobot_windows(frames: LeRobotFrames, *, seq_len: int = 10, action_chunk: int = 1, seed: int = 0,
                    shuffle: bool = True, augment: bool = True, num_epochs: int | None = None,
                    shard_index: int = 0, shard_count: int = 1) -> grain.MapDataset:
  """Unbatched windows (calvin_windows on LeRobot frames); video-only frames -> video-only windows."""
  return windows_lib.calvin_windows(
      frames, seq_len=seq_len, action_chunk=action_chunk, seed=seed, shuffle=shuffle, augment=augment,
      num_epochs=num_epochs, shard_index=shard_index, shard_count=shard_count,
      pretrain_video_only=frames.video_only, image_shapes=frames.image_shapes,
      robot=None if frames.video_only else frames.robot)


def make_lerobot_dataset(root: str | os.PathLike, split: str, spec: LeRobotSpec | None = None, *,
                         batch_size: int, seq_len: int = 10, action_chunk: int = 1, seed: int = 0,
                         shuffle: bool | None = None, augment: bool | None = None,
                         num_epochs: int | None | str = "auto", shard_index: int = 0, shard_count: int = 1,
                         worker_count: int = 0, read_threads: int = 2, drop_remainder: bool | None = None,
                         pretrain_video_only: bool = False) -> grain.IterDataset:
  """Batched GR-1 windows of a LeRobot dataset; defaults by split as make_calvin_dataset's."""
  frames = LeRobotFrames(root, spec or LeRobotSpec(), split, video_only=pretrain_video_only)
  shuffle, augment, num_epochs, drop_remainder = windows_lib._defaults(  # pylint: disable=protected-access
      split, shuffle, augment, num_epochs, drop_remainder)
  windows = lerobot_windows(frames, seq_len=seq_len, action_chunk=action_chunk, seed=seed, shuffle=shuffle,
                            augment=augment, num_epochs=num_epochs, shard_index=shard_index,
                            shard_count=shard_count)
  return windows_lib.batch_windows(windows, batch_size=batch_size, drop_remainder=drop_remainder,
                                   worker_count=worker_count, read_threads=read_threads)
