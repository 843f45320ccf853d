"""Cutting the clips of one video with PyAV: decode, resize + center-crop, JPEG-encode.

Decoding plan for one video (bounded work):
  * The wanted source frames of all clips of the video (clips.frame_indices) are
    merged and split into segments wherever two consecutive wanted frames are more
    than `seek_gap_sec` apart.  Each segment costs exactly one seek: seeking lands on
    the keyframe at or before the segment's first frame, the decoder runs forward
    (frames before the target are decoded but not converted) and stops right after
    the segment's last wanted frame.  A segment holds whole clips, so the work per
    clip is at most one seek + (distance to the previous keyframe) + the clip span,
    and overlapping clips (Ego4D narrations are a few seconds apart) share decoding,
    conversion and JPEG encoding of common frames.
  * If a seek overshoots (the first decoded frame is already past the target, seen
    with some broken indexes), the segment is decoded again from the start of the
    stream; this is counted in the stats as `seek_fallbacks`.
  * Each wanted frame: RGB, short side resized to `size` (swscale AREA filter, i.e.
    a box filter that averages the source pixels, right for large down-scaling such
    as Ego4D's 1440x1080 -> 299x224), center crop size x size, JPEG at `jpeg_quality`
    (PIL/libjpeg-turbo, 4:2:0 chroma).  Converted frames are kept only until the last
    clip that uses them is emitted, so memory stays bounded on hour-long videos.
Frame index of a decoded frame = floor((pts - start_time) * time_base * fps + 0.5).
"""
from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Iterator, Sequence

import av
import numpy as np
from PIL import Image

from data_pipelines.ego4d import clips as clips_lib

DEFAULT_SIZE = 224
DEFAULT_JPEG_QUALITY = 90
DEFAULT_SEEK_GAP_SEC = 2.0


class VideoDecodeError(RuntimeError):
  """A video that cannot be opened or decoded; the message names the uid and file."""


@dataclasses.dataclass
class DecodedClip:
  spec: clips_lib.ClipSpec
  frame_index: list[int]
  frame_time: list[float]
  jpegs: list[bytes]
  fps: float
  size: int


def resize_center_crop(frame: av.VideoFrame, size: int) -> np.ndarray:
  """RGB uint8 (size, size, 3): short side -> size (AREA), then center crop."""
  w, h = frame.width, frame.height
  scale = size / min(w, h)
  rw, rh = max(size, int(round(w * scale))), max(size, int(round(h * scale)))
  arr = frame.to_ndarray(width=rw, height=rh, format="rgb24", interpolation="AREA")
  y0, x0 = (rh - size) // 2, (rw - size) // 2
  return np.ascontiguousarray(arr[y0:y0 + size, x0:x0 + size])


def encode_jpeg(arr: np.ndarray, quality: int) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


def _open(video_path: str, uid: str):
  try:
    container = av.open(video_path)
  except Exception as e:  # av raises many FFmpegError subclasses and OSError.
    raise VideoDecodeError(f"video {uid!r} ({video_path}): cannot open: {type(e).__name__}: {e}") from e
  if not container.streams.video:
    container.close()
    raise VideoDecodeError(f"video {uid!r} ({video_path}): no video stream")
  return container


def stream_fps(stream) -> float:
  rate = stream.average_rate or stream.guessed_rate or stream.base_rate
  return float(rate) if rate else 0.0


def segments(indices: Sequence[int], gap_frames: int) -> list[tuple[int, int]]:
  """Sorted unique indices -> [(first, last)] runs whose inner gaps are <= gap_frames."""
  out: list[tuple[int, int]] = []
  for idx in indices:
    if out and idx - out[-1][1] <= gap_frames:
      out[-1] = (out[-1][0], idx)
    else:
      out.append((idx, idx))
  return out


