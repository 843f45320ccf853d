"""Decoding of stored JPEG/PNG frames, shared by every loader.

JPEG goes through simplejpeg (libjpeg-turbo called directly: 2-2.5x less CPU
than Pillow's Python-level header parsing for 84-224 px frames, identical
pixels - both use libjpeg-turbo's default IDCT and upsampling) and decodes
straight into a caller's buffer; PNG, or JPEG without simplejpeg installed,
goes through Pillow. GR1_IMAGE_DECODER=pil forces Pillow.
"""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

try:
  import simplejpeg
except ImportError:  # pragma: no cover - the fallback keeps loaders working without it
  simplejpeg = None

if os.environ.get("GR1_IMAGE_DECODER", "").lower() == "pil":
  simplejpeg = None

DECODER = "simplejpeg" if simplejpeg is not None else "pil"
_JPEG_MAGIC = b"\xff\xd8"


def decode_image_pil(data) -> np.ndarray:
  with Image.open(io.BytesIO(data), formats=("JPEG", "PNG")) as im:
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def decode_image(data, out: np.ndarray | None = None, *, what: str = "image") -> np.ndarray:
  """JPEG/PNG bytes -> uint8 (H, W, 3); with `out`, decodes into it and checks its shape."""
  if simplejpeg is not None and bytes(data[:2]) == _JPEG_MAGIC:
    h, w, _, _ = simplejpeg.decode_jpeg_header(data)
    if out is None:
      return simplejpeg.decode_jpeg(data, colorspace="RGB")
    if out.shape != (h, w, 3):
      raise ValueError(f"{what}: stored frame has shape {(h, w, 3)}, expected {out.shape}")
    simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
    return out
  image = decode_image_pil(data)
  if out is None:
    return image
  if out.shape != image.shape:
    raise ValueError(f"{what}: stored frame has shape {image.shape}, expected {out.shape}")
  out[...] = image
  return out
