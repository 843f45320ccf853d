r"""Pre-trains GR-1's frozen MAE image encoder on a training config's own frames.

    python -m experiments.pretrain_mae --config experiments/configs/pretrain.py:demo --out /tmp/gr1_demo/mae_v4
    python -m experiments.pretrain --config experiments/configs/pretrain.py:demo --workdir ... \
        --config.mae_from=/tmp/gr1_demo/mae_v4

GR-1 freezes an MAE ViT pre-trained on ImageNet (mae_pretrain_vit_base.pth, 224 px,
patch 16). A model at another resolution or width, or on another domain, has no such
encoder; this trains one with the MAE objective (He et al. 2022): hide a random
`--mask_ratio` of each frame's patches, encode the visible ones (GR-1's MAEEncoder,
its fixed sin-cos positions untouched), and reconstruct the hidden ones with a small
transformer decoder, MSE on the hidden patches. The encoder's sizes (config.model.mae)
and frames (config.data, the training split, its augmentation) come from the
experiment config, so the weights fit the model that will load them.

Writes to --out (see gr1_jax/mae_weights.py): mae_params.npz (the `model_mae`
sub-tree), mae.json (sizes, steps, losses) and reconstructions.png (held-out frames:
real, masked input, reconstruction). `config.mae_from=DIR` loads them into the frozen
encoder of a training run started from scratch (over `init_from`'s, if both are given).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from data_pipelines import batch_spec as bs
from gr1_jax import mae_weights, url_paths, visualization
from gr1_jax.image_preprocessing import preprocess_uint8, resize_bicubic_torch
from gr1_jax.model_config import GR1Config, MAEConfig
from gr1_jax.modules.mae_vit import MAEEncoder, patchify
from gr1_jax.modules.sincos import sincos_2d
from gr1_jax.modules.transformer_block import PreLNBlock

log = logging.getLogger("gr1_jax.pretrain_mae")


class MAEPretrainer(nnx.Module):
  """GR-1's MAEEncoder (`encoder`, saved) + a light decoder (discarded after training)."""

  def __init__(self, config: MAEConfig, *, decoder_width: int, decoder_depth: int, rngs: nnx.Rngs):
    self.config = config
    self.encoder = MAEEncoder(config, rngs=rngs)
    self.grid = config.image_size // config.patch_size
    self.decoder_embed = nnx.Linear(config.width, decoder_width, rngs=rngs)
    self.mask_token = nnx.Param(jax.random.normal(rngs.params(), (decoder_width,)) * 0.02)
    self.decoder_blocks = nnx.List([
        PreLNBlock(decoder_width, max(1, decoder_width // 32), 4 * decoder_width, activation="gelu",
                   ln_eps=1e-6, rngs=rngs) for _ in range(decoder_depth)])
    self.decoder_norm = nnx.LayerNorm(decoder_width, epsilon=1e-6, rngs=rngs)
    self.decoder_pred = nnx.Linear(decoder_width, config.patch_size ** 2 * 3, rngs=rngs)

  def encode_visible(self, images, keep):
    """images (N, S, S, 3) normalised, keep (N, K) patch indices -> (N, 1 + K, width)."""
    enc = self.encoder
    x = enc.patch_embed(patchify(images, self.config.patch_size)) + enc.pos_embed[...][:, 1:]
    x = jnp.take_along_axis(x, keep[..., None], axis=1)
    cls = enc.cls_token[...] + enc.pos_embed[...][:, :1]
    x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, x.shape[-1])), x], axis=1)
    for block in enc.blocks:
      x = block(x)
    return enc.norm(x)

  def __call__(self, images, keep):
    """-> predicted patches (N, P, p*p*3) for every position (visible ones included)."""
    n, k = keep.shape
    num_patches = self.grid ** 2
    x = self.decoder_embed(self.encode_visible(images, keep))
    tokens = jnp.broadcast_to(self.mask_token[...], (n, num_patches, x.shape[-1]))
    tokens = tokens.at[jnp.arange(n)[:, None], keep].set(x[:, 1:])
    tokens = tokens + jnp.asarray(sincos_2d(x.shape[-1], self.grid))
    x = jnp.concatenate([x[:, :1], tokens], axis=1)
    for block in self.decoder_blocks:
      x = block(x)
    return self.decoder_pred(self.decoder_norm(x))[:, 1:]


def random_keep(key, n: int, num_patches: int, num_keep: int):
  """(n, num_keep) distinct patch indices per frame, uniformly at random."""
  noise = jax.random.uniform(key, (n, num_patches))
  return jnp.argsort(noise, axis=-1)[:, :num_keep]


