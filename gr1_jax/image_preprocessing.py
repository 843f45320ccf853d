"""Image input transform of GR-1, channels-last, matching the official one to ~1e-6.

The official CALVIN evaluator (torchvision 0.13) resizes the [0,1] float tensor to
224x224 with `F.interpolate(mode="bicubic", align_corners=False)` (no antialias, no
clamping) and then applies ImageNet normalisation. `jax.image.resize(method="cubic")`
does not match it: its Keys kernel uses a = -0.5 (PIL-like) and it antialiases when
downsampling; torch uses a = -0.75 and replicates border pixels. So the resize here
is two matmuls with torch's exact interpolation weights (built in numpy once per
size pair), which is also fast on TPU. (GR1-Training's evaluator resizes with
antialias=True, which in torch is a different, a = -0.5 kernel even when upsampling.)
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CUBIC_A = -0.75  # torch's bicubic coefficient


def _keys_near(x: np.ndarray, a: float) -> np.ndarray:
  """Keys' cubic convolution kernel for distances 0 <= x <= 1."""
  return ((a + 2) * x - (a + 3)) * x * x + 1


def _keys_far(x: np.ndarray, a: float) -> np.ndarray:
  """Keys' cubic convolution kernel for distances 1 <= x <= 2."""
  return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a


@functools.lru_cache(maxsize=64)
def _resize_matrix_cached(in_size: int, out_size: int) -> np.ndarray:
  # Source positions as torch computes them for float input: float32 scale, then
  # scale * (i + 0.5) - 0.5 in one fused multiply-add (exact in float64, rounded
  # once). Plain float64 moves 300->224 weights by up to 1.3e-5, float32 without
  # the FMA by as much. Kernel weights: float64 from the float32 fraction.
  f32 = np.float32
  scale = np.float64(f32(in_size) / f32(out_size))
  src = (scale * (np.arange(out_size) + 0.5) - 0.5).astype(f32)  # half-pixel centres, unclamped
  base = np.floor(src)
  t = (src - base).astype(np.float64)
  weights = (_keys_far(t + 1, _CUBIC_A), _keys_near(t, _CUBIC_A),
             _keys_near(1 - t, _CUBIC_A), _keys_far(2 - t, _CUBIC_A))
  matrix = np.zeros((out_size, in_size), f32)
  rows = np.arange(out_size)
  for tap, weight in zip((-1, 0, 1, 2), weights):
    # Taps outside the image read the border pixel, so their weight adds to it.
    index = np.clip(base.astype(np.int64) + tap, 0, in_size - 1)
    np.add.at(matrix, (rows, index), weight.astype(f32))
  matrix.flags.writeable = False
  return matrix


def bicubic_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """float32 (out_size, in_size) M with `M @ x` = torch's 1-D bicubic resize of x
  (align_corners=False, a=-0.75, border replicated, no antialias)."""
  if int(in_size) < 1 or int(out_size) < 1:
    raise ValueError(f"bicubic_resize_matrix({in_size}, {out_size}): sizes must be >= 1")
  return _resize_matrix_cached(int(in_size), int(out_size))


def resize_bicubic_torch(images: jax.Array, size: int,
                         precision: jax.lax.Precision = jax.lax.Precision.HIGHEST) -> jax.Array:
  """Resizes float images (..., H, W, C) to (..., size, size, C) like torch bicubic.

  Output is not clamped (bicubic overshoots [0, 1] near edges, as in torch).
  HIGHEST precision keeps fp32 parity on TPU, whose default matmul is bf16.
  """
  images = jnp.asarray(images)
  if images.ndim < 3 or not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"images has shape {images.shape} and dtype {images.dtype}, "
                     "expected float (..., H, W, C)")
  height, width = images.shape[-3], images.shape[-2]
  if height == width == size:
    return images
  rows = jnp.asarray(bicubic_resize_matrix(height, size), images.dtype)
  cols = jnp.asarray(bicubic_resize_matrix(width, size), images.dtype)
  out = jnp.einsum("oh,...hwc->...owc", rows, images, precision=precision)
  return jnp.einsum("pw,...owc->...opc", cols, out, precision=precision)


def normalize_imagenet(images: jax.Array) -> jax.Array:
  """(x - mean) / std per RGB channel (last axis) for x in [0, 1]."""
  images = jnp.asarray(images)
  if images.shape[-1:] != (3,):
    raise ValueError(f"images has shape {images.shape}, expected RGB channels last (..., 3)")
  mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
  std = jnp.asarray(IMAGENET_STD, images.dtype)
  return (images - mean) / std


def preprocess_uint8(images_uint8: jax.Array, size: int = 224, dtype=jnp.float32) -> jax.Array:
  """uint8 (..., H, W, 3) -> /255 -> torch-bicubic resize to size x size -> ImageNet
  normalisation; the model's input transform (computed in float32, returned as dtype)."""
  images_uint8 = jnp.asarray(images_uint8)
  if images_uint8.dtype != jnp.uint8 or images_uint8.ndim < 3 or images_uint8.shape[-1] != 3:
    raise ValueError(f"images_uint8 has shape {images_uint8.shape} and dtype {images_uint8.dtype}, "
                     "expected uint8 (..., H, W, 3)")
  images = images_uint8.astype(jnp.float32) / 255.0
  return normalize_imagenet(resize_bicubic_torch(images, size)).astype(dtype)
