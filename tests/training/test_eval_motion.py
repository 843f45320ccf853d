"""eval_step's motion metric: how much the predicted frames change per step, beside the real ones."""
import jax.numpy as jnp
import numpy as np

from gr1_jax.image_preprocessing import IMAGENET_MEAN, IMAGENET_STD
from gr1_jax.modules.mae_vit import patchify
from gr1_jax.training.eval_step import predicted_frame_metrics

N, P, S = 3, 8, 16


def _windows():
  """Two windows of 8 steps, a bright square moving 1 px per step over a dark frame, in [0, 1];
  the second window's last 2 steps are padding (random junk that must not count)."""
  rng = np.random.default_rng(0)
  frames = np.full((2, 8, S, S, 3), 0.2, np.float32)
  for b in range(2):
    for t in range(8):
      frames[b, t, 4:10, 2 + t + b:8 + t + b] = 0.9
  frames[1, 6:] = rng.random((2, S, S, 3))
  mask = np.ones((2, 8), np.float32)
  mask[1, 6:] = 0
  return frames, mask


def _normalise(frames01):
  return (frames01 - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)


def _reference_motion(frames01, mask, n):
  """Independent: per window, the real targets t+n, consecutive pairs where both are real steps."""
  changes = []
  for b in range(len(frames01)):
    for t in range(frames01.shape[1] - n - 1):
      if mask[b, t + n] and mask[b, t + n + 1]:
        changes.append(np.abs(frames01[b, t + n + 1] - frames01[b, t + n]).mean() * 255)
  return float(np.mean(changes))


def test_a_perfect_predictor_moves_like_the_real_frames_and_a_frozen_one_not_at_all():
  frames, mask = _windows()
  images = jnp.asarray(_normalise(frames))
  # predicted at step t = the real frame t + n (the last n steps predict beyond the window: junk)
  perfect = patchify(jnp.concatenate([images[:, N:], images[:, :N]], axis=1), P)
  _, predicted, real = predicted_frame_metrics(perfect, images, jnp.asarray(mask), patch_size=P, norm_pix=False, next_n=N)
  expected = _reference_motion(frames, mask, N)
  # a 6x6 square moving 1 px: 12 of 256 pixels change by 0.7 in every channel each step
  assert abs(expected - 12 / 256 * 0.7 * 255) < 0.01
  assert abs(float(real) - expected) < 1e-3 and abs(float(predicted) - expected) < 1e-3

  frozen = jnp.broadcast_to(perfect[:, :1], perfect.shape)   # one frame whatever the step
  _, predicted, real = predicted_frame_metrics(frozen, images, jnp.asarray(mask), patch_size=P, norm_pix=False, next_n=N)
  assert float(predicted) == 0.0 and abs(float(real) - expected) < 1e-3