def masked_mse(preds, images, keep, patch_size: int):
  """Mean squared error over the hidden patches only (MAE's loss, without norm-pix)."""
  target = patchify(images, patch_size)
  hidden = jnp.ones(target.shape[:2]).at[jnp.arange(keep.shape[0])[:, None], keep].set(0.0)
  per_patch = ((preds - target) ** 2).mean(-1)
  return (per_patch * hidden).sum() / jnp.maximum(hidden.sum(), 1.0)


_FIXED = nnx.PathContains("pos_embed")   # MAE's sin-cos positions stay fixed


def _frames(batch: Mapping, size: int) -> np.ndarray:
  """Every valid frame of a batch of windows (static camera, and the wrist camera if present)."""
  frames = []
  for key in (bs.RGB_STATIC, bs.RGB_GRIPPER):
    if key in batch:
      images = np.asarray(batch[key])
      mask = np.asarray(batch[bs.STEP_MASK], bool) if bs.STEP_MASK in batch else np.ones(images.shape[:2], bool)
      chosen = images[mask]
      if chosen.shape[1:3] != (size, size):   # e.g. CALVIN's 200-px static and 84-px wrist frames
        resized = resize_bicubic_torch(jnp.asarray(chosen, jnp.float32) / 255.0, size)
        chosen = np.asarray(jnp.clip(jnp.round(resized * 255.0), 0, 255)).astype(np.uint8)
      frames.append(chosen)
  return np.concatenate(frames)


def _frame_stream(data_config: Mapping, model: GR1Config, *, seed: int, train: bool, windows: int):
  from gr1_jax.training import input_pipeline
  data = dict(data_config, frame_reuse=0)   # frames, not windows, are what is read here
  ds = input_pipeline.make_dataset(data, model, global_batch=windows, seed=seed, train=train)
  for batch in ds:
    yield _frames(batch, model.mae.image_size)


def pretrain_mae(data_config: Mapping, model: GR1Config, out: str, *, steps: int = 1500, batch_size: int = 64,
                 mask_ratio: float = 0.5, learning_rate: float = 2e-3, warmup_steps: int = 100,
                 decoder_width: int = 128, decoder_depth: int = 1, seed: int = 0, log_every: int = 250,
                 windows_per_read: int = 8) -> dict:
  """Trains the encoder of `model.mae` on `data_config`'s training frames; writes `out`; returns the
  summary saved in mae.json."""
  mae = model.mae
  num_patches = (mae.image_size // mae.patch_size) ** 2
  num_keep = max(1, int(round(num_patches * (1.0 - mask_ratio))))
  pretrainer = MAEPretrainer(mae, decoder_width=decoder_width, decoder_depth=decoder_depth,
                             rngs=nnx.Rngs(seed))
  graphdef, params, fixed = nnx.split(pretrainer, nnx.All(nnx.Param, nnx.Not(_FIXED)), ...)
  schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, steps, learning_rate * 0.01)
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.05,
                                                               mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)))
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, opt_state, frames, key):
    images = preprocess_uint8(frames, mae.image_size)
    keep = random_keep(key, images.shape[0], num_patches, num_keep)

    def loss_fn(p):
      return masked_mse(nnx.merge(graphdef, p, fixed)(images, keep), images, keep, mae.patch_size)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def eval_loss(params, frames, key):
    images = preprocess_uint8(frames, mae.image_size)
    keep = random_keep(key, images.shape[0], num_patches, num_keep)
    preds = nnx.merge(graphdef, params, fixed)(images, keep)
    return masked_mse(preds, images, keep, mae.patch_size), preds, keep

  stream = _frame_stream(data_config, model, seed=seed, train=True, windows=windows_per_read)
  held_out = next(_frame_stream(data_config, model, seed=seed, train=False, windows=windows_per_read))
  held_out = held_out[:batch_size]
  eval_key = jax.random.key(seed + 1)
  initial = float(eval_loss(params, held_out, eval_key)[0])
  log.info("MAE %s on %d-px frames, %d of %d patches visible; held-out masked MSE %.4f at step 0",
           f"width {mae.width} depth {mae.depth}", mae.image_size, num_keep, num_patches, initial)
  pool, key, start, losses = np.zeros((0,) + held_out.shape[1:], np.uint8), jax.random.key(seed), time.time(), []
  rng = np.random.default_rng(seed)
  for step in range(1, steps + 1):
    while len(pool) < batch_size:
      pool = np.concatenate([pool, next(stream)])
    order = rng.permutation(len(pool))
    frames, pool = pool[order[:batch_size]], pool[order[batch_size:]]
    key, sub = jax.random.split(key)
    params, opt_state, loss = train_step(params, opt_state, frames, sub)
    losses.append(loss)
    if step % log_every == 0 or step == steps:
      log.info("MAE step %d/%d: train masked MSE %.4f (%.0f s)", step, steps,
               float(np.mean(jax.device_get(losses))), time.time() - start)
      losses = []
  final, preds, keep = eval_loss(params, held_out, eval_key)
  final = float(final)
  log.info("held-out masked MSE %.4f (from %.4f) after %d steps, %.0f s", final, initial, steps,
           time.time() - start)
  encoder = nnx.to_pure_dict(nnx.state(nnx.merge(graphdef, params, fixed).encoder, nnx.Param))
  info = {"steps": steps, "batch_size": batch_size, "mask_ratio": mask_ratio, "learning_rate": learning_rate,
          "held_out_masked_mse": {"initial": initial, "final": final},
          "data": {k: data_config[k] for k in ("name", "path", "mixture", "image_size") if k in data_config},
          "seconds": time.time() - start}
  _write(out, encoder, mae, info, _reconstruction_image(held_out, preds, keep, mae))
  return info


