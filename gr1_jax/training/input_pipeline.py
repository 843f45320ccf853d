"""config.data -> per-process Grain iterators of numpy batches, and their assembly into global arrays.

Sources (config.data.name):
  ego4d       stage 1: prepared Ego4D clip shards (data_pipelines/ego4d) in data.path, split
              'train' / 'val'; or the weighted mixture data.mixture (see parse_mixture) of
              such clip directories and CALVIN video-only windows
  calvin      stage 2: a converted CALVIN TFDS dir (data_pipelines/calvin), 'train' / 'validation'
  calvin_raw  stage 2 straight from a raw CALVIN split folder (small data, the demo)
  lerobot     a LeRobot dataset root (data_pipelines/lerobot; v3.0 or v2.1, read directly), mapped
              and normalised by config.data.lerobot; stage 2, or video-only windows of its static
              camera for a stage-1 model (also as mixture kind lerobot)
  synthetic   random batch_spec batches (tests, benchmarks)
Every process reads its own 1/process_count of the global batch (disjoint shards);
`to_global` turns the per-process numpy batches into one globally sharded array per key.
Evaluation reads the first config.eval_batches batches of the validation split in a
fixed order, the same ones at every evaluation; for CALVIN sources that order is a fixed
shuffle (EVAL_SHUFFLE_SEED), so the batches sample every episode, not the first few seconds.
data.frame_reuse = W > 0 (training only): every source yields segments of seq_len + W - 1
steps, global_batch / W of them per batch (data_pipelines/frame_reuse.py); global_batch
still counts windows. Evaluation batches stay per-window.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping

import jax
import numpy as np

from gr1_jax import sharding, url_paths
from gr1_jax.model_config import GR1Config
from gr1_jax.user_errors import ConfigError, UserError

EVAL_SHUFFLE_SEED = 20241205   # CALVIN evaluation windows: one fixed permutation of the split

DATA_SOURCES = ("ego4d", "calvin", "calvin_raw", "lerobot", "synthetic")
# Kinds of a stage-1 mixture entry; CALVIN entries give video-only windows of the static
# camera, resized on the host to data.image_size like the Ego4D clips.
MIXTURE_KINDS = {
    "ego4d": "a directory prepared by data_pipelines.ego4d.prepare (or its TFDS build)",
    "calvin": "a converted CALVIN TFDS data_dir (data_pipelines.calvin.convert)",
    "calvin_raw": "a raw CALVIN split directory holding training/ and validation/",
    "lerobot": "a LeRobot dataset root holding meta/info.json (cameras from config.data.lerobot)",
}
MIXTURE_SYNTAX = "KIND:PATH=WEIGHT[,KIND:PATH=WEIGHT...]"


@dataclasses.dataclass(frozen=True)
class MixtureEntry:
  kind: str
  path: str
  weight: float


def parse_mixture(text: str, *, check_paths: bool = False) -> list[MixtureEntry]:
  """config.data.mixture -> its entries, e.g.

      "ego4d:/data/ego4d_clips=0.8,calvin:/data/tfds=0.2"

  KIND is one of MIXTURE_KINDS; the weight follows the last '=' (so the path may hold
  ':' and '='); weights need not sum to 1. Raises ConfigError (a ValueError) naming the field and the
  offending entry. check_paths: local paths must be existing directories.
  """
  where = "config.data.mixture"
  if not text.strip():
    raise ConfigError(f"{where} is empty; expected {MIXTURE_SYNTAX}")
  kinds = ", ".join(MIXTURE_KINDS)
  entries = []
  for number, raw in enumerate(text.split(","), 1):
    item = raw.strip()
    what = f"{where} entry {number} {item!r}"
    if not item:
      raise ConfigError(f"{where} entry {number} is empty (a stray ','?); expected {MIXTURE_SYNTAX}")
    kind, colon, rest = item.partition(":")
    kind = kind.strip()
    if not colon:
      raise ConfigError(f"{what} has no 'KIND:'; expected {MIXTURE_SYNTAX} with KIND one of {kinds}")
    if kind not in MIXTURE_KINDS:
      raise ConfigError(f"{what}: unknown kind {kind!r}; expected one of {kinds}")
    path, equals, weight_text = rest.rpartition("=")
    if not equals:
      raise ConfigError(f"{what} has no '=WEIGHT'; expected {MIXTURE_SYNTAX}")
    path = path.strip()
    if not path:
      raise ConfigError(f"{what} has no path; {kind} expects {MIXTURE_KINDS[kind]}")
    try:
      weight = float(weight_text)
    except ValueError:
      raise ConfigError(f"{what}: weight {weight_text.strip()!r} is not a number") from None
    if not (math.isfinite(weight) and weight > 0):
      raise ConfigError(f"{what}: weight {weight_text.strip()} must be a finite number > 0")
    if check_paths and not url_paths.is_url(path) and not os.path.isdir(path):
      raise ConfigError(f"{what}: {path!r} is not a directory; {kind} expects {MIXTURE_KINDS[kind]}")
    entries.append(MixtureEntry(kind, path, weight))
  return entries


def pretrain_sources(data: Mapping, model: GR1Config, *, seed: int, train: bool, shard_index: int,
                     shard_count: int, frame_reuse: int = 0) -> list:
  """The (source, weight) list of make_pretrain_dataset: data.path alone, or data.mixture
  with its CALVIN entries opened as this process's shard of video-only windows."""
  if not data["mixture"]:
    return [(data["path"], 1.0)]
  from data_pipelines.calvin import pipeline as calvin
  from data_pipelines.ego4d.pipeline import source_seed
  sources = []
  for i, entry in enumerate(parse_mixture(data["mixture"])):
    if entry.kind == "ego4d":
      sources.append((entry.path, entry.weight))
      continue
    split = "train" if train else "validation"
    if entry.kind == "calvin":
      frames = calvin.ConvertedFrames(entry.path, split)
    elif entry.kind == "lerobot":
      from data_pipelines.lerobot import pipeline as lerobot
      frames = lerobot.LeRobotFrames(entry.path, lerobot.LeRobotSpec.from_config(data["lerobot"]), split,
                                     video_only=True)
    else:
      frames = calvin.RawFrames(calvin.raw_split_folder(entry.path, split))
    windows = calvin.calvin_windows(
        frames, seq_len=model.seq_len, seed=source_seed(seed, i), shuffle=train,
        augment=train and data["augment"], num_epochs=None, shard_index=shard_index,
        shard_count=shard_count, pretrain_video_only=True,
        image_shapes=getattr(frames, "image_shapes", None), frame_reuse=frame_reuse)
    sources.append((windows, entry.weight))
  return sources


