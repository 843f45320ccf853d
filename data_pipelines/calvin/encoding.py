"""Frame encoding shared by the converter (encode) and the pipeline (decode).

Kept free of TFDS and JAX so that conversion worker processes and Grain worker
processes import only numpy and Pillow.

Image formats (`ImageEncoding`):
  * "jpeg" (default, quality 90, Pillow's default 4:2:0 chroma subsampling).
    Lossy; decoding is ~3x faster than PNG here and the files are ~10x smaller.
    GR1-Training stored CALVIN frames as JPEG (quality 75) and reached the best
    reported ABC->D result, so JPEG artefacts at quality 90 are not a concern
    for the 224-px MAE input.
  * "png" (lossless, zlib level 3): bit-exact frames, for checks or when disk
    is not a concern.

Encoding always uses Pillow (so records do not depend on what is installed);
decoding is data_pipelines.image_codec (simplejpeg, Pillow fallback).
"""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from data_pipelines import image_codec
from data_pipelines.calvin import raw

# Bump when the cached per-segment payload changes meaning.
CACHE_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class ImageEncoding:
  format: str = "jpeg"  # "jpeg" | "png"
  jpeg_quality: int = 90
  png_level: int = 3

  def __post_init__(self):
    if self.format not in ("jpeg", "png"):
      raise ValueError(f"image format must be 'jpeg' or 'png', got {self.format!r}")
    if not 1 <= self.jpeg_quality <= 100:
      raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")


def encode_image(image: np.ndarray, encoding: ImageEncoding) -> bytes:
  buf = io.BytesIO()
  if encoding.format == "jpeg":
    Image.fromarray(image).save(buf, format="JPEG", quality=encoding.jpeg_quality)
  else:
    Image.fromarray(image).save(buf, format="PNG", compress_level=encoding.png_level)
  return buf.getvalue()


decode_image = image_codec.decode_image
decode_image_pil = image_codec.decode_image_pil
DECODER = image_codec.DECODER


@dataclasses.dataclass(frozen=True)
class SegmentJob:
  """Work item of one conversion worker: read, check and encode one annotated segment."""
  folder: str
  segment: raw.Segment
  cache_path: str
  encoding: ImageEncoding
  on_bad: str = "raise"

  def header(self) -> dict:
    return {"cache_format": CACHE_FORMAT, "folder": os.path.abspath(self.folder),
            "segment": dataclasses.asdict(self.segment), "encoding": dataclasses.asdict(self.encoding)}


def encode_segment(job: SegmentJob) -> tuple[str, int, str | None, bool]:
  """Encodes one segment into job.cache_path (atomically) unless a valid cache exists.

  Returns (cache_path, num_frames, skip_reason, cache_hit).  A CalvinDataError
  propagates unless job.on_bad == "skip", in which case it becomes skip_reason.
  """
  path = Path(job.cache_path)
  header = job.header()
  if path.is_file():
    try:
      with open(path, "rb") as f:
        cached = pickle.load(f)
      if cached.get("header") == header:
        return str(path), len(cached["frames"]), None, True
    except Exception:  # unreadable cache: recompute  # pylint: disable=broad-except
      pass
  try:
    frames = []
    for frame_id, frame in zip(job.segment.frame_ids(), raw.read_segment(job.folder, job.segment)):
      frames.append({
          "frame_id": frame_id,
          "rgb_static": encode_image(frame["rgb_static"], job.encoding),
          "rgb_gripper": encode_image(frame["rgb_gripper"], job.encoding),
          **{k: frame[k] for k in raw.VECTOR_KEYS},
      })
  except raw.CalvinDataError as e:
    if job.on_bad == "skip":
      return str(path), 0, str(e), False
    raise
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  with open(tmp, "wb") as f:
    pickle.dump({"header": header, "frames": frames}, f, protocol=pickle.HIGHEST_PROTOCOL)
  os.replace(tmp, path)
  return str(path), len(frames), None, False


def load_cached_segment(cache_path: str) -> list[dict]:
  with open(cache_path, "rb") as f:
    return pickle.load(f)["frames"]
