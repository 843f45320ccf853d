"""Pictures of what GR-1 sees and predicts: frame grids, animations, the attention mask.

Numpy + pillow (+ PyAV for MP4) only; no JAX, so data pipelines, the training
loop's image summaries and the CLIs can all call it on host arrays.

    real = unnormalize_imagenet(rgb)                         # (L,H,W,3) model input -> [0,1]
    pred = predictions_to_images(obs_preds, patch_size=16, image_size=224,
                                 norm_pix=True, reference=rgb_target_norm)
    grid = prediction_grid(real_future, pred, step_valid=mask)  # uint8 (2 rows of frames)
    save_png("grid.png", grid); save_animation("pred.gif", side_by_side_frames(...))
    save_png("mask.png", attention_mask_image(config))

Predicted frames: the decoder outputs patches (…, P, p*p*3) in the (pixel row,
pixel col, channel) order of `modules.mae_vit.patchify`, in ImageNet-normalised
pixel space. A model trained WITHOUT norm-pix (`norm_pix_loss=False`) predicts
those pixels directly, so its frames are viewable after un-normalising. A model
trained WITH norm-pix (the official default) predicts each patch standardised
by its own mean and std: its colour and brightness per patch are lost. For a
picture anyway we re-scale each predicted patch with the mean/std of the
corresponding patch of the REAL target frame (`reference=`), as MAE's
visualisations do; this borrows low-frequency content from the ground truth, so
such pictures show structure only and must not be read as the model's colours.
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np

from gr1_jax import atomic_files

IMAGENET_MEAN = np.asarray((0.485, 0.456, 0.406), np.float32)
IMAGENET_STD = np.asarray((0.229, 0.224, 0.225), np.float32)


# ----------------------------------------------------------------------------- pixels
def unnormalize_imagenet(images) -> np.ndarray:
  """ImageNet-normalised (..., H, W, 3) -> float32 in [0, 1] (clipped)."""
  images = np.asarray(images, np.float32)
  if images.shape[-1:] != (3,):
    raise ValueError(f"images has shape {images.shape}, expected RGB channels last (..., H, W, 3)")
  return np.clip(images * IMAGENET_STD + IMAGENET_MEAN, 0.0, 1.0)


def to_uint8(images01) -> np.ndarray:
  """[0, 1] floats -> uint8 (rounded, clipped)."""
  return np.clip(np.rint(np.asarray(images01, np.float32) * 255.0), 0, 255).astype(np.uint8)


def patchify(images, patch_size: int) -> np.ndarray:
  """(..., H, W, C) -> (..., H/p * W/p, p*p*C), the model's patch order (numpy twin)."""
  images = np.asarray(images)
  *lead, h, w, c = images.shape
  if h % patch_size or w % patch_size:
    raise ValueError(f"image size {h}x{w} is not a multiple of patch_size={patch_size}")
  x = images.reshape(*lead, h // patch_size, patch_size, w // patch_size, patch_size, c)
  x = np.moveaxis(x, -4, -3)
  return x.reshape(*lead, (h // patch_size) * (w // patch_size), patch_size * patch_size * c)


def unpatchify(patches, patch_size: int, image_size: int, channels: int = 3) -> np.ndarray:
  """(..., P, p*p*C) -> (..., H, W, C); inverse of `patchify` for square images."""
  patches = np.asarray(patches)
  grid = image_size // patch_size
  *lead, num, dim = patches.shape
  if num != grid * grid or dim != patch_size * patch_size * channels:
    raise ValueError(f"patches have shape {patches.shape}, expected (..., {grid * grid}, "
                     f"{patch_size * patch_size * channels}) for image_size={image_size}, "
                     f"patch_size={patch_size}")
  x = patches.reshape(*lead, grid, grid, patch_size, patch_size, channels)
  x = np.moveaxis(x, -3, -4)  # (..., grid, p, grid, p, C)
  return x.reshape(*lead, image_size, image_size, channels)


def predictions_to_images(preds, *, patch_size: int, image_size: int, norm_pix: bool,
                          reference=None) -> np.ndarray:
  """Decoder output (..., P, p*p*3) -> viewable float32 frames (..., H, W, 3) in [0, 1].

  norm_pix=False: the predictions are ImageNet-normalised pixels; just un-normalise.
  norm_pix=True: `reference` (..., H, W, 3), the ImageNet-normalised real target
  frames, is required; each predicted patch gets that patch's mean and unbiased
  std back (see the module docstring for what that does and does not show).
  """
  preds = np.asarray(preds, np.float32)
  if norm_pix:
    if reference is None:
      raise ValueError("norm_pix=True predictions are per-patch standardised; pass reference= "
                       "(the real, ImageNet-normalised target frames) to re-scale them, or use a "
                       "checkpoint trained with norm_pix_loss=False for true-colour predictions")
    ref = patchify(np.asarray(reference, np.float32), patch_size)
    if ref.shape != preds.shape:
      raise ValueError(f"reference patchifies to {ref.shape}, predictions have shape {preds.shape}")
    mean = ref.mean(-1, keepdims=True)
    std = ref.std(-1, ddof=1, keepdims=True)
    preds = preds * (std + 1e-6) + mean
  return unnormalize_imagenet(unpatchify(preds, patch_size, image_size))


# ----------------------------------------------------------------------------- grids
def _as_uint8_frame(frame) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[-1] != 3:
    raise ValueError(f"a frame has shape {frame.shape}, expected (H, W, 3)")
  return frame if frame.dtype == np.uint8 else to_uint8(frame)


def frame_grid(rows: Sequence[Sequence[np.ndarray | None]], *, pad: int = 2,
               row_labels: Sequence[str] | None = None, background: int = 255,
               label_width: int = 0) -> np.ndarray:
  """Tiles frames (uint8 or [0,1] floats, all the same size) into a uint8 image.

  `None` leaves an empty (background) cell, e.g. predictions with no valid target;
  columns after the last non-empty cell are dropped, so the canvas ends `pad` pixels
  after the last frame: label_width + pad + ncols * (w + pad) wide, pad + nrows * (h + pad)
  high, ncols counting up to the last column holding a frame.
  row_labels are drawn in a left margin of `label_width` pixels (default: sized to fit).
  """
  if not rows or not any(len(r) for r in rows):
    raise ValueError("frame_grid needs at least one frame")
  cells = [_as_uint8_frame(f) for r in rows for f in r if f is not None]
  if not cells:
    raise ValueError("frame_grid got only empty cells")
  h, w = cells[0].shape[:2]
  for cell in cells:
    if cell.shape[:2] != (h, w):
      raise ValueError(f"frames differ in size: {cell.shape[:2]} vs {(h, w)}; resize them first")
  ncols = max(j + 1 for r in rows for j, f in enumerate(r) if f is not None)
  if row_labels is not None and len(row_labels) != len(rows):
    raise ValueError(f"{len(row_labels)} row labels for {len(rows)} rows")
  if row_labels is not None and not label_width:
    label_width = 8 + _text_width(row_labels)
  height = pad + len(rows) * (h + pad)
  width = label_width + pad + ncols * (w + pad)
  canvas = np.full((height, width, 3), background, np.uint8)
  for i, row in enumerate(rows):
    for j, frame in enumerate(row[:ncols]):
      if frame is None:
        continue
      y, x = pad + i * (h + pad), label_width + pad + j * (w + pad)
      canvas[y:y + h, x:x + w] = _as_uint8_frame(frame)
  if row_labels is not None:
    from PIL import Image, ImageDraw
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for i, label in enumerate(row_labels):
      draw.text((4, pad + i * (h + pad) + h // 2 - 5), label, fill=(0, 0, 0))
    canvas = np.asarray(image)
  return canvas


def _text_width(labels: Sequence[str]) -> int:
  """Width in pixels of the widest label in PIL's default font (as frame_grid draws them)."""
  from PIL import Image, ImageDraw
  draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  return max(int(np.ceil(draw.textlength(label))) for label in labels)


def upscale_nearest(frames, factor: int) -> np.ndarray:
  """Integer nearest-neighbour upscaling of (..., H, W, C) (small tiny-model frames)."""
  frames = np.asarray(frames)
  if factor <= 1:
    return frames
  return np.repeat(np.repeat(frames, factor, axis=-3), factor, axis=-2)


def prediction_grid(real, predicted, *, step_valid=None, labels=("real t+n", "predicted")) -> np.ndarray:
  """Two rows: real future frames over predicted ones, column t = window step t.

  real, predicted: (L, H, W, 3) uint8 or [0,1] floats (real[t] = the target of
  the prediction made at step t, i.e. frame t + fwd_pred_next_n; use None
  entries via step_valid=False for steps without a valid target).
  """
  real, predicted = np.asarray(real), np.asarray(predicted)
  if real.shape != predicted.shape:
    raise ValueError(f"real frames {real.shape} and predicted frames {predicted.shape} differ")
  valid = np.ones(len(real), bool) if step_valid is None else np.asarray(step_valid, bool)
  if valid.shape != (len(real),):
    raise ValueError(f"step_valid has shape {valid.shape}, expected ({len(real)},)")
  rows = [[f if ok else None for f, ok in zip(real, valid)],
          [f if ok else None for f, ok in zip(predicted, valid)]]
  return frame_grid(rows, row_labels=list(labels))


def window_prediction_frames(rgb_normalized, obs_preds, *, step_mask, patch_size: int,
                             fwd_pred_next_n: int, norm_pix: bool):
  """One validation window -> (real future (L,H,W,3) [0,1], predicted (L,H,W,3) [0,1], valid (L,)).

  rgb_normalized: (L, H, W, 3) the model's (ImageNet-normalised) input frames;
  obs_preds: (L, P, p*p*3) decoder output; the prediction at step t targets
  frame t + n, so steps whose target falls outside the window or on padding are
  marked invalid (their real cell shows nothing).
  """
  rgb = np.asarray(rgb_normalized, np.float32)
  steps, size = rgb.shape[0], rgb.shape[1]
  mask = np.asarray(step_mask, bool).reshape(steps)
  n = int(fwd_pred_next_n)
  target_index = np.minimum(np.arange(steps) + n, steps - 1)
  valid = (np.arange(steps) + n < steps) & mask[target_index] & mask
  targets = rgb[target_index]
  predicted = predictions_to_images(obs_preds, patch_size=patch_size, image_size=size,
                                    norm_pix=norm_pix, reference=targets if norm_pix else None)
  return unnormalize_imagenet(targets), predicted, valid


def side_by_side_frames(real, predicted, *, valid=None, pad: int = 2) -> list[np.ndarray]:
  """Per-step [real | predicted] uint8 frames for an animation (invalid steps grey on the right)."""
  real, predicted = np.asarray(real), np.asarray(predicted)
  valid = np.ones(len(real), bool) if valid is None else np.asarray(valid, bool)
  out = []
  for r, p, ok in zip(real, predicted, valid):
    p = _as_uint8_frame(p) if ok else np.full_like(_as_uint8_frame(r), 128)
    out.append(frame_grid([[r, p]], pad=pad))
  return out


# ----------------------------------------------------------------------------- attention mask
_GROUP_COLOURS = {
    "lang": (231, 76, 60), "state": (230, 126, 34), "patch": (52, 152, 219), "cls": (41, 128, 185),
    "hand_patch": (46, 204, 113), "hand_cls": (39, 174, 96), "act": (155, 89, 182),
    "obs_query": (127, 140, 141), "obs_hand_query": (149, 165, 166),
}


def attention_mask_image(config, step_valid=None, *, cell: int | None = None,
                         max_size: int = 900) -> np.ndarray:
  """uint8 picture of GR-1's attention mask (rows = queries, columns = keys) for a model config.

  Allowed entries are dark, blocked ones white; a colour strip on the top and left
  edges marks the token group of every position (legend drawn below), and thin grey
  lines separate timesteps. step_valid (seq_len,) marks padded steps (default: all valid).
  """
  from gr1_jax.modules.attention_mask import attention_mask
  from gr1_jax.modules.token_layout import TokenLayout
  layout = TokenLayout.from_config(config)
  steps = layout.seq_len
  valid = np.ones((1, steps), bool) if step_valid is None else np.asarray(step_valid, bool).reshape(1, steps)
  mask = np.asarray(attention_mask(layout, valid))[0, 0]                 # (T, T) bool
  t = mask.shape[0]
  cell = cell or max(1, min(8, max_size // t))
  per_step = layout.tokens_per_step
  names = [g.name for g in layout.groups for _ in range(g.count)] * steps
  strip = max(4, cell * 2)

  body = np.where(mask, 40, 255).astype(np.uint8)
  body = np.repeat(np.repeat(body, cell, 0), cell, 1)
  body = np.stack([body] * 3, -1)
  if cell > 1:                                                          # timestep separators
    for s in range(1, steps):
      edge = s * per_step * cell
      body[:, edge] = np.minimum(body[:, edge], 170)
      body[edge, :] = np.minimum(body[edge, :], 170)
  colours = np.asarray([_GROUP_COLOURS.get(n, (0, 0, 0)) for n in names], np.uint8)
  top = np.repeat(np.repeat(colours[None], strip, 0), cell, 1)         # (strip, T*cell, 3)
  left = np.repeat(np.repeat(colours[:, None], strip, 1), cell, 0)     # (T*cell, strip, 3)
  size = t * cell
  canvas = np.full((strip + 1 + size, strip + 1 + size, 3), 255, np.uint8)
  canvas[:strip, strip + 1:] = top
  canvas[strip + 1:, :strip] = left
  canvas[strip + 1:, strip + 1:] = body

  from PIL import Image, ImageDraw
  legend_groups = [g.name for g in layout.groups]
  legend_h = 14 * ((len(legend_groups) + 2) // 3) + 22
  image = Image.new("RGB", (canvas.shape[1], canvas.shape[0] + legend_h), (255, 255, 255))
  image.paste(Image.fromarray(canvas), (0, 0))
  draw = ImageDraw.Draw(image)
  y0 = canvas.shape[0] + 4
  col_w = max(1, canvas.shape[1] // 3)
  for i, name in enumerate(legend_groups):
    x, y = 4 + (i % 3) * col_w, y0 + 14 * (i // 3)
    draw.rectangle([x, y + 2, x + 9, y + 11], fill=_GROUP_COLOURS.get(name, (0, 0, 0)))
    draw.text((x + 13, y), name, fill=(0, 0, 0))
  draw.text((4, y0 + 14 * ((len(legend_groups) + 2) // 3)),
            f"{steps} steps x {per_step} tokens; dark = may attend (row -> column)", fill=(0, 0, 0))
  return np.asarray(image)


# ----------------------------------------------------------------------------- files
def png_bytes(image) -> bytes:
  from PIL import Image
  buffer = io.BytesIO()
  Image.fromarray(_as_uint8_frame(image)).save(buffer, format="PNG", optimize=True)
  return buffer.getvalue()


def save_png(path: str | os.PathLike, image) -> str:
  """Writes an (H, W, 3) image (uint8 or [0,1] floats) as PNG (temp file, then rename)."""
  return atomic_files.write_bytes(path, png_bytes(image))


def gif_bytes(frames: Sequence[np.ndarray], fps: float = 5.0) -> bytes:
  from PIL import Image
  images = [Image.fromarray(_as_uint8_frame(f)) for f in frames]
  if not images:
    raise ValueError("an animation needs at least one frame")
  buffer = io.BytesIO()
  images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                 duration=max(1, int(round(1000.0 / fps))), loop=0)
  return buffer.getvalue()


def mp4_bytes(frames: Sequence[np.ndarray], fps: float = 30.0) -> bytes:
  """H.264 MP4 (yuv420p) via PyAV; odd frame sizes are padded to even ones."""
  import fractions

  import av
  frames = [_as_uint8_frame(f) for f in frames]
  if not frames:
    raise ValueError("a video needs at least one frame")
  h, w = frames[0].shape[:2]
  eh, ew = h + h % 2, w + w % 2
  buffer = io.BytesIO()
  with av.open(buffer, mode="w", format="mp4") as container:
    stream = container.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1000))
    stream.width, stream.height, stream.pix_fmt = ew, eh, "yuv420p"
    for frame in frames:
      if frame.shape[:2] != (h, w):
        raise ValueError(f"video frames differ in size: {frame.shape[:2]} vs {(h, w)}")
      if (eh, ew) != (h, w):
        frame = np.pad(frame, ((0, eh - h), (0, ew - w), (0, 0)), mode="edge")
      for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return buffer.getvalue()


def save_animation(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float = 5.0) -> str:
  """Writes frames as an animated GIF (.gif) or an H.264 MP4 (.mp4), by extension."""
  ext = os.path.splitext(os.fspath(path))[1].lower()
  if ext == ".gif":
    return atomic_files.write_bytes(path, gif_bytes(frames, fps))
  if ext == ".mp4":
    return atomic_files.write_bytes(path, mp4_bytes(frames, fps))
  raise ValueError(f"{path}: unsupported animation extension {ext!r}; use .gif or .mp4")
