"""Where the stage-1 demo's ball is: predicted frame t+n vs real frame t+n vs current frame t.

The demo corpus (data_pipelines/ego4d/make_fake.py) draws one ball in one of four saturated
colours (make_fake.COLORS) over a smooth background of muted random colours (channels in
40-200), so a pixel within `TOLERANCE` of a ball colour is ball. For each held-out step with a valid target:

  colour        the COLORS entry with the most such pixels in the real frame t+n
  true          centroid of those pixels in the real frame t+n (where the ball is)
  found         the predicted frame t+n has pixels of that colour covering at least MIN_AREA
                of the true ball's area (a ball drawn in its colour)
  predicted     where the predicted frame t+n is most ball-coloured: the centroid of its pixels
                weighted by how much closer to the ball's colour each is than the frame's
                median pixel, squared (a faint, blurred ball still counts; a flat frame has none)
  current       centroid in the real frame t (a model that copies the current frame)

and reports, in pixels of the model's frames, the mean distance of the predicted, current and
frame-centre positions from the true one, plus the fraction of steps whose ball was found.
A predicted ball near the true place (a distance well below the frame centre's) is the visible
sign that the model reads the ball from the current frame; one below the current frame's also
predicts its motion.
"""
from __future__ import annotations

import numpy as np

from data_pipelines.ego4d.make_fake import COLORS
from gr1_jax import visualization

TOLERANCE = 0.2   # max. RGB distance in [0, 1] units from a ball colour (JPEG noise ~0.05)
MIN_AREA = 0.25   # found: predicted ball pixels >= this fraction of the true ball's pixels
_PALETTE = np.asarray(list(COLORS.values()), np.float32) / 255.0


def colour_distance(frames01: np.ndarray, colour: np.ndarray) -> np.ndarray:
  """(..., H, W, 3) in [0, 1], colour (3,) -> Euclidean RGB distance (..., H, W)."""
  return np.linalg.norm(np.asarray(frames01, np.float32) - colour, axis=-1)


def ball_colour(frame01: np.ndarray) -> np.ndarray | None:
  """The palette colour with the most matching pixels in a real frame (None: no ball)."""
  counts = [(colour_distance(frame01, c) < TOLERANCE).sum() for c in _PALETTE]
  best = int(np.argmax(counts))
  return _PALETTE[best] if counts[best] else None


def ball_pixels(frame01: np.ndarray, colour: np.ndarray) -> tuple[np.ndarray | None, int]:
  """-> (centroid (y, x) of the pixels of `colour`, or None if there are none; their count)."""
  mask = colour_distance(frame01, colour) < TOLERANCE
  count = int(mask.sum())
  if not count:
    return None, 0
  ys, xs = np.nonzero(mask)
  return np.asarray([ys.mean(), xs.mean()]), count


def ball_blob_centre(frame01: np.ndarray, colour: np.ndarray) -> np.ndarray | None:
  """(y, x) where a (predicted) frame is most like `colour` (module docstring); None if flat."""
  distance = colour_distance(frame01, colour)
  weight = np.maximum(np.median(distance) - distance, 0.0) ** 2
  if weight.sum() < 1e-6:
    return None
  ys, xs = np.indices(distance.shape)
  return np.asarray([(ys * weight).sum(), (xs * weight).sum()]) / weight.sum()