def _reconstruction_image(frames, preds, keep, mae: MAEConfig) -> np.ndarray:
  """Rows real / masked input / reconstruction (visible patches pasted back) of 8 frames."""
  frames, preds, keep = np.asarray(frames[:8]), np.asarray(preds[:8]), np.asarray(keep[:8])
  real = visualization.unnormalize_imagenet(np.asarray(preprocess_uint8(frames, mae.image_size)))
  patches = visualization.patchify(real, mae.patch_size)
  predicted = visualization.patchify(visualization.unnormalize_imagenet(
      visualization.unpatchify(preds, mae.patch_size, mae.image_size)), mae.patch_size)
  visible = np.zeros(patches.shape[:2], bool)
  visible[np.arange(len(keep))[:, None], keep] = True
  masked = np.where(visible[..., None], patches, 0.5)
  recon = np.where(visible[..., None], patches, np.clip(predicted, 0, 1))
  back = lambda p: visualization.unpatchify(p, mae.patch_size, mae.image_size)
  scale = max(1, 96 // mae.image_size)
  rows = [list(visualization.upscale_nearest(x, scale)) for x in (real, back(masked), back(recon))]
  return visualization.frame_grid(rows, row_labels=["real", "visible", "reconstructed"])


def _write(out: str, encoder: dict, mae: MAEConfig, info: dict, image: np.ndarray) -> None:
  """All files appear together: written under a temporary name, then renamed (locally)."""
  if url_paths.is_url(out):
    mae_weights.save(out, encoder, mae, info)
    visualization.save_png(url_paths.join(out, "reconstructions.png"), image)
    return
  out = os.path.abspath(out)
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
  try:
    mae_weights.save(tmp, encoder, mae, info)
    visualization.save_png(os.path.join(tmp, "reconstructions.png"), image)
    if os.path.isdir(out):
      shutil.rmtree(out)
    os.replace(tmp, out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _define_flags():
  """Defined only when run as a script: the demo imports this module under experiments.pretrain,
  whose own --config flag would collide."""
  flags.DEFINE_string("out", None, "directory for mae_params.npz, mae.json, reconstructions.png")
  flags.DEFINE_integer("steps", 1500, "training steps")
  flags.DEFINE_integer("batch_size", 64, "frames per step")
  flags.DEFINE_float("mask_ratio", 0.5, "fraction of patches hidden from the encoder")
  flags.DEFINE_float("learning_rate", 2e-3, "AdamW peak learning rate (warm-up, cosine)")
  flags.DEFINE_integer("seed", 0, "")
  return config_flags.DEFINE_config_file("config", None, "a training config whose model.mae and data to use",
                                         lock_config=True)


def main(argv, config_flag):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
  from experiments import demo_data
  config, f = config_flag.value, flags.FLAGS
  demo_data.ensure(config.data)
  model = GR1Config.from_dict(config.model.to_dict())
  pretrain_mae(config.data.to_dict(), model, f.out, steps=f.steps, batch_size=f.batch_size,
               mask_ratio=f.mask_ratio, learning_rate=f.learning_rate, seed=f.seed)


if __name__ == "__main__":
  _config_flag = _define_flags()
  flags.mark_flags_as_required(["config", "out"])
  app.run(lambda argv: main(argv, _config_flag))
