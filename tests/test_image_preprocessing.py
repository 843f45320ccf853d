"""gr1_jax.image_preprocessing against torch's bicubic interpolation and the official pipeline."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gr1_jax.image_preprocessing import (IMAGENET_MEAN, IMAGENET_STD, bicubic_resize_matrix,
                                         normalize_imagenet, preprocess_uint8, resize_bicubic_torch)


def torch_resize(images_nhwc: np.ndarray, size) -> np.ndarray:
  size = (size, size) if isinstance(size, int) else size
  x = torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)
  out = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
  return out.permute(0, 2, 3, 1).numpy()


def official_preprocess(images_uint8_nhwc: np.ndarray) -> np.ndarray:
  """GR-1's CALVIN evaluator: ToTensor ([0,1] CHW) -> Resize(224, BICUBIC) on the
  tensor (torchvision 0.13: F.interpolate, antialias off) -> Normalize."""
  x = torch.from_numpy(images_uint8_nhwc).permute(0, 3, 1, 2).float().div(255)
  x = F.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False)
  mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
  std = torch.tensor(IMAGENET_STD)[:, None, None]
  return ((x - mean) / std).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("in_size,out_size", [(200, 224), (84, 224), (300, 224), (224, 96), (5, 224), (7, 3)])
def test_matrix_equals_torch_weights(in_size, out_size):
  # Row c of an identity stack resized along H gives torch's weights on source pixel c.
  x = np.zeros((1, in_size, 4, in_size), np.float32)  # (1, H, W=4, C=H)
  x[0, np.arange(in_size), :, np.arange(in_size)] = 1.0
  weights = torch_resize(x, (out_size, 4))[0, :, 0, :]  # (out, in)
  matrix = bicubic_resize_matrix(in_size, out_size)
  assert matrix.shape == (out_size, in_size) and matrix.dtype == np.float32
  np.testing.assert_allclose(matrix, weights, rtol=0, atol=1e-6)
  np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("in_size,out_size", [(200, 224), (84, 224), (224, 224), (224, 96)])
def test_resize_matches_torch(in_size, out_size):
  x = np.random.default_rng(in_size).random((1, 2, in_size, in_size, 3), dtype=np.float32)  # (B, L, H, W, C)
  expected = torch_resize(x.reshape(2, in_size, in_size, 3), out_size).reshape(1, 2, out_size, out_size, 3)
  out = np.asarray(resize_bicubic_torch(jnp.asarray(x), out_size))
  assert out.shape == (1, 2, out_size, out_size, 3) and out.dtype == np.float32
  assert np.abs(out - expected).max() <= 1e-5


def test_identity_size_and_non_square():
  x = jnp.asarray(np.random.default_rng(1).random((1, 224, 224, 3), dtype=np.float32))
  assert resize_bicubic_torch(x, 224) is x
  y = np.random.default_rng(2).random((1, 200, 84, 3), dtype=np.float32)
  np.testing.assert_allclose(np.asarray(resize_bicubic_torch(y, 224)), torch_resize(y, 224), atol=1e-5, rtol=0)


def test_overshoot_is_not_clamped_like_torch():
  x = np.zeros((1, 84, 84, 3), np.float32)
  x[:, :, 42:] = 1.0  # a hard edge: bicubic rings below 0 and above 1
  out = np.asarray(resize_bicubic_torch(x, 224))
  assert out.min() < -0.05 and out.max() > 1.05
  np.testing.assert_allclose(out, torch_resize(x, 224), atol=1e-5, rtol=0)


def test_jax_image_resize_is_not_torch_bicubic():
  # Why this module exists: jax's cubic is Keys a=-0.5, torch's a=-0.75.
  x = np.random.default_rng(3).random((1, 84, 84, 3), dtype=np.float32)
  jax_cubic = np.asarray(jax.image.resize(x, (1, 224, 224, 3), method="cubic"))
  assert np.abs(jax_cubic - torch_resize(x, 224)).max() > 1e-2


@pytest.mark.parametrize("in_size", [200, 84])
def test_preprocess_matches_official_pipeline(in_size):
  images = np.random.default_rng(in_size).integers(0, 256, (3, in_size, in_size, 3), dtype=np.uint8)
  images[0] = 0
  images[1, :, : in_size // 2] = 255  # saturated edge: overshoot must survive normalisation
  out = np.asarray(preprocess_uint8(jnp.asarray(images)))
  expected = official_preprocess(images)
  assert out.shape == (3, 224, 224, 3) and out.dtype == np.float32
  assert np.abs(out - expected).max() <= 1e-5


def test_preprocess_jit_batched_and_dtype():
  images = np.random.default_rng(4).integers(0, 256, (1, 2, 84, 84, 3), dtype=np.uint8)
  fn = jax.jit(preprocess_uint8, static_argnames=("size", "dtype"))
  eager = np.asarray(preprocess_uint8(images))
  jitted = np.asarray(fn(images))
  assert jitted.shape == (1, 2, 224, 224, 3)
  np.testing.assert_allclose(jitted, eager, atol=1e-6, rtol=0)
  half = fn(images, size=112, dtype=jnp.bfloat16)
  assert half.shape == (1, 2, 112, 112, 3) and half.dtype == jnp.bfloat16


def test_normalize_imagenet_constants():
  mean_image = np.broadcast_to(np.asarray(IMAGENET_MEAN, np.float32), (2, 2, 3))
  np.testing.assert_allclose(np.asarray(normalize_imagenet(mean_image)), 0.0, atol=1e-7)
  np.testing.assert_allclose(np.asarray(normalize_imagenet(np.ones((1, 1, 3), np.float32)))[0, 0],
                             [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)], rtol=1e-6)


def test_errors_name_input():
  with pytest.raises(ValueError, match=r"images_uint8 has shape \(2, 8, 8, 3\) and dtype float32"):
    preprocess_uint8(np.zeros((2, 8, 8, 3), np.float32))
  with pytest.raises(ValueError, match=r"images_uint8 has shape \(8, 8, 4\)"):
    preprocess_uint8(np.zeros((8, 8, 4), np.uint8))
  with pytest.raises(ValueError, match="expected float"):
    resize_bicubic_torch(np.zeros((8, 8, 3), np.uint8), 4)
  with pytest.raises(ValueError, match="channels last"):
    normalize_imagenet(np.zeros((3, 8, 8), np.float32))
  with pytest.raises(ValueError, match="sizes must be >= 1"):
    bicubic_resize_matrix(0, 224)
