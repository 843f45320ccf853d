"""random_shift: replicate pad + integer crop, one offset for all frames."""
import numpy as np
import pytest

from data_pipelines import random_shift


@pytest.mark.parametrize("shape, pad", [((3, 20, 24, 3), 4), ((9, 7, 1), 2), ((2, 2, 11, 13, 3), 10)])
def test_matches_numpy_edge_pad_then_crop(shape, pad):
  frames = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  h, w = shape[-3], shape[-2]
  widths = [(0, 0)] * (len(shape) - 3) + [(pad, pad), (pad, pad), (0, 0)]
  padded = np.pad(frames, widths, mode="edge")
  for dy in range(2 * pad + 1):
    for dx in range(2 * pad + 1):
      np.testing.assert_array_equal(random_shift.apply_shift(frames, pad, (dy, dx)),
                                    padded[..., dy:dy + h, dx:dx + w, :])


def test_same_shift_for_every_frame_and_centre_is_identity():
  rng = np.random.default_rng(1)
  frame = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
  window = np.stack([frame] * 5)
  out = random_shift.random_shift(window, 6, rng)
  assert all(np.array_equal(out[0], o) for o in out[1:])
  np.testing.assert_array_equal(random_shift.apply_shift(window, 6, (6, 6)), window)
  shifts = {random_shift.sample_shift(np.random.default_rng(s), 3) for s in range(200)}
  assert shifts == {(a, b) for a in range(7) for b in range(7)}


def test_rejects_bad_arguments():
  with pytest.raises(ValueError, match="outside"):
    random_shift.apply_shift(np.zeros((8, 8, 3), np.uint8), 2, (5, 0))
  with pytest.raises(ValueError, match="smaller than the image"):
    random_shift.apply_shift(np.zeros((4, 4, 3), np.uint8), 4, (0, 0))
