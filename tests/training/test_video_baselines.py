"""The mean-frame and copy-last-frame baselines printed beside the held-out video loss."""
import numpy as np

from gr1_jax.losses import video_loss
from gr1_jax.training import video_baselines


def _batch(frames, mask):
  """frames: per step one (P=1, C=2) value pair -> targets (1, L, 1, 2), mask (1, L)."""
  return np.asarray(frames, np.float32)[None, :, None, :], np.asarray(mask, np.float32)[None]


def test_baselines_on_a_hand_computed_example():
  # next_n = 1. Batch a: step 3 is padding, so its pairs are (0 -> 1) and (1 -> 2).
  a_targets, a_mask = _batch([[0, 0], [1, 1], [3, 3], [9, 9]], [1, 1, 1, 0])
  # Batch b: a still scene, three pairs.
  b_targets, b_mask = _batch([[2, 2]] * 4, [1, 1, 1, 1])
  stats = [video_baselines.batch_statistics(t, m, 1) for t, m in ((a_targets, a_mask), (b_targets, b_mask))]
  # Valid targets: (1,1), (3,3) and three (2,2): mean frame (2,2).
  # a: mean frame errs 1 per value on both pairs -> 1; copy errs 1 then 2 -> (1 + 4) / 2 = 2.5.
  # b: both 0. The evaluation averages batches: mean frame 0.5, copy 1.25.
  assert video_baselines.baselines(stats) == {"mean_frame": 0.5, "copy_last": 1.25}
  # The same units as the model's loss: video_loss scores the two predictors identically.
  assert float(video_loss(a_targets, a_targets, a_mask, 1)) == 2.5
  mean = np.broadcast_to(np.float32(2.0), a_targets.shape)
  assert float(video_loss(mean, a_targets, a_mask, 1)) == 1.0


def test_comparison_line_names_both_cameras():
  metrics = {"loss/video": 0.125, "baseline/video_mean_frame": 0.25, "baseline/video_copy_last": 0.0625,
             "loss/video_hand": 0.5, "baseline/video_hand_mean_frame": 1.0, "baseline/video_hand_copy_last": 0.75}
  line = video_baselines.comparison_line(7, metrics)
  assert line == ("step 7: held-out video loss 0.1250 | mean-frame baseline 0.2500 | copy-last-frame baseline "
                  "0.0625; held-out video hand loss 0.5000 | mean-frame baseline 1.0000 | copy-last-frame "
                  "baseline 0.7500")
  assert video_baselines.comparison_line(7, {"loss/video": 0.1}) is None
  moving = video_baselines.comparison_line(7, dict(metrics, **{"motion/video": 1.5, "motion/video_real": 4.5}))
  assert moving.startswith("step 7: held-out video loss 0.1250 | mean-frame baseline 0.2500 | copy-last-frame "
                           "baseline 0.0625 | predicted frames change 1.5 grey levels per step (real 4.5); ")