def _local_batch(global_batch: int) -> int:
  return global_batch // jax.process_count()


def make_dataset(data: Mapping, model: GR1Config, *, global_batch: int, seed: int, train: bool):
  """A grain IterDataset of this process's share of each batch.

  Data that cannot be opened raises the pipeline's UserError (data_pipelines.errors) with
  the config field that pointed at it put in front: the pipelines know the path, not the field."""
  try:
    return _make_dataset(data, model, global_batch=global_batch, seed=seed, train=train)
  except UserError as exc:
    if not isinstance(exc, ConfigError):   # those name their field already
      field = "config.data.mixture" if data["mixture"] else f"config.data.path={data['path']}"
      exc.args = (f"{field}: {exc}",)
    raise


def _make_dataset(data: Mapping, model: GR1Config, *, global_batch: int, seed: int, train: bool):
  name = data["name"]
  reuse = data.get("frame_reuse", 0) if train else 0
  if reuse:
    if global_batch % reuse:
      raise ConfigError(f"the global batch {global_batch} is not divisible by config.data.frame_reuse={reuse}")
    global_batch //= reuse   # segments of W windows each
  batch = _local_batch(global_batch)
  steps = model.seq_len + reuse - 1 if reuse else model.seq_len
  shard = {"shard_index": jax.process_index(), "shard_count": jax.process_count()}
  if name == "synthetic":
    from data_pipelines.synthetic import synthetic_dataset
    return synthetic_dataset(batch_size=global_batch, seq_len=steps, image_size=data["image_size"],
                             hand_size=data["hand_size"], action_chunk=model.action_chunk,
                             finetune=model.use_state or model.use_hand_rgb,
                             seed=seed * 2 + int(not train),
                             nonfinite_from=data["nonfinite_from"] if train else -1, **shard)
  if name == "ego4d":
    from data_pipelines.ego4d.pipeline import make_pretrain_dataset
    sources = pretrain_sources(data, model, seed=seed, train=train, frame_reuse=reuse, **shard)
    return make_pretrain_dataset(
        sources, batch_size=batch, seq_len=model.seq_len, seed=seed, shuffle=train,
        augment=train and data["augment"], split="train" if train else "val",
        image_size=data["image_size"], worker_count=data["worker_count"] if train else 0,
        frame_reuse=reuse, **shard)
  if name in ("calvin", "calvin_raw"):
    from data_pipelines.calvin import pipeline as calvin
    # Evaluation shuffles too, with a fixed seed: the same windows at every evaluation, spread
    # over the whole validation split (its first batches in record order are a few seconds of
    # one episode, whose own mean frame is a near-perfect predictor of them).
    kwargs = dict(batch_size=batch, seq_len=model.seq_len, action_chunk=model.action_chunk,
                  seed=seed if train else EVAL_SHUFFLE_SEED, shuffle=True,
                  augment=train and data["augment"], num_epochs=None, drop_remainder=True,
                  worker_count=data["worker_count"] if train else 0,
                  pretrain_video_only=not (model.use_state or model.use_hand_rgb), frame_reuse=reuse, **shard)
    split = "train" if train else "validation"
    if name == "calvin":
      return calvin.make_calvin_dataset(data["path"], split, **kwargs)
    return calvin.make_calvin_raw_dataset(data["path"], split, **kwargs)
  if name == "lerobot":
    if reuse:
      raise ConfigError(f"config.data.frame_reuse={reuse}: frame reuse is not wired for "
                        "config.data.name='lerobot' yet; set it to 0")
    from data_pipelines.lerobot import pipeline as lerobot
    return lerobot.make_lerobot_dataset(
        data["path"], "train" if train else "validation", lerobot.LeRobotSpec.from_config(data["lerobot"]),
        batch_size=batch, seq_len=model.seq_len, action_chunk=model.action_chunk, seed=seed, shuffle=train,
        augment=train and data["augment"], num_epochs=None, drop_remainder=True,
        worker_count=data["worker_count"] if train else 0,
        pretrain_video_only=not (model.use_state or model.use_hand_rgb), **shard)
  raise ConfigError(f"config.data.name={name!r}; expected one of {', '.join(DATA_SOURCES)}")


