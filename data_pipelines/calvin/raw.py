"""Reading and validating raw CALVIN split folders (no JAX, no TFDS).

A CALVIN download (task_D_D, task_ABC_D, task_ABCD_D, calvin_debug_dataset) has
two folders, ``training/`` and ``validation/``, each holding

* ``episode_XXXXXXX.npz``: one file per frame (7-digit global frame id) with the
  keys of `EPISODE_SPEC` (rgb_static 200x200x3 uint8, rgb_gripper 84x84x3 uint8,
  actions / rel_actions (7,), robot_obs (15,), scene_obs (24,), depth and
  tactile arrays);
* ``lang_annotations/auto_lang_ann.npy``: a pickled dict
  ``{'language': {'ann': [str], 'task': [str], 'emb': array},
  'info': {'indx': [(start, end)], 'episodes': []}}`` whose ``indx`` entries are
  inclusive frame-id windows (the language-annotated *segments*, 65 frames in
  the real data);
* ``ep_start_end_ids.npy``: (N, 2) inclusive frame ids of the contiguous
  recordings; ``statistics.yaml``: normalisation statistics (not used by GR-1,
  read and checked when present).

`load_split` reads and checks the folder-level files; `read_frame` reads one
frame and checks the keys it returns.  Every problem raises `CalvinDataError`
(a ValueError) whose message names the file, the key/annotation and what was
expected.  With ``on_bad="skip"``, annotations whose frames are missing are
dropped instead, counted in `CalvinSplit.skipped` and logged.

Only GR-1's keys are checked when reading frames (`GR1_KEYS`); the depth and
tactile arrays are never decompressed.  Images must be uint8 with the exact
shape; vectors must have the exact shape and a floating dtype (cast to float32).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from data_pipelines import npz_reader
from data_pipelines.errors import DataError

log = logging.getLogger(__name__)

ANNOTATION_FILE = os.path.join("lang_annotations", "auto_lang_ann.npy")
EP_START_END_FILE = "ep_start_end_ids.npy"
STATISTICS_FILE = "statistics.yaml"
SPLIT_FOLDERS = ("training", "validation")

# key -> (shape, dtype kind): "u8" = exactly uint8, "f" = any float (cast to float32).
EPISODE_SPEC: dict[str, tuple[tuple[int, ...], str]] = {
    "rgb_static": ((200, 200, 3), "u8"),
    "rgb_gripper": ((84, 84, 3), "u8"),
    "rgb_tactile": ((160, 120, 6), "u8"),
    "depth_static": ((200, 200), "f"),
    "depth_gripper": ((84, 84), "f"),
    "depth_tactile": ((160, 120, 2), "f"),
    "actions": ((7,), "f"),
    "rel_actions": ((7,), "f"),
    "robot_obs": ((15,), "f"),
    "scene_obs": ((24,), "f"),
}
IMAGE_KEYS = ("rgb_static", "rgb_gripper")
VECTOR_KEYS = ("actions", "rel_actions", "robot_obs", "scene_obs")
GR1_KEYS = IMAGE_KEYS + VECTOR_KEYS

_EPISODE_RE = re.compile(r"^episode_(\d{7})\.npz$")


class CalvinDataError(DataError):
  """A raw CALVIN file is missing, unreadable or does not hold what CALVIN specifies."""


@dataclasses.dataclass(frozen=True)
class Segment:
  """One language-annotated window of a split folder.

  segment_id: position of the annotation in auto_lang_ann.npy (stable trace id).
  start, end: inclusive global frame ids (episode_{start:07d}.npz .. end).
  """
  segment_id: int
  start: int
  end: int
  task: str
  instruction: str

  @property
  def num_frames(self) -> int:
    return self.end - self.start + 1

  def frame_ids(self) -> range:
    return range(self.start, self.end + 1)


@dataclasses.dataclass
class CalvinSplit:
  """A checked split folder: the annotated segments to use and what was skipped."""
  folder: Path
  segments: list[Segment]
  skipped: list[tuple[int, str]]  # (segment_id, reason)
  available_frames: frozenset[int]
  ep_start_end_ids: np.ndarray | None
  statistics: dict | None

  @property
  def num_frames(self) -> int:
    return sum(s.num_frames for s in self.segments)


def episode_path(folder: str | os.PathLike, frame_id: int) -> Path:
  return Path(folder) / f"episode_{frame_id:07d}.npz"


def list_frame_ids(folder: str | os.PathLike) -> frozenset[int]:
  """Global frame ids of all episode_XXXXXXX.npz files in `folder`."""
  ids = set()
  with os.scandir(folder) as it:
    for entry in it:
      match = _EPISODE_RE.match(entry.name)
      if match:
        ids.add(int(match.group(1)))
  return frozenset(ids)


def load_annotations(folder: str | os.PathLike) -> list[Segment]:
  """Parses lang_annotations/auto_lang_ann.npy into segments (no frame checks)."""
  path = Path(folder) / ANNOTATION_FILE
  if not path.is_file():
    raise CalvinDataError(f"{path}: language annotation file not found (every CALVIN split "
                          f"folder has lang_annotations/auto_lang_ann.npy)")
  try:
    raw = np.load(path, allow_pickle=True)
  except Exception as e:  # pickle / zip / format errors all mean the same to the user
    raise CalvinDataError(f"{path}: cannot load ({type(e).__name__}: {e})") from e
  if isinstance(raw, np.ndarray) and raw.dtype == object and raw.size == 1:
    raw = raw.reshape(()).item()
  if not isinstance(raw, dict):
    raise CalvinDataError(f"{path}: expected a pickled dict with keys 'language' and 'info', "
                          f"got {type(raw).__name__}")
  try:
    language, info = raw["language"], raw["info"]
    anns, tasks, indx = language["ann"], language["task"], info["indx"]
  except (KeyError, TypeError) as e:
    raise CalvinDataError(f"{path}: missing key {e} (expected ['language']['ann'], "
                          f"['language']['task'] and ['info']['indx'])") from e
  if not len(anns) == len(tasks) == len(indx):
    raise CalvinDataError(f"{path}: ['language']['ann'] has {len(anns)} entries, "
                          f"['language']['task'] {len(tasks)}, ['info']['indx'] {len(indx)}; "
                          f"expected the same number")
  segments = []
  for i, (ann, task, window) in enumerate(zip(anns, tasks, indx)):
    window = np.asarray(window)
    if window.shape != (2,) or not np.issubdtype(window.dtype, np.integer):
      raise CalvinDataError(f"{path}: ['info']['indx'][{i}] = {window!r}; expected an inclusive "
                            f"(start, end) pair of integer frame ids")
    start, end = int(window[0]), int(window[1])
    if start < 0 or end < start:
      raise CalvinDataError(f"{path}: ['info']['indx'][{i}] = ({start}, {end}); expected "
                            f"0 <= start <= end")
    if not isinstance(ann, str) or not isinstance(task, str):
      raise CalvinDataError(f"{path}: annotation {i} has ann={ann!r}, task={task!r}; expected strings")
    segments.append(Segment(i, start, end, task, ann))
  return segments


def _load_statistics(folder: Path) -> dict | None:
  path = folder / STATISTICS_FILE
  if not path.is_file():
    log.warning("%s: not found (only informative for GR-1; continuing)", path)
    return None
  import yaml  # pylint: disable=import-outside-toplevel
  try:
    stats = yaml.safe_load(path.read_text())
  except yaml.YAMLError as e:
    raise CalvinDataError(f"{path}: malformed YAML ({e})") from e
  if not isinstance(stats, dict):
    raise CalvinDataError(f"{path}: expected a mapping with robot_obs / scene_obs / "
                          f"act_min_bound / act_max_bound, got {type(stats).__name__}")
  return stats


def _load_ep_start_end(folder: Path) -> np.ndarray | None:
  path = folder / EP_START_END_FILE
  if not path.is_file():
    log.warning("%s: not found; cannot check that annotations stay inside one recording", path)
    return None
  try:
    ids = np.load(path, allow_pickle=False)
  except Exception as e:
    raise CalvinDataError(f"{path}: cannot load ({type(e).__name__}: {e})") from e
  if ids.ndim != 2 or ids.shape[1] != 2 or not np.issubdtype(ids.dtype, np.integer):
    raise CalvinDataError(f"{path}: shape {ids.shape} dtype {ids.dtype}; expected (N, 2) integers")
  return ids


def load_split(folder: str | os.PathLike, *, on_bad: str = "raise") -> CalvinSplit:
  """Reads and checks one split folder (training/ or validation/).

  Checks: the folder exists; auto_lang_ann.npy parses; there is at least one
  annotation and one episode file; every frame of every annotation has its
  episode file (else CalvinDataError, or with on_bad="skip" the annotation is
  skipped, counted and logged); ep_start_end_ids.npy / statistics.yaml parse
  when present.  An annotation that straddles two recordings is only logged.
  Frame contents are checked later, when read (`read_frame`).
  """
  if on_bad not in ("raise", "skip"):
    raise ValueError(f"on_bad must be 'raise' or 'skip', got {on_bad!r}")
  folder = Path(folder)
  if not folder.is_dir():
    raise CalvinDataError(f"{folder}: split folder not found")
  segments = load_annotations(folder)
  ann_path = folder / ANNOTATION_FILE
  if not segments:
    raise CalvinDataError(f"{ann_path}: empty split, no language annotations")
  available = list_frame_ids(folder)
  if not available:
    raise CalvinDataError(f"{folder}: empty split, no episode_XXXXXXX.npz files")
  ep_ids = _load_ep_start_end(folder)
  statistics = _load_statistics(folder)
  lo, hi = min(available), max(available)
  kept, skipped = [], []
  for seg in segments:
    missing = [f for f in seg.frame_ids() if f not in available]
    if missing:
      reason = (f"{ann_path}: annotation {seg.segment_id} (task {seg.task!r}, frames "
                f"{seg.start}..{seg.end}) points outside the available frames: "
                f"{len(missing)} episode files missing, first {episode_path(folder, missing[0])} "
                f"(folder has frame ids {lo}..{hi}, {len(available)} files)")
      if on_bad == "raise":
        raise CalvinDataError(reason)
      log.warning("skipping: %s", reason)
      skipped.append((seg.segment_id, reason))
      continue
    if ep_ids is not None and not np.any((ep_ids[:, 0] <= seg.start) & (seg.end <= ep_ids[:, 1])):
      log.warning("%s: annotation %d (frames %d..%d) is not inside one recording of %s",
                  ann_path, seg.segment_id, seg.start, seg.end, folder / EP_START_END_FILE)
    kept.append(seg)
  if not kept:
    raise CalvinDataError(f"{folder}: empty split, all {len(segments)} annotations were skipped")
  return CalvinSplit(folder, kept, skipped, available, ep_ids, statistics)


def _check_array(path: Path, key: str, value: np.ndarray) -> np.ndarray:
  shape, kind = EPISODE_SPEC[key]
  if value.shape != shape:
    raise CalvinDataError(f"{path}: key {key!r} has shape {value.shape}, expected {shape}")
  if kind == "u8":
    if value.dtype != np.uint8:
      raise CalvinDataError(f"{path}: key {key!r} has dtype {value.dtype}, expected uint8")
    return value
  if not np.issubdtype(value.dtype, np.floating):
    raise CalvinDataError(f"{path}: key {key!r} has dtype {value.dtype}, expected float32")
  return value.astype(np.float32, copy=False)


def read_frame(folder: str | os.PathLike, frame_id: int,
               keys: Sequence[str] = GR1_KEYS) -> dict[str, np.ndarray]:
  """Loads `keys` of episode_{frame_id:07d}.npz, checking shape and dtype of each.

  Raises CalvinDataError naming the file for a missing/truncated/corrupt npz, a
  missing key or a wrong shape/dtype.
  """
  path = episode_path(folder, frame_id)
  try:
    with zipfile.ZipFile(path) as archive:   # npz_reader: np.load's header parsing is not thread-safe
      files = npz_reader.members(archive)
      absent = [k for k in keys if k not in files]
      if absent:
        raise CalvinDataError(f"{path}: missing key(s) {absent}; the file has {sorted(files)}")
      return {k: _check_array(path, k, npz_reader.read_member(archive, k)) for k in keys}
  except FileNotFoundError as e:
    raise CalvinDataError(f"{path}: episode file not found") from e
  except CalvinDataError:
    raise
  except (zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError, KeyError, TypeError) as e:
    raise CalvinDataError(f"{path}: cannot read npz, truncated or corrupt "
                          f"({type(e).__name__}: {e})") from e


def read_segment(folder: str | os.PathLike, segment: Segment,
                 keys: Sequence[str] = GR1_KEYS) -> Iterable[dict[str, np.ndarray]]:
  """Yields the checked frames of one segment, in frame order."""
  for frame_id in segment.frame_ids():
    yield read_frame(folder, frame_id, keys)