def decode_clips(video_path: str, specs: Sequence[clips_lib.ClipSpec], *,
                 size: int = DEFAULT_SIZE, sample_fps: float = clips_lib.SAMPLE_FPS,
                 jpeg_quality: int = DEFAULT_JPEG_QUALITY, seek_gap_sec: float = DEFAULT_SEEK_GAP_SEC,
                 threads: int = 0, stats: dict | None = None) -> Iterator[DecodedClip]:
  """Yields a DecodedClip per spec (frames past the end of the video are missing).

  Raises VideoDecodeError (naming the uid and file) when the video cannot be opened or
  decoding fails; clips yielded before that are complete and valid.  `stats` receives
  decoded_frames, converted_frames, seeks, seek_fallbacks.
  """
  stats = {} if stats is None else stats
  for key in ("decoded_frames", "converted_frames", "seeks", "seek_fallbacks"):
    stats.setdefault(key, 0)
  uid = specs[0].video_uid if specs else video_path
  container = _open(video_path, uid)
  try:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.thread_count = threads
    fps = stream_fps(stream)
    if not fps > 0:
      raise VideoDecodeError(f"video {uid!r} ({video_path}): stream has no frame rate")
    time_base = float(stream.time_base)
    start_pts = stream.start_time or 0
    num_frames = stream.frames if stream.frames and stream.frames > 0 else None

    wanted = [clips_lib.frame_indices(s.start_sec, s.end_sec, fps=fps, sample_fps=sample_fps,
                                      num_frames=num_frames) for s in specs]
    # Emission order: by last wanted frame; clips with no frame are emitted first.
    order = sorted(range(len(specs)), key=lambda i: (wanted[i][-1] if wanted[i] else -1, i))
    first_of = [w[0] if w else math.inf for w in wanted]
    emitted = [False] * len(specs)
    store: dict[int, tuple[bytes, float]] = {}
    next_emit = 0

    def emit_upto(last_done: float) -> Iterator[DecodedClip]:
      nonlocal next_emit
      while next_emit < len(order):
        i = order[next_emit]
        if wanted[i] and wanted[i][-1] > last_done:
          break
        next_emit += 1
        emitted[i] = True
        got = [j for j in wanted[i] if j in store]
        yield DecodedClip(spec=specs[i], frame_index=got, frame_time=[store[j][1] for j in got],
                          jpegs=[store[j][0] for j in got], fps=fps, size=size)
      keep_from = min((first_of[i] for i in range(len(specs)) if not emitted[i]), default=math.inf)
      for j in [j for j in store if j < keep_from]:
        del store[j]

    needed = sorted({j for w in wanted for j in w})
    gap_frames = max(1, int(round(seek_gap_sec * fps)))
    yield from emit_upto(-1)
    for first, last in segments(needed, gap_frames):
      needed_set = {j for j in needed if first <= j <= last}
      for attempt in range(2):
        target = start_pts + int(math.floor((first - 0.5) / fps / time_base)) if attempt == 0 else start_pts
        container.seek(max(start_pts, target), stream=stream, backward=True, any_frame=False)
        stats["seeks"] += 1
        overshoot = False
        seen_first = False
        frames = container.decode(stream)
        for frame in frames:
          stats["decoded_frames"] += 1
          if frame.pts is None:
            continue
          idx = math.floor((frame.pts - start_pts) * time_base * fps + 0.5)
          if not seen_first:
            seen_first = True
            if idx > first and attempt == 0:
              overshoot = True
              break
          if idx in needed_set and idx not in store:
            arr = resize_center_crop(frame, size)
            stats["converted_frames"] += 1
            store[idx] = (encode_jpeg(arr, jpeg_quality), (frame.pts - start_pts) * time_base)
            yield from emit_upto(idx)
          if idx >= last:
            break
        frames.close()
        if not overshoot:
          break
        stats["seek_fallbacks"] += 1
      yield from emit_upto(last)
    yield from emit_upto(math.inf)
  except VideoDecodeError:
    raise
  except Exception as e:  # FFmpeg errors surface as many av.error.* types.
    raise VideoDecodeError(f"video {uid!r} ({video_path}): decoding failed: {type(e).__name__}: {e}") from e
  finally:
    container.close()
