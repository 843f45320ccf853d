"""LeRobot's on-disk dataset format, read directly (no `lerobot` import): v3.0 and v2.1.

A LeRobot dataset root holds

  meta/info.json     codebase_version ("v3.0" / "v2.1"), fps, features {key: {dtype, shape, ...}},
                     data_path and video_path templates, chunks_size, total_episodes, ...
  data/...parquet    one row per frame: the numeric features (e.g. observation.state, action,
                     float32 lists) + timestamp, frame_index, episode_index, index, task_index
  videos/...mp4      one video stream per camera feature (dtype "video")
  tasks              v3.0: meta/tasks.parquet (task string as the pandas index, column task_index)
                     v2.1: meta/tasks.jsonl ({"task_index", "task"} per line)
  episodes           v3.0: meta/episodes/chunk-*/file-*.parquet, one row per episode: length,
                     tasks, dataset_from_index / dataset_to_index (global frame rows),
                     data/chunk_index + data/file_index, and per camera
                     videos/<key>/chunk_index, file_index, from_timestamp, to_timestamp: many
                     episodes share one data file and one video file, an episode's frames
                     start at from_timestamp in its video
                     v2.1: meta/episodes.jsonl ({"episode_index", "tasks", "length"}); one data
                     file and one video per episode (chunk = episode_index // chunks_size),
                     every video starts at 0

`open_dataset(root, numeric_keys)` reads the metadata and the requested numeric columns
of every frame into memory (a few bytes per frame and dimension), in global frame order;
video frames are decoded per window later (data_pipelines/lerobot/video.py).  Problems
raise DataError / DataNotFoundError naming the file and the key.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from data_pipelines.errors import DataError, DataNotFoundError

INFO = "meta/info.json"
SUPPORTED_VERSIONS = ("v2.1", "v3.0")
# Columns every LeRobot data file has (besides the features).
FRAME_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


@dataclasses.dataclass(frozen=True)
class Episode:
  index: int            # episode_index
  length: int           # frames
  first_row: int        # row of its first frame in LeRobotData.arrays (global frame order)
  task: str             # its first task (the instruction of its windows)
  videos: dict          # camera key -> (video file Path, from_timestamp in s)


@dataclasses.dataclass
class LeRobotData:
  root: Path
  version: str
  fps: float
  features: dict
  episodes: list[Episode]
  arrays: dict          # column -> np.ndarray (num_frames, ...) in episode order
  tasks: dict           # task_index -> task string

  @property
  def num_frames(self) -> int:
    return sum(e.length for e in self.episodes)

  @property
  def camera_keys(self) -> list[str]:
    return [k for k, f in self.features.items() if f.get("dtype") == "video"]

  def feature_dim(self, key: str) -> int:
    shape = self.features[key].get("shape") or [1]
    return int(np.prod(shape))


def _read_json(path: Path) -> dict:
  if not path.is_file():
    raise DataNotFoundError(f"{path} does not exist (not a LeRobot dataset root?)")
  try:
    return json.loads(path.read_text())
  except ValueError as exc:
    raise DataError(f"{path} is not valid JSON: {exc}") from None


def _read_jsonl(path: Path) -> list[dict]:
  if not path.is_file():
    raise DataNotFoundError(f"{path} does not exist")
  rows = []
  for number, line in enumerate(path.read_text().splitlines(), 1):
    if line.strip():
      try:
        rows.append(json.loads(line))
      except ValueError as exc:
        raise DataError(f"{path} line {number} is not valid JSON: {exc}") from None
  return rows


def _read_table(path: Path, columns=None):
  if not path.is_file():
    raise DataNotFoundError(f"{path} does not exist")
  try:
    return pq.read_table(path, columns=columns)
  except (OSError, ValueError, KeyError) as exc:   # pyarrow: ArrowInvalid is a ValueError
    raise DataError(f"{path}: cannot read the parquet columns {columns or 'all'}: {exc}") from None


def _info_field(info: dict, key: str, path: Path):
  if key not in info:
    raise DataError(f"{path} has no key {key!r} (has {sorted(info)})")
  return info[key]


def read_info(root: str | Path) -> dict:
  root = Path(root)
  info = _read_json(root / INFO)
  version = _info_field(info, "codebase_version", root / INFO)
  if version not in SUPPORTED_VERSIONS:
    raise DataError(f"{root / INFO}: codebase_version {version!r} is not supported "
                    f"(supported: {', '.join(SUPPORTED_VERSIONS)})")
  for key in ("fps", "features", "data_path"):
    _info_field(info, key, root / INFO)
  return info


def _tasks(root: Path, version: str) -> dict[int, str]:
  if version == "v2.1":
    return {int(r["task_index"]): str(r["task"]) for r in _read_jsonl(root / "meta/tasks.jsonl")}
  table = _read_table(root / "meta/tasks.parquet").to_pydict()
  # pandas writes its named index as a column "task" (an unnamed one as __index_level_0__).
  name = next((c for c in ("task", "__index_level_0__") if c in table), None)
  if name is None or "task_index" not in table:
    raise DataError(f"{root / 'meta/tasks.parquet'} has no 'task' and 'task_index' columns "
                    f"(has {sorted(table)})")
  return {int(i): str(t) for t, i in zip(table[name], table["task_index"])}


def _episode_rows(root: Path, version: str) -> list[dict]:
  if version == "v2.1":
    rows = _read_jsonl(root / "meta/episodes.jsonl")
  else:
    files = sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet"))
    if not files:
      raise DataNotFoundError(f"{root / 'meta/episodes'} holds no chunk-*/file-*.parquet")
    rows = []
    for path in files:
      table = _read_table(path)
      keep = [c for c in table.column_names if not c.startswith("stats/")]
      rows += table.select(keep).to_pylist()
  rows.sort(key=lambda r: int(r["episode_index"]))
  return rows


def _column_array(table, key: str, path: Path) -> np.ndarray:
  column = table.column(key)
  try:
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype == object:   # list<float> columns: one array per row
      values = np.stack([np.asarray(v) for v in values]) if len(values) else np.zeros((0, 0))
  except (ValueError, TypeError) as exc:
    raise DataError(f"{path}: column {key!r} is not numeric: {exc}") from None
  return values


def _check_keys(info: dict, keys: Sequence[str], root: Path) -> None:
  features = info["features"]
  for key in keys:
    if key not in features:
      raise DataError(f"{root / INFO}: feature {key!r} does not exist (features: {', '.join(features)})")


def open_dataset(root: str | Path, numeric_keys: Sequence[str], camera_keys: Sequence[str] = ()) -> LeRobotData:
  """Metadata + the numeric columns `numeric_keys` of every frame (see the module docstring)."""
  root = Path(root)
  info = read_info(root)
  version = info["codebase_version"]
  _check_keys(info, list(numeric_keys) + list(camera_keys), root)
  for key in camera_keys:
    if info["features"][key].get("dtype") != "video":
      raise DataError(f"{root / INFO}: feature {key!r} has dtype {info['features'][key].get('dtype')!r}, "
                      "expected 'video' (image features stored in parquet are not supported)")
  if camera_keys and not info.get("video_path"):
    raise DataError(f"{root / INFO} has no video_path template")
  tasks = _tasks(root, version)
  rows = _episode_rows(root, version)
  if not rows:
    raise DataError(f"{root}: the dataset has no episodes")
  columns = list(dict.fromkeys(list(numeric_keys) + list(FRAME_COLUMNS)))
  chunks_size = int(info.get("chunks_size", 1000))

  def data_file(row) -> Path:
    if version == "v2.1":
      index = int(row["episode_index"])
      return root / info["data_path"].format(episode_chunk=index // chunks_size, episode_index=index)
    return root / info["data_path"].format(chunk_index=int(row["data/chunk_index"]),
                                           file_index=int(row["data/file_index"]))

  def video(row, key) -> tuple[Path, float]:
    if version == "v2.1":
      index = int(row["episode_index"])
      return root / info["video_path"].format(episode_chunk=index // chunks_size, video_key=key,
                                              episode_index=index), 0.0
    for field in ("chunk_index", "file_index", "from_timestamp"):
      if f"videos/{key}/{field}" not in row:
        raise DataError(f"{root / 'meta/episodes'}: no column 'videos/{key}/{field}' for camera {key!r}")
    path = root / info["video_path"].format(video_key=key, chunk_index=int(row[f"videos/{key}/chunk_index"]),
                                            file_index=int(row[f"videos/{key}/file_index"]))
    return path, float(row[f"videos/{key}/from_timestamp"])

  # Read each data file once; select each episode's rows by its episode_index column.
  by_file: dict[Path, dict] = {}
  parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}
  episodes, first = [], 0
  for row in rows:
    index = int(row["episode_index"])
    path = data_file(row)
    if path not in by_file:
      table = _read_table(path)
      missing = [c for c in columns if c not in table.column_names]
      if missing:
        raise DataError(f"{path} has no column {missing[0]!r} (has {', '.join(table.column_names)})")
      by_file[path] = {c: _column_array(table, c, path) for c in columns}
    data = by_file[path]
    rows_of = np.flatnonzero(data["episode_index"] == index)
    order = rows_of[np.argsort(data["frame_index"][rows_of], kind="stable")]
    length = int(row.get("length", len(order)))
    if len(order) != length:
      raise DataError(f"{path}: episode {index} has {len(order)} frames, the episodes metadata says {length}")
    for c in columns:
      parts[c].append(data[c][order])
    task_index = int(data["task_index"][order[0]]) if length else -1
    ep_tasks = row.get("tasks") or []
    task = tasks.get(task_index, ep_tasks[0] if ep_tasks else "")
    videos = {key: video(row, key) for key in camera_keys}
    for key, (vpath, _) in videos.items():
      if not vpath.is_file():
        raise DataNotFoundError(f"{vpath}: video of camera {key!r}, episode {index}, does not exist")
    episodes.append(Episode(index=index, length=length, first_row=first, task=task, videos=videos))
    first += length
  arrays = {c: np.concatenate(v) if v else np.zeros((0,)) for c, v in parts.items()}
  for key in numeric_keys:
    arrays[key] = arrays[key].astype(np.float32).reshape(len(arrays[key]), -1)
  return LeRobotData(root=root, version=version, fps=float(info["fps"]), features=dict(info["features"]),
                     episodes=episodes, arrays=arrays, tasks=tasks)