def norm_stats(data: Mapping, model: GR1Config):
  """The gr1_jax.norm_stats.NormStats a run on `data` trains with (stored in its checkpoints), or
  None for sources in CALVIN's fixed mapping (and for video-only runs)."""
  if data["name"] != "lerobot" or not (model.use_state or model.act_pred):
    return None
  from data_pipelines.lerobot import pipeline as lerobot
  try:
    return lerobot.load_norm_stats(data["path"], lerobot.LeRobotSpec.from_config(data["lerobot"]))
  except UserError as exc:
    exc.args = (f"config.data.path={data['path']}: {exc}",)
    raise


def to_global(local: Mapping[str, np.ndarray], keys, mesh) -> dict[str, jax.Array]:
  """This process's rows of each model key -> one global array sharded over the batch axes."""
  target = sharding.batch_sharding(mesh)
  # On a CPU backend the global array may alias the host buffer instead of copying it; with Grain
  # worker processes that buffer is shared memory, then kept mapped as long as the array lives
  # (the last batch at exit: "resource_tracker: ... leaked shared_memory objects" after every
  # run). So copy there. Accelerators copy to device memory anyway: no extra host copy for them.
  host_copy = mesh.devices.flat[0].platform == "cpu"
  out = {}
  for key in keys:
    value = np.array(local[key], copy=True) if host_copy else np.asarray(local[key])
    global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
    out[key] = jax.make_array_from_process_local_data(target, value, global_shape)
  return out
