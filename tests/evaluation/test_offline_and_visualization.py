"""Offline metrics (exact sums over batches, SSIM/PSNR against independent numpy/scipy code),
the evaluate / visualize CLIs on fake CALVIN data, and the picture writers."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from gr1_jax import visualization as viz
from gr1_jax.evaluation import offline
from tests.conftest import tiny_config


# ----------------------------------------------------------------------------- metrics
def ssim_scipy(a, b):
  """Wang et al. SSIM with an 11-tap sigma-1.5 Gaussian, valid region, per channel, data range 1."""
  x = np.arange(11) - 5.0
  w = np.exp(-x ** 2 / (2 * 1.5 ** 2))
  w /= w.sum()

  def blur(img):
    out = ndimage.correlate1d(ndimage.correlate1d(img, w, axis=0, mode="constant"), w, axis=1,
                              mode="constant")
    return out[5:-5, 5:-5]

  values = []
  for c in range(a.shape[-1]):
    p, q = a[..., c].astype(np.float64), b[..., c].astype(np.float64)
    mp, mq = blur(p), blur(q)
    vp, vq, cov = blur(p * p) - mp ** 2, blur(q * q) - mq ** 2, blur(p * q) - mp * mq
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    num = (2 * mp * mq + c1) * (2 * cov + c2)
    values.append((num / ((mp ** 2 + mq ** 2 + c1) * (vp + vq + c2))).mean())
  return float(np.mean(values))


def test_ssim_and_psnr_match_independent_code():
  rng = np.random.default_rng(0)
  a = rng.uniform(0, 1, (2, 32, 40, 3)).astype(np.float32)
  a[0] = ndimage.gaussian_filter(a[0], (2, 2, 0))            # a smooth image and a noisy one
  b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1).astype(np.float32)
  got = np.asarray(offline.ssim(jnp.asarray(a), jnp.asarray(b)))
  want = [ssim_scipy(a[i], b[i]) for i in range(2)]
  np.testing.assert_allclose(got, want, atol=2e-5)
  np.testing.assert_allclose(np.asarray(offline.ssim(jnp.asarray(a), jnp.asarray(a))), 1.0, atol=1e-5)
  mse = ((a - b) ** 2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(np.asarray(offline.psnr(jnp.asarray(a), jnp.asarray(b))),
                             10 * np.log10(1 / mse), rtol=1e-5)
  with pytest.raises(ValueError, match="smaller than the 11x11"):
    offline.ssim(jnp.zeros((8, 8, 3)), jnp.zeros((8, 8, 3)))


def _batch(cfg, rng, batch=3, padded_from=None):
  L = cfg.seq_len
  step_mask = np.ones((batch, L), np.float32)
  if padded_from is not None:
    step_mask[-1, padded_from:] = 0
  action_mask = np.repeat(step_mask[..., None], cfg.action_chunk, -1)
  tokens = np.zeros((batch, 77), np.int32)
  tokens[:, :4] = [49406, 320, 1125, 49407]
  return {"step_mask": step_mask, "language_tokens": tokens,
          "rgb_static": rng.integers(0, 256, (batch, L, 200, 200, 3), dtype=np.uint8),
          "rgb_gripper": rng.integers(0, 256, (batch, L, 84, 84, 3), dtype=np.uint8),
          "arm_state": rng.normal(size=(batch, L, 6)).astype(np.float32),
          "gripper_state": np.eye(2, dtype=np.float32)[rng.integers(0, 2, (batch, L))],
          "arm_action": rng.uniform(-1, 1, (batch, L, cfg.action_chunk, 6)).astype(np.float32),
          "gripper_action": rng.integers(0, 2, (batch, L, cfg.action_chunk)).astype(np.float32),
          "action_mask": action_mask}


@pytest.fixture(scope="module")
def tiny_model():
  from flax import nnx

  from gr1_jax.modules.gr1 import GR1
  model = GR1(tiny_config(), rngs=nnx.Rngs(0))
  model.eval()
  return model


def test_offline_metrics_are_exact_means_independent_of_batching(tiny_model):
  from gr1_jax.image_preprocessing import preprocess_uint8
  cfg = tiny_model.config
  batch = _batch(cfg, np.random.default_rng(1), batch=4, padded_from=6)
  whole = offline.evaluate_batches(tiny_model, [batch])
  halves = offline.evaluate_batches(tiny_model, [{k: v[:2] for k, v in batch.items()},
                                                 {k: v[2:] for k, v in batch.items()}])
  for key in ("arm_l1", "arm_mse", "gripper_accuracy"):
    assert whole[key] == pytest.approx(halves[key], rel=1e-5)
  assert whole["video"]["static"]["psnr"] == pytest.approx(halves["video"]["static"]["psnr"], rel=1e-5)
  # Against a direct numpy computation from the model's outputs.
  out = jax.jit(lambda b: tiny_model(
      preprocess_uint8(b["rgb_static"], 32), b["language_tokens"], b["step_mask"],
      hand_rgb=preprocess_uint8(b["rgb_gripper"], 32), arm_state=b["arm_state"],
      gripper_state=b["gripper_state"]))(batch)
  mask = batch["action_mask"].astype(bool)
  diff = np.asarray(out["arm_action_preds"]) - batch["arm_action"]
  assert whole["arm_l1"] == pytest.approx(np.abs(diff[mask]).mean(), rel=1e-5)
  assert whole["arm_mse"] == pytest.approx((diff[mask] ** 2).mean(), rel=1e-5)
  correct = (np.asarray(out["gripper_action_preds"]) > 0) == (batch["gripper_action"] > 0.5)
  assert whole["gripper_accuracy"] == pytest.approx(correct[mask].mean())
  assert whole["num_action_targets"] == 4 * 10 - 4
  # Frame pairs (t, t+3) with a valid target: 3 full windows x 7 + the padded one's 3.
  assert whole["video"]["static"]["num_frame_pairs"] == 3 * 7 + 3
  assert set(whole["video"]) == {"static", "gripper"} and whole["video_norm_pix_rescaled"]
  with pytest.raises(ValueError, match="missing key 'arm_action'"):
    offline.evaluate_batches(tiny_model, [{k: v for k, v in batch.items() if k != "arm_action"}])


@pytest.fixture(scope="module")
def fake_split(tmp_path_factory):
  from data_pipelines.calvin.make_fake import main as make_fake
  out = tmp_path_factory.mktemp("calvin") / "split"
  make_fake(["--out", str(out), "--frames", "60", "--val_frames", "40", "--episode_len", "40",
             "--segment_len", "16"])
  return out


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_model, tmp_path_factory):
  from gr1_jax.model_checkpoint import numpy_params, save_model_checkpoint
  path = tmp_path_factory.mktemp("ckpt") / "tiny"
  save_model_checkpoint(str(path), numpy_params(tiny_model), tiny_model.config)
  return str(path)


def test_evaluate_cli_on_fake_calvin(fake_split, tiny_checkpoint, tmp_path):
  from experiments import evaluate
  out = tmp_path / "metrics.json"
  evaluate.main(["--checkpoint", tiny_checkpoint, "--data", str(fake_split), "--batch_size", "4",
                 "--max_batches", "2", "--output", str(out), "--quiet"])
  data = json.loads(out.read_text())
  assert data["num_windows"] == 8 and 0 <= data["gripper_accuracy"] <= 1
  assert data["arm_l1"] > 0 and data["arm_mse"] > 0
  for camera in ("static", "gripper"):
    assert 0 < data["video"][camera]["psnr"] < 100 and -1 <= data["video"][camera]["ssim"] <= 1
  with pytest.raises(FileNotFoundError, match="does not exist"):
    evaluate.main(["--checkpoint", tiny_checkpoint, "--data", str(tmp_path / "nope"), "--quiet"])


def test_visualize_cli_writes_images(fake_split, tiny_checkpoint, tmp_path):
  from experiments import visualize
  paths = visualize.main(["predictions", "--checkpoint", tiny_checkpoint, "--data", str(fake_split),
                          "--window", "1", "--out_dir", str(tmp_path), "--scale", "2"])
  grid = Image.open(paths["grid"])
  # 7 columns (the last 3 of 10 steps have no t+3 target) of 64-px frames (32 px x 2) with 2-px
  # gaps, a label margin, 2 rows; the canvas ends at the last frame.
  label = 8 + viz._text_width(["real t+3", "predicted"])
  assert grid.format == "PNG" and grid.size == (label + 2 + 7 * 66, 2 + 2 * (64 + 2))
  gif = Image.open(paths["animation"])
  assert gif.format == "GIF" and gif.size == (2 + 2 * 66, 2 + 66)
  # Pillow merges identical consecutive frames (the padded tail); the total duration is 10 steps.
  total = 0
  for i in range(gif.n_frames):
    gif.seek(i)
    total += gif.info["duration"]
  assert gif.n_frames > 1 and total == pytest.approx(10 * 1000 / 3, abs=60)  # GIF stores 10-ms units
  mask_path = visualize.main(["attention-mask", "--config", "tiny", "--seq_len", "2", "--cell", "3",
                              "--out", str(tmp_path / "mask.png")])
  mask = np.asarray(Image.open(mask_path).convert("RGB"))
  strip, tokens = 6, 19 * 2
  assert mask.shape[1] == strip + 1 + tokens * 3
  body = mask[strip + 1:strip + 1 + tokens * 3, strip + 1:, 0][1::3, 1::3] < 128   # one pixel per cell
  from gr1_jax.modules.attention_mask import attention_mask
  from gr1_jax.modules.token_layout import TokenLayout
  layout = TokenLayout.from_config(tiny_config().replace(seq_len=2, fwd_pred_next_n=1))
  want = np.asarray(attention_mask(layout, np.ones((1, 2), bool)))[0, 0]
  np.testing.assert_array_equal(body, want)


# ----------------------------------------------------------------------------- picture helpers
def test_patchify_roundtrip_and_norm_pix_rescale():
  rng = np.random.default_rng(2)
  frames = rng.normal(size=(3, 32, 32, 3)).astype(np.float32)
  patches = viz.patchify(frames, 16)
  np.testing.assert_array_equal(viz.unpatchify(patches, 16, 32), frames)
  from gr1_jax.modules.mae_vit import patchify as model_patchify
  np.testing.assert_array_equal(np.asarray(model_patchify(jnp.asarray(frames), 16)), patches)
  # A perfect norm-pix prediction (the standardised target) maps back to the real frame.
  mean = patches.mean(-1, keepdims=True)
  std = patches.std(-1, ddof=1, keepdims=True)
  standardised = (patches - mean) / (std + 1e-6)
  shown = viz.predictions_to_images(standardised, patch_size=16, image_size=32, norm_pix=True,
                                    reference=frames)
  np.testing.assert_allclose(shown, viz.unnormalize_imagenet(frames), atol=1e-5)
  with pytest.raises(ValueError, match="reference="):
    viz.predictions_to_images(standardised, patch_size=16, image_size=32, norm_pix=True)
  # The offline metric's rescale agrees with the picture's.
  rescaled = offline.predicted_frames(jnp.asarray(standardised), jnp.asarray(frames),
                                      patch_size=16, norm_pix=True)
  np.testing.assert_allclose(np.asarray(rescaled), shown, atol=1e-5)


def test_window_pairs_and_files(tmp_path):
  rng = np.random.default_rng(3)
  frames = rng.normal(size=(10, 32, 32, 3)).astype(np.float32)
  preds = viz.patchify(frames, 16)[[3, 4, 5, 6, 7, 8, 9, 9, 9, 9]]   # "perfect" t -> t+3 predictions
  mask = np.ones(10)
  mask[8:] = 0
  real, pred, valid = viz.window_prediction_frames(frames, preds, step_mask=mask, patch_size=16,
                                                   fwd_pred_next_n=3, norm_pix=False)
  np.testing.assert_array_equal(valid, [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
  np.testing.assert_allclose(real[:5], pred[:5], atol=1e-6)
  grid = viz.prediction_grid(real, pred, step_valid=valid)
  png = viz.save_png(tmp_path / "g.png", grid)
  assert Image.open(png).size == (grid.shape[1], grid.shape[0])
  mp4 = viz.save_animation(tmp_path / "a.mp4", viz.side_by_side_frames(real, pred, valid=valid), fps=5)
  import av
  with av.open(mp4) as container:
    decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
  assert len(decoded) == 10 and decoded[0].shape == (2 + 34, 2 + 2 * 34, 3)
  with pytest.raises(ValueError, match="unsupported animation extension"):
    viz.save_animation(tmp_path / "a.avi", [grid])
  with pytest.raises(ValueError, match="frames differ in size"):
    viz.frame_grid([[real[0], real[0][:16]]])


def test_frame_grid_ends_at_its_last_frame():
  """Steps without a target (the last fwd_pred_next_n of a window) leave no blank band on the right."""
  frames = np.full((10, 8, 8, 3), 40, np.uint8)
  valid = np.arange(10) < 7
  grid = viz.frame_grid([[f if ok else None for f, ok in zip(frames, valid)]] * 2, pad=2, label_width=30)
  assert grid.shape == (2 + 2 * (8 + 2), 30 + 2 + 7 * (8 + 2), 3)
  labelled = viz.prediction_grid(frames, frames, step_valid=valid)
  content = np.nonzero((labelled != 255).any(axis=(0, 2)))[0]
  assert labelled.shape[1] - 1 - content[-1] == 2      # only the padding after the last frame
  # Interior empty cells (padding inside a window) keep their column.
  middle = [frames[0], None, frames[2]]
  assert viz.frame_grid([middle], pad=2).shape == (12, 2 + 3 * 10, 3)
