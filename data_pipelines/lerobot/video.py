"""Frames of an mp4 at given timestamps with PyAV: seek, decode a short stretch, pick by time.

    decode_frames(path, [1.0, 1.1, 1.2], tolerance_s=1e-4)  -> uint8 (3, H, W, 3)

Seeks to the keyframe at or before the first timestamp and decodes forward until the
last one (never a whole file: LeRobot writes a keyframe every couple of frames), then
returns for every timestamp the decoded frame nearest in time.  A timestamp farther than
`tolerance_s` from every decoded frame raises DataError naming the file: the data and
the video disagree.  Frames stay uint8 RGB at the video's resolution.
"""
from __future__ import annotations

from collections.abc import Sequence

import av
import numpy as np

from data_pipelines.errors import DataError, DataNotFoundError


def decode_frames(path, timestamps: Sequence[float], *, tolerance_s: float) -> np.ndarray:
  timestamps = np.asarray(timestamps, np.float64)
  if timestamps.size == 0:
    raise ValueError("decode_frames needs at least one timestamp")
  first, last = float(timestamps.min()), float(timestamps.max())
  times, frames = [], []
  try:
    with av.open(str(path)) as container:
      stream = container.streams.video[0]
      stream.thread_type = "NONE"   # Grain already reads windows in parallel
      # One frame's margin before the first timestamp: a keyframe exactly there is found.
      container.seek(max(int((first - 1.0 / float(stream.average_rate or 30)) / stream.time_base), 0),
                     stream=stream, backward=True, any_frame=False)
      for frame in container.decode(stream):
        if frame.pts is None:
          continue
        t = float(frame.pts * stream.time_base)
        if t < first - tolerance_s:
          continue
        times.append(t)
        frames.append(frame.to_ndarray(format="rgb24"))
        if t >= last - tolerance_s:
          break
  except FileNotFoundError:
    raise DataNotFoundError(f"{path} does not exist") from None
  except (av.error.FFmpegError, IndexError) as exc:
    raise DataError(f"{path}: cannot decode video frames at {first:.4f}..{last:.4f} s: {exc}") from None
  if not times:
    raise DataError(f"{path}: no frame decoded at {first:.4f}..{last:.4f} s (video too short?)")
  times = np.asarray(times)
  nearest = np.abs(timestamps[:, None] - times[None, :]).argmin(axis=1)
  error = np.abs(times[nearest] - timestamps)
  if np.any(error > tolerance_s):
    bad = int(np.argmax(error))
    raise DataError(f"{path}: no frame within {tolerance_s} s of t={timestamps[bad]:.4f} s (nearest decoded "
                    f"frame at {times[nearest[bad]]:.4f} s); the data timestamps and the video disagree")
  return np.stack([frames[i] for i in nearest])
