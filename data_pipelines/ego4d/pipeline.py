"""Grain pipeline for stage-1 (video) pretraining windows; no JAX.

    ds = make_pretrain_dataset([("/data/ego4d_clips", 0.8), (calvin_video_ds, 0.2)],
                               batch_size=32, seed=0, shuffle=True, augment=True,
                               shard_index=jax.process_index(), shard_count=jax.process_count())
    it = iter(ds)            # checkpoint with grain.checkpoint.CheckpointSave(it) under Orbax,
    batch = next(it)         # or it.get_state() / it.set_state(state)

Each element (and batch, with a leading B) holds the PRETRAIN_KEYS of batch_spec.py
plus two trace fields:
    step_mask        float32 (L,)          1 = real frame, 0 = right padding
    language_tokens  int32   (77,)         CLIP BPE ids of the clip's text (truncated at 77)
    rgb_static       uint8   (L, S, S, 3)  S = image_size (224); zeros where padded
    frame_index      int32   (L,)          source video frame of each step, -1 = padding / unknown
    source_index     int32   ()            position of the element's source in `sources`

Window rule (Ego4D clip records): a clip holds n frames at 10 fps (clips.py).  A window
takes seq_len frames at `frame_stride` stored frames (default 1, i.e. 0.1 s apart):
span = (seq_len - 1) * frame_stride + 1.  Train (shuffle=True): start uniform in
[0, n - span] (only full windows when the clip is long enough); eval: start
(n - span) // 2, the window centred on the narration.  Clips shorter than span start
at 0 and are right-padded (step_mask 0, zero images).  The video target of step t is
step t + 3 of the same window (the loss shifts; the last 3 steps have no target).
Augmentation: DrQ random shift (data_pipelines.random_shift, replicate pad `shift_pad`,
default 10 px at 224, one shift per window), drawn from the element's own RNG.

Frame reuse (frame_reuse = W > 0, data_pipelines/frame_reuse.py): each element is a
segment, i.e. a window of S = seq_len + W - 1 steps drawn by the same rule (train: start
uniform over the clip's full segments; one random shift per segment); its steps
w .. w+seq_len-1 are the window starting w frames (w * frame_stride stored frames) later.
Every source of a mixture then yields segments (external ones must already hold S steps,
e.g. CALVIN's calvin_windows(..., frame_reuse=W)).

Determinism: each element's RNG is derived from (seed, source, element index), the
shuffle from (seed, source, epoch); per-process sharding takes every shard_count-th
clip starting at shard_index before shuffling, so processes see disjoint clips.
Mixing: sources are mixed with the given weights by grain's MapDataset.mix (a fixed
interleave with those proportions), or IterDataset.mix if any source is an IterDataset.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import grain
import numpy as np
from PIL import Image

from data_pipelines import batch_spec
from data_pipelines import frame_reuse as reuse
from data_pipelines import image_codec
from data_pipelines import random_shift
from data_pipelines.ego4d import records
from data_pipelines.errors import DataError

FRAME_INDEX = "frame_index"
SOURCE_INDEX = "source_index"
OUTPUT_KEYS = batch_spec.PRETRAIN_KEYS + (FRAME_INDEX, SOURCE_INDEX)
DEFAULT_SEQ_LEN = 10
DEFAULT_IMAGE_SIZE = 224
DEFAULT_SHIFT_PAD = 10


@functools.lru_cache(maxsize=1 << 16)
def _tokens(text: str) -> np.ndarray:
  from gr1_jax.tokenizer import tokenize
  out = tokenize([text], context_length=77, truncate=True)[0].astype(np.int32)
  out.flags.writeable = False
  return out


def window_indices(num_frames: int, seq_len: int, frame_stride: int, start: int) -> list[int]:
  return list(range(start, num_frames, frame_stride))[:seq_len]


def window_start(num_frames: int, seq_len: int, frame_stride: int, rng: np.random.Generator | None) -> int:
  """Uniform over full windows with rng (train), centred without (eval); 0 if too short."""
  span = (seq_len - 1) * frame_stride + 1
  if num_frames <= span:
    return 0
  max_start = num_frames - span
  return int(rng.integers(0, max_start + 1)) if rng is not None else max_start // 2


def _decode_into(out: np.ndarray, data, clip_uid: str) -> None:
  """Decodes one stored JPEG into `out` (H, W, 3) uint8 in place."""
  image_codec.decode_image(data, out, what=f"clip {clip_uid!r}")


def _parse_element(element) -> tuple[dict, list]:
  """(header, jpeg byte views) of a clip record or of a TFDS clip example."""
  if isinstance(element, (bytes, bytearray, memoryview)):
    header, offset = records.decode_header(element)
    view = memoryview(element)
    return header, [view[a:b] for a, b in records.jpeg_slices(header, offset)]
  if isinstance(element, dict) and "frames" in element:   # tfds_builder examples
    from data_pipelines.ego4d import tfds_builder
    return tfds_builder.example_to_header(element)
  raise TypeError(f"expected a clip record (bytes) or a TFDS clip example, got {type(element).__name__}")


class ClipToWindow:
  """Clip record -> one window (see module doc). Picklable for grain workers."""

  def __init__(self, *, seq_len: int, frame_stride: int, train: bool, shift_pad: int,
               source_index: int, image_size: int | None = None):
    if seq_len < 1 or frame_stride < 1:
      raise ValueError(f"seq_len ({seq_len}) and frame_stride ({frame_stride}) must be >= 1")
    self.seq_len, self.frame_stride, self.train = seq_len, frame_stride, train
    self.shift_pad, self.source_index, self.image_size = shift_pad, source_index, image_size

  def __call__(self, element, rng: np.random.Generator) -> dict[str, Any]:
    header, jpegs = _parse_element(element)
    start = window_start(len(jpegs), self.seq_len, self.frame_stride, rng if self.train else None)
    out = self._read(header, jpegs, start)
    if self.shift_pad > 0:
      out[batch_spec.RGB_STATIC] = random_shift.random_shift(out[batch_spec.RGB_STATIC], self.shift_pad, rng)
    return out

  def window_at(self, element, start: int) -> dict[str, Any]:
    """The window starting at stored frame `start` of the clip, without augmentation."""
    header, jpegs = _parse_element(element)
    return self._read(header, jpegs, start)

  def _read(self, header: dict, jpegs: list, start: int) -> dict[str, Any]:
    h, w = int(header["height"]), int(header["width"])
    if self.image_size is not None and (h, w) != (self.image_size, self.image_size):
      raise ValueError(f"clip {header['clip_uid']!r} is {h}x{w}, the pipeline expects image_size="
                       f"{self.image_size}; prepare with --size {self.image_size} or change image_size")
    which = window_indices(len(jpegs), self.seq_len, self.frame_stride, start)
    frames = np.zeros((self.seq_len, h, w, 3), np.uint8)
    for k, j in enumerate(which):
      _decode_into(frames[k], jpegs[j], header["clip_uid"])
    mask = np.zeros((self.seq_len,), np.float32)
    mask[:len(which)] = 1.0
    frame_index = np.full((self.seq_len,), -1, np.int32)
    frame_index[:len(which)] = [header["frame_index"][j] for j in which]
    return {batch_spec.STEP_MASK: mask, batch_spec.LANGUAGE_TOKENS: _tokens(header["text"]).copy(),
            batch_spec.RGB_STATIC: frames, FRAME_INDEX: frame_index,
            SOURCE_INDEX: np.int32(self.source_index)}


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
  """(L, H, W, 3) uint8 -> (L, size, size, 3) with PIL bicubic (host-side adapter)."""
  frames = np.asarray(frames)
  if frames.shape[1:3] == (size, size):
    return frames
  return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC)) for f in frames])


class AdaptExternal:
  """Makes another pretraining source's elements (e.g. CALVIN video-only windows, with
  PRETRAIN_KEYS and rgb_static at its native resolution) match Ego4D windows:
  rgb_static resized to image_size (PIL bicubic), trace fields added, dtypes checked."""

  def __init__(self, *, seq_len: int, image_size: int, source_index: int):
    self.seq_len, self.image_size, self.source_index = seq_len, image_size, source_index

  def __call__(self, ex: dict) -> dict[str, Any]:
    for key in batch_spec.PRETRAIN_KEYS:
      if key not in ex:
        raise ValueError(f"pretraining source {self.source_index} yields elements without {key!r} "
                         f"(keys {sorted(ex)}); expected unbatched windows with {batch_spec.PRETRAIN_KEYS}")
    rgb = np.asarray(ex[batch_spec.RGB_STATIC])
    mask = np.asarray(ex[batch_spec.STEP_MASK], np.float32)
    if rgb.ndim != 4 or rgb.shape[0] != self.seq_len or rgb.dtype != np.uint8 or mask.shape != (self.seq_len,):
      raise ValueError(f"pretraining source {self.source_index}: rgb_static {rgb.shape} {rgb.dtype} / "
                       f"step_mask {mask.shape}; expected uint8 ({self.seq_len}, H, W, 3) / ({self.seq_len},)")
    tokens = np.asarray(ex[batch_spec.LANGUAGE_TOKENS], np.int32).reshape(-1)
    if tokens.shape != (77,):
      raise ValueError(f"pretraining source {self.source_index}: language_tokens {tokens.shape}, expected (77,)")
    fi = np.asarray(ex.get(FRAME_INDEX, np.full((self.seq_len,), -1)), np.int32).reshape(self.seq_len)
    return {batch_spec.STEP_MASK: mask, batch_spec.LANGUAGE_TOKENS: tokens,
            batch_spec.RGB_STATIC: resize_frames(rgb, self.image_size), FRAME_INDEX: fi,
            SOURCE_INDEX: np.int32(self.source_index)}


def clip_source(path: str, split: str = "train", *, require_complete: bool = True) -> grain.MapDataset:
  """Random-access clips of a prepared directory: prepare.py shards, or a TFDS build of
  tfds_builder.Ego4dClips (a directory holding dataset_info.json)."""
  path = os.fspath(path)
  if os.path.isfile(os.path.join(path, "dataset_info.json")):
    from data_pipelines.ego4d import tfds_builder
    return grain.MapDataset.source(tfds_builder.data_source(path, split))
  return grain.MapDataset.source(grain.sources.ArrayRecordDataSource(
      records.list_shards(path, split, require_complete=require_complete)))


def ego4d_windows(path: str, *, split: str = "train", seq_len: int = DEFAULT_SEQ_LEN, frame_stride: int = 1,
                  shuffle: bool = True, augment: bool = False, shift_pad: int = DEFAULT_SHIFT_PAD,
                  seed: int = 0, shard_index: int = 0, shard_count: int = 1, num_epochs: int | None = None,
                  image_size: int | None = DEFAULT_IMAGE_SIZE, source_index: int = 0,
                  require_complete: bool = True, frame_reuse: int = 0) -> grain.MapDataset:
  """Unbatched windows of one prepared clip directory (infinite when num_epochs is None);
  frame_reuse = W > 0: segments of seq_len + W - 1 steps instead (module docstring)."""
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} outside [0, {shard_count})")
  ds = clip_source(path, split, require_complete=require_complete)
  ds = ds[shard_index::shard_count]
  if len(ds) == 0:
    raise DataError(f"{path!r} split {split!r}: process shard {shard_index} of {shard_count} holds no clip "
                    f"({len(ds)} clips); use fewer processes or more data")
  if shuffle:
    ds = ds.shuffle(seed=seed % 2**32)
  ds = ds.repeat(num_epochs)
  if frame_reuse:
    seq_len = reuse.segment_length(seq_len, frame_reuse)
  fn = ClipToWindow(seq_len=seq_len, frame_stride=frame_stride, train=shuffle,
                    shift_pad=shift_pad if augment else 0, source_index=source_index, image_size=image_size)
  return ds.random_map(fn, seed=(seed + 7919) % 2**32)


def source_seed(seed: int, i: int) -> int:
  """The seed of the i-th mixture source (also for sources built outside, e.g. CALVIN windows)."""
  return (seed * 1_000_003 + i * 10_007) % 2**32


def make_pretrain_dataset(sources, *, batch_size: int, seq_len: int = DEFAULT_SEQ_LEN, seed: int = 0,
                          shuffle: bool = True, augment: bool = False, shard_index: int = 0,
                          shard_count: int = 1, worker_count: int = 0, split: str = "train",
                          frame_stride: int = 1, num_epochs: int | None = None,
                          image_size: int = DEFAULT_IMAGE_SIZE, shift_pad: int = DEFAULT_SHIFT_PAD,
                          drop_remainder: bool = True, read_threads: int = 2,
                          prefetch_buffer_size: int = 64, worker_buffer_size: int = 2,
                          frame_reuse: int = 0) -> grain.IterDataset:
  """Batched pretraining windows from weighted sources (see module doc).

  `sources`: a path, or a sequence of (source, weight); a source is a prepared clip
  directory (prepare.py or the TFDS builder) or a grain MapDataset/IterDataset of
  unbatched windows with PRETRAIN_KEYS (e.g. CALVIN's video-only mode).  Such external
  datasets must already be sharded per process; finite MapDatasets are shuffled here
  (if shuffle) and repeated (if num_epochs is None).  Weights need not sum to 1.
  worker_count > 0 runs the decoding in that many grain worker processes
  (mp_prefetch; scripts need `if __name__ == "__main__":`; absl flags are marked
  parsed with their defaults if nothing parsed them yet).
  frame_reuse = W > 0: elements are segments of seq_len + W - 1 steps (W windows each);
  external sources must then yield segments of that length.
  """
  if isinstance(sources, (str, os.PathLike)):
    sources = [(sources, 1.0)]
  sources = list(sources)
  if not sources:
    raise ValueError("sources is empty")
  if frame_reuse < 0:
    raise ValueError(f"frame_reuse must be 0 (per-window) or the windows per segment, got {frame_reuse}")
  steps = reuse.segment_length(seq_len, frame_reuse) if frame_reuse else seq_len
  datasets, weights = [], []
  for i, item in enumerate(sources):
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
      raise ValueError(f"sources[{i}] must be a (source, weight) pair, got {item!r}")
    src, weight = item
    if not float(weight) > 0:
      raise ValueError(f"sources[{i}] has weight {weight}; weights must be > 0")
    s_seed = source_seed(seed, i)
    if isinstance(src, (str, os.PathLike)):
      ds = ego4d_windows(os.fspath(src), split=split, seq_len=seq_len, frame_stride=frame_stride,
                         shuffle=shuffle, augment=augment, shift_pad=shift_pad, seed=s_seed,
                         shard_index=shard_index, shard_count=shard_count, num_epochs=num_epochs,
                         image_size=image_size, source_index=i, frame_reuse=frame_reuse)
    elif isinstance(src, grain.MapDataset):
      ds = src
      if len(ds) < 2**62:  # finite
        if shuffle:
          ds = ds.shuffle(seed=s_seed)
        ds = ds.repeat(num_epochs)
      ds = ds.map(AdaptExternal(seq_len=steps, image_size=image_size, source_index=i))
    elif isinstance(src, grain.IterDataset):
      ds = src.map(AdaptExternal(seq_len=steps, image_size=image_size, source_index=i))
    else:
      raise TypeError(f"sources[{i}]: expected a path, grain.MapDataset or grain.IterDataset, "
                      f"got {type(src).__name__}")
    datasets.append(ds)
    weights.append(float(weight))
  read_options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_buffer_size)
  if all(isinstance(d, grain.MapDataset) for d in datasets):
    mixed = datasets[0] if len(datasets) == 1 else grain.MapDataset.mix(datasets, weights)
    it_ds = mixed.to_iter_dataset(read_options)
  else:
    it_ds = grain.IterDataset.mix(
        [d.to_iter_dataset(read_options) if isinstance(d, grain.MapDataset) else d for d in datasets], weights)
  it_ds = it_ds.batch(batch_size, drop_remainder=drop_remainder)
  if worker_count > 0:
    from absl import flags  # grain workers read absl flags; unparsed outside absl.app.run
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                           per_worker_buffer_size=worker_buffer_size))
  return it_ds
