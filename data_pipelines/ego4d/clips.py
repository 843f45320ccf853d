"""Which clips to cut and which source frames each clip holds.

Clip rule (Ego4D narrations)
----------------------------
A narration is a point in time t = `timestamp_sec`.  Its clip covers
[t - 1.5 s, t + 1.5 s) (CLIP_SECONDS = 3) and is sampled at SAMPLE_FPS = 10 frames/s:

    sample time   tau_k = (t - 1.5) + k / 10,          k = 0 .. 29
    source frame  i_k   = floor(tau_k * fps + 0.5)      (fps = the stream's average rate)

For Ego4D's 30 fps canonical videos this is every 3rd decoded frame (stride 3):
i_k = round(30 t) - 45 + 3 k.  Frames with i_k < 0 or past the last frame of the video
are dropped (the clip is clamped to the video, never shifted), so clips at the ends
of a video are shorter; clips with fewer than `min_frames` frames are skipped and
counted.  Frame time is pts * time_base relative to the stream's start_time.

Why 10 fps (stride 3) rather than GR-MG's 15 fps (stride 2 decoded frames):
  * 3 s at 10 fps = 30 stored frames; the loader's 10-frame window with the video
    target 3 steps ahead spans 13 frames = 1.2 s, so a clip offers 18 distinct window
    starts while the target stays 0.3 s in the future (GR-MG: 0.2 s; CALVIN
    fine-tuning at 30 Hz consecutive frames: 0.1 s).  Egocentric head motion is fast,
    so 0.3 s ahead is still predictable yet far enough to require modelling motion.
  * 10 = 30 / 3 exactly: no temporal resampling, and 1/3 less decoding/JPEG work and
    storage than 15 fps (about 24M frames for 800k clips instead of 36M).
  * The paper's ~8M frames / ~800k clips is ~10 frames per clip; the loader's
    `frame_stride` (in stored frames) can thin further (stride 3 -> 3.3 fps, one
    window per clip) without re-preparing.
`sample_fps` and `clip_seconds` are flags of `prepare`; the rule above is applied
with whatever values are chosen and recorded in every record.

Generic manifests
-----------------
CSV (header row) or JSONL rows with `video` (path, absolute or relative to the
manifest's folder), `start` and `end` (seconds) and `text`; optional `clip_uid` and
`video_uid`.  Frames: tau_k = start + k / sample_fps for all k with tau_k < end,
same index rule.  Text: whitespace normalisation only.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence

from data_pipelines.ego4d import text as text_lib

CLIP_SECONDS = 3.0
SAMPLE_FPS = 10.0
NARRATION_PASSES = ("narration_pass_1", "narration_pass_2")
EGO4D_VERSIONS = ("v2", "v1")


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """One clip to cut: [start_sec, end_sec) of `video_path` sampled at `sample_fps`."""
  clip_uid: str
  video_uid: str
  video_path: str
  start_sec: float
  end_sec: float
  text: str
  raw_text: str
  source: str              # e.g. "ego4d/narration_pass_1" or "manifest"
  timestamp_sec: float | None = None


def sample_times(start_sec: float, end_sec: float, sample_fps: float) -> list[float]:
  """tau_k = start + k / sample_fps for every k with tau_k < end (1e-6 s tolerance)."""
  if sample_fps <= 0:
    raise ValueError(f"sample_fps must be > 0, got {sample_fps}")
  count = max(0, math.ceil((end_sec - start_sec) * sample_fps - 1e-6))
  return [start_sec + k / sample_fps for k in range(count)]


def frame_indices(start_sec: float, end_sec: float, *, fps: float, sample_fps: float,
                  num_frames: int | None = None) -> list[int]:
  """Source frame indices of a clip: floor(tau_k * fps + 0.5), clamped to the video.

  Indices < 0 (and >= num_frames when known) are dropped; duplicates (sample_fps >
  fps) are kept once.
  """
  out: list[int] = []
  for tau in sample_times(start_sec, end_sec, sample_fps):
    idx = math.floor(tau * fps + 0.5)
    if idx < 0 or (num_frames is not None and idx >= num_frames):
      continue
    if out and idx <= out[-1]:
      continue
    out.append(idx)
  return out


def split_of(key: str, val_fraction: float) -> str:
  """Deterministic split of a video (by uid/path): "val" for a `val_fraction` of keys."""
  if val_fraction <= 0:
    return "train"
  h = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2.0**64
  return "val" if h < val_fraction else "train"


def find_narration_json(ego4d_root: str) -> str:
  """The narration file of an Ego4D download (CLI layout), newest version first."""
  candidates = [os.path.join(ego4d_root, v, "annotations", "narration.json") for v in EGO4D_VERSIONS]
  candidates.append(os.path.join(ego4d_root, "narration.json"))
  for path in candidates:
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
      f"no narration.json under {ego4d_root!r}; looked for {candidates} (pass --narration_json)")


def find_video(ego4d_root: str, video_uid: str) -> str | None:
  """<root>/v2/full_scale/<uid>.mp4, else <root>/v1/full_scale/<uid>.mp4, else None."""
  for version in EGO4D_VERSIONS:
    path = os.path.join(ego4d_root, version, "full_scale", f"{video_uid}.mp4")
    if os.path.isfile(path):
      return path
  return None


def load_narrations(path: str) -> dict:
  with open(path, "rb") as f:
    data = json.load(f)
  if not isinstance(data, dict):
    raise ValueError(f"{path}: expected a JSON object keyed by video_uid, got {type(data).__name__}")
  return data


def narration_clips(narrations: dict, ego4d_root: str, *, passes: Sequence[str] = NARRATION_PASSES,
                    clip_seconds: float = CLIP_SECONDS, unsure: str = "drop",
                    camera_wearer: str = text_lib.DEFAULT_CAMERA_WEARER,
                    video_uids: Iterable[str] | None = None,
                    counts: Counter | None = None) -> dict[str, list[ClipSpec]]:
  """video_uid -> its clips (sorted by start), for the videos found on disk.

  `counts` receives: narrations, clips, dropped_unsure, dropped_empty,
  dropped_no_timestamp, videos_missing (uid in narration.json, no mp4 on disk),
  videos_without_narrations.
  """
  counts = Counter() if counts is None else counts
  for p in passes:
    if p not in NARRATION_PASSES:
      raise ValueError(f"unknown narration pass {p!r}; expected one of {NARRATION_PASSES}")
  uids = sorted(narrations) if video_uids is None else list(video_uids)
  half = clip_seconds / 2.0
  out: dict[str, list[ClipSpec]] = {}
  for uid in uids:
    entry = narrations.get(uid)
    if not isinstance(entry, dict):
      raise ValueError(f"narration.json[{uid!r}]: expected an object with narration_pass_1/2, "
                       f"got {type(entry).__name__}")
    clips: list[ClipSpec] = []
    for p in passes:
      items = (entry.get(p) or {}).get("narrations") or []
      for i, item in enumerate(items):
        counts["narrations"] += 1
        ts = item.get("timestamp_sec")
        if not isinstance(ts, (int, float)) or not math.isfinite(ts):
          counts["dropped_no_timestamp"] += 1
          continue
        raw = item.get("narration_text", "")
        cleaned, reason = text_lib.clean_narration(raw, unsure=unsure, camera_wearer=camera_wearer)
        if cleaned is None:
          counts[f"dropped_{reason}"] += 1
          continue
        clip_uid = item.get("annotation_uid") or f"{uid}:{p}:{i}"
        clips.append(ClipSpec(clip_uid=str(clip_uid), video_uid=uid, video_path="",
                              start_sec=float(ts) - half, end_sec=float(ts) + half, text=cleaned,
                              raw_text=str(raw), source=f"ego4d/{p}", timestamp_sec=float(ts)))
    if not clips:
      counts["videos_without_narrations"] += 1
      continue
    path = find_video(ego4d_root, uid)
    if path is None:
      counts["videos_missing"] += 1
      counts["clips_of_missing_videos"] += len(clips)
      continue
    clips = [dataclasses.replace(c, video_path=path) for c in clips]
    clips.sort(key=lambda c: (c.start_sec, c.clip_uid))
    counts["clips"] += len(clips)
    out[uid] = clips
  return out


def _manifest_rows(path: str) -> list[dict]:
  if path.endswith((".jsonl", ".json")):
    rows = []
    with open(path, encoding="utf-8") as f:
      for line_no, line in enumerate(f, 1):
        if line.strip():
          try:
            rows.append(json.loads(line))
          except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{line_no}: not a JSON object ({e})") from e
    return rows
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f))


def _manifest_video_path(base: str, row: dict) -> str:
  video = str(row["video"])
  return video if os.path.isabs(video) else os.path.normpath(os.path.join(base, video))


def manifest_video_keys(path: str) -> list[str]:
  """Sorted paths of every video a manifest names (present on disk or not)."""
  base = os.path.dirname(os.path.abspath(path))
  return sorted({_manifest_video_path(base, row) for row in _manifest_rows(path) if row.get("video")})


def manifest_clips(path: str, *, counts: Counter | None = None,
                   video_keys: Iterable[str] | None = None) -> dict[str, list[ClipSpec]]:
  """video path -> clips, from a CSV/JSONL manifest (see module doc); only the rows of
  `video_keys` (paths as manifest_video_keys gives them) when given."""
  counts = Counter() if counts is None else counts
  base = os.path.dirname(os.path.abspath(path))
  keep = None if video_keys is None else set(video_keys)
  out: dict[str, list[ClipSpec]] = {}
  for row_no, row in enumerate(_manifest_rows(path), 1):
    for field in ("video", "start", "end", "text"):
      if field not in row or row[field] is None:
        raise ValueError(f"{path} row {row_no}: missing field {field!r}; expected video, start, end, text")
    video_path = _manifest_video_path(base, row)
    if keep is not None and video_path not in keep:
      continue
    try:
      start, end = float(row["start"]), float(row["end"])
    except (TypeError, ValueError) as e:
      raise ValueError(f"{path} row {row_no}: start/end must be seconds, got "
                       f"{row['start']!r}/{row['end']!r}") from e
    if not end > start:
      raise ValueError(f"{path} row {row_no}: end ({end}) must be > start ({start})")
    counts["narrations"] += 1
    cleaned, reason = text_lib.clean_manifest_text(row["text"])
    if cleaned is None:
      counts[f"dropped_{reason}"] += 1
      continue
    video_uid = str(row.get("video_uid") or os.path.splitext(os.path.basename(video_path))[0])
    clip_uid = str(row.get("clip_uid") or f"{video_uid}:{row_no}")
    out.setdefault(video_path, []).append(ClipSpec(
        clip_uid=clip_uid, video_uid=video_uid, video_path=video_path, start_sec=start, end_sec=end,
        text=cleaned, raw_text=str(row["text"]), source="manifest"))
  for key in list(out):
    if not os.path.isfile(key):
      counts["videos_missing"] += 1
      counts["clips_of_missing_videos"] += len(out.pop(key))
      continue
    out[key].sort(key=lambda c: (c.start_sec, c.clip_uid))
    counts["clips"] += len(out[key])
  return out