def ball_report(real01: np.ndarray, predicted01: np.ndarray, valid: np.ndarray, next_n: int) -> dict:
  """real01, predicted01: (B, L, H, W, 3) in [0, 1]; predicted01[:, t] targets real01[:, t + n];
  valid (B, L) bool: step t has a real target. -> the module docstring's numbers."""
  real01, predicted01 = np.asarray(real01, np.float32), np.asarray(predicted01, np.float32)
  size = real01.shape[-3:-1]
  centre = (np.asarray(size, np.float32) - 1) / 2
  predicted_error, current_error, centre_error, found, steps = [], [], [], 0, 0
  for b, t in zip(*np.nonzero(np.asarray(valid, bool))):
    target = real01[b, t + next_n]
    colour = ball_colour(target)
    if colour is None:
      continue
    true, area = ball_pixels(target, colour)
    current, _ = ball_pixels(real01[b, t], colour)
    _, predicted_area = ball_pixels(predicted01[b, t], colour)
    predicted = ball_blob_centre(predicted01[b, t], colour)
    steps += 1
    found += predicted_area >= MIN_AREA * area
    centre_error.append(np.linalg.norm(centre - true))
    if current is not None:
      current_error.append(np.linalg.norm(current - true))
    if predicted is not None:
      predicted_error.append(np.linalg.norm(predicted - true))

  def mean(values):   # None: nothing to average (JSON has no NaN)
    return float(np.mean(values)) if values else None
  return {"steps": steps, "found": found / steps if steps else 0.0,
          "predicted_px": mean(predicted_error), "current_px": mean(current_error),
          "centre_px": mean(centre_error)}


def report_line(report: dict) -> str:
  def px(key):
    return "-" if report[key] is None else f"{report[key]:.1f} px"
  return (f"ball at t+n on {report['steps']} held-out steps, distance from its true place: predicted "
          f"frame's most ball-coloured spot {px('predicted_px')} | current frame's ball {px('current_px')} | "
          f"frame centre {px('centre_px')}; drawn in its colour in {100 * report['found']:.0f} % of the "
          f"predicted frames")


def held_out_grid(real01: np.ndarray, predicted01: np.ndarray, valid: np.ndarray, next_n: int,
                  windows: int = 6) -> np.ndarray:
  """One row per held-out window (up to `windows`): current frame t, real frame t+n, predicted
  frame t+n, at the window's middle valid step; upscaled like the training loop's grids."""
  rows = []
  for b in range(min(windows, len(real01))):
    steps = np.nonzero(valid[b])[0]
    if not len(steps):
      continue
    t = int(steps[len(steps) // 2])
    rows.append([real01[b, t], real01[b, t + next_n], predicted01[b, t]])
  scale = max(1, 96 // real01.shape[-2])
  grid = [[visualization.upscale_nearest(f, scale) for f in row] for row in rows]
  return visualization.frame_grid(grid)


def evaluate_workdir(workdir: str, config) -> tuple[dict, np.ndarray]:
  """(report, grid) on the first config.eval_batches held-out batches (the windows the
  training loop evaluates), predicted by the workdir's newest checkpoint."""
  import jax
  from flax import nnx

  from gr1_jax.image_preprocessing import preprocess_uint8
  from gr1_jax.model_checkpoint import load_model
  from gr1_jax.training import input_pipeline
  model = load_model(workdir)
  cfg = model.config
  data = config["data"].to_dict() if hasattr(config["data"], "to_dict") else dict(config["data"])
  eval_ds = input_pipeline.make_dataset(data, cfg, global_batch=config["batch_size"], seed=config["seed"],
                                        train=False)
  forward = nnx.jit(lambda m, rgb, tokens, mask: m(rgb, tokens, mask)["obs_preds"])
  real, predicted, valid = [], [], []
  iterator = iter(eval_ds)
  for _ in range(config["eval_batches"]):
    batch = next(iterator)
    rgb = preprocess_uint8(batch["rgb_static"], cfg.mae.image_size)
    preds = jax.device_get(forward(model, rgb, batch["language_tokens"], batch["step_mask"]))
    for window in range(len(preds)):
      _, p, v = visualization.window_prediction_frames(
          rgb[window], preds[window], step_mask=batch["step_mask"][window], patch_size=cfg.mae.patch_size,
          fwd_pred_next_n=cfg.fwd_pred_next_n, norm_pix=cfg.norm_pix_loss)
      real.append(visualization.unnormalize_imagenet(np.asarray(rgb[window])))
      predicted.append(p)
      valid.append(v)
  real, predicted, valid = np.stack(real), np.stack(predicted), np.stack(valid)
  n = cfg.fwd_pred_next_n
  return ball_report(real, predicted, valid, n), held_out_grid(real, predicted, valid, n)
