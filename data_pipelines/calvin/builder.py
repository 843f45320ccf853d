"""TFDS builder: raw CALVIN split -> compact ArrayRecord dataset for GR-1.

Usage (command line; also `convert()` from Python):

    python -m data_pipelines.calvin.convert --src /data/calvin/task_D_D \
        --data_dir /data/tfds [--config jpeg|png] [--workers 2] [--skip_bad] [--keep_cache]

reads ``SRC/training`` -> split "train" and ``SRC/validation`` -> split
"validation" (SRC is TFDS's ``manual_dir``) and writes

    DATA_DIR/calvin_gr1/<config>/1.0.0/calvin_gr1-{train,validation}.array_record-*
                                       dataset_info.json features.json metadata.json

This is a regular `tfds.core.GeneratorBasedBuilder` (``file_format=
"array_record"``, no TensorFlow needed: frames are handed to TFDS already
encoded as JPEG/PNG bytes).  TFDS's own beam-less writer is single-process and
not resumable, so the expensive part is done outside it:

* parallel: a pool of ``workers`` spawned processes reads the npz files, checks
  them and encodes the frames, one annotated segment per task (results kept in
  order); the TFDS writer in the main process only serialises bytes;
* resumable: each worker result is first written atomically to a per-segment
  cache file (``DATA_DIR/calvin_gr1/<config>/1.0.0.conversion_cache/``); re-running
  after an interruption or a failure re-uses every cached segment (checked
  against source folder, annotation window, task, text and encoding) and only
  re-encodes the rest; the cache is deleted after success unless --keep_cache;
* nothing half-written looks complete: TFDS writes into
  ``calvin_gr1/<config>/incomplete.XXXX_1.0.0/``, removes it if generation
  raises, and renames it to ``1.0.0/`` only after every split and the metadata
  are written.  A conversion killed hard leaves an ``incomplete.*`` directory
  that no reader opens; the next run deletes it.

Record layout: ONE RECORD PER FRAME of each annotated segment, segments in
annotation order, frames in time order (``disable_shuffling=True``).  A GR-1
window needs 10 consecutive frames (+ K-1 later actions): with per-frame records
it is one contiguous range read of 10 records (~130 kB) and decodes exactly the
20 images it uses (the K-1 extra action records skip image decoding).  One
record per 65-frame segment would read and parse ~0.85 MB per window and, with
TFDS's decoder, decode all 130 images for the 20 used (6.5x the decode work,
about two thirds of the pipeline's CPU time).  Frames shared by overlapping
annotations are stored once per segment (as GR1-Training does); window starts
are then simply record indices.

Size: JPEG q90 frames take 13.1 kB per frame (static + wrist + vectors) on
make_fake data; PNG would be ~10x larger.  Real CALVIN renders are more
textured, so expect somewhat more.

Per record (trace fields let every record be checked against its source):
  rgb_static  Image 200x200x3 (JPEG/PNG)   rgb_gripper  Image 84x84x3
  robot_obs (15,) f32   scene_obs (24,) f32   actions (7,) f32   rel_actions (7,) f32
  frame_id        global CALVIN frame id (episode_{frame_id:07d}.npz)
  segment_id      index of the annotation in the folder's auto_lang_ann.npy
  frame_index     position of the frame in its segment (0 .. length-1)
  segment_start / segment_end   inclusive frame ids of the annotation
  task, instruction             CALVIN task id and instruction text
metadata.json: per split the segment table {segment_id, start, end, num_frames,
first_record, task, instruction} the pipeline uses to build windows without
reading records, the skipped annotations with their reasons, the source folder
and statistics.yaml.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from etils import epath

from data_pipelines.calvin import encoding as enc
from data_pipelines.calvin import raw
from data_pipelines.tfds_tempdirs import scoped_tfds_tempdirs

log = logging.getLogger(__name__)

NAME = "calvin_gr1"
TFDS_SPLITS = {"train": "training", "validation": "validation"}  # tfds split -> CALVIN folder


class CalvinGr1Config(tfds.core.BuilderConfig):
  """Builder config: how frames are encoded."""

  def __init__(self, *, image_format: str = "jpeg", jpeg_quality: int = 90, **kwargs):
    super().__init__(**kwargs)
    self.encoding = enc.ImageEncoding(format=image_format, jpeg_quality=jpeg_quality)


class CalvinGr1(tfds.core.GeneratorBasedBuilder):
  """Language-annotated CALVIN segments, one record per frame, for GR-1."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Download a CALVIN split (e.g. `sh download_data.sh D` from github.com/mees/calvin, "
      "or calvin_debug_dataset) and pass the folder holding training/ and validation/ as "
      "manual_dir (--src).")
  BUILDER_CONFIGS = [
      CalvinGr1Config(name="jpeg", description="JPEG quality 90 frames", image_format="jpeg"),
      CalvinGr1Config(name="png", description="lossless PNG frames", image_format="png"),
  ]
  DEFAULT_CONFIG_NAME = "jpeg"

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's own lookup touches the `importlib_resources` backport, which is not a
    # dependency here (ModuleNotFoundError); the answer is simply this file.
    return epath.Path(__file__)

  def __init__(self, *, workers: int = 0, on_bad: str = "raise", keep_cache: bool = False,
               progress: bool = True, splits: tuple[str, ...] = ("train", "validation"),
               file_format: str = "array_record", **kwargs):
    if on_bad not in ("raise", "skip"):
      raise ValueError(f"on_bad must be 'raise' or 'skip', got {on_bad!r}")
    unknown = set(splits) - set(TFDS_SPLITS)
    if unknown:
      raise ValueError(f"unknown splits {sorted(unknown)}; expected a subset of {sorted(TFDS_SPLITS)}")
    self._workers = workers
    self._on_bad = on_bad
    self._keep_cache = keep_cache
    self._progress = progress
    self._splits = tuple(splits)
    self.stats: dict[str, dict] = {}
    super().__init__(file_format=file_format, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    fmt = self.builder_config.encoding.format
    vec = lambda n: tfds.features.Tensor(shape=(n,), dtype=np.float32)
    return tfds.core.DatasetInfo(
        builder=self,
        description="Language-annotated CALVIN segments, one record per frame (GR-1 fine-tuning).",
        features=tfds.features.FeaturesDict({
            "rgb_static": tfds.features.Image(shape=(200, 200, 3), encoding_format=fmt),
            "rgb_gripper": tfds.features.Image(shape=(84, 84, 3), encoding_format=fmt),
            "robot_obs": vec(15),
            "scene_obs": vec(24),
            "actions": vec(7),
            "rel_actions": vec(7),
            "frame_id": np.int32,
            "segment_id": np.int32,
            "frame_index": np.int32,
            "segment_start": np.int32,
            "segment_end": np.int32,
            "task": tfds.features.Text(),
            "instruction": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,
        homepage="https://github.com/mees/calvin",
    )

  @property
  def cache_dir(self) -> Path:
    return Path(self.data_dir).parent / f"{self.version}.conversion_cache"

  def _split_generators(self, dl_manager):
    root = Path(dl_manager.manual_dir)
    folders = {split: root / TFDS_SPLITS[split] for split in self._splits}
    for split, folder in folders.items():
      if not folder.is_dir():
        raise raw.CalvinDataError(f"{folder}: split folder not found (needed for tfds split "
                                  f"{split!r}; manual_dir must hold training/ and validation/)")
    # Check every folder before encoding anything, so annotation errors surface at once.
    checked = {split: raw.load_split(folder, on_bad=self._on_bad) for split, folder in folders.items()}
    return {split: self._generate_examples(split, info) for split, info in checked.items()}

  def _generate_examples(self, split: str, info: raw.CalvinSplit):
    encoding = self.builder_config.encoding
    cache = self.cache_dir / split
    jobs = [enc.SegmentJob(str(info.folder), seg, str(cache / f"segment_{seg.segment_id:07d}.pkl"),
                           encoding, self._on_bad) for seg in info.segments]
    stats = {"segments": 0, "frames": 0, "skipped": len(info.skipped), "cache_hits": 0,
             "annotations": len(info.segments) + len(info.skipped)}
    table, skipped = [], [list(s) for s in info.skipped]
    bar = tqdm.tqdm(total=len(jobs), desc=f"{NAME} {split}: encoding segments", unit="seg",
                    disable=not self._progress, file=sys.stdout)
    pool = None
    if self._workers > 0:
      pool = multiprocessing.get_context("spawn").Pool(self._workers)
      results = pool.imap(enc.encode_segment, jobs, chunksize=1)
    else:
      results = map(enc.encode_segment, jobs)
    try:
      for job, (cache_path, num_frames, skip_reason, hit) in zip(jobs, results):
        bar.update(1)
        seg = job.segment
        if skip_reason is not None:
          log.warning("skipping annotation %d of %s: %s", seg.segment_id, info.folder, skip_reason)
          skipped.append([seg.segment_id, skip_reason])
          stats["skipped"] += 1
          continue
        stats["cache_hits"] += int(hit)
        first_record = stats["frames"]
        for offset, frame in enumerate(enc.load_cached_segment(cache_path)):
          yield f"{seg.segment_id:07d}_{offset:05d}", {
              "rgb_static": frame["rgb_static"],
              "rgb_gripper": frame["rgb_gripper"],
              **{k: frame[k] for k in raw.VECTOR_KEYS},
              "frame_id": frame["frame_id"],
              "segment_id": seg.segment_id,
              "frame_index": offset,
              "segment_start": seg.start,
              "segment_end": seg.end,
              "task": seg.task,
              "instruction": seg.instruction,
          }
        table.append({"segment_id": seg.segment_id, "start": seg.start, "end": seg.end,
                      "num_frames": num_frames, "first_record": first_record,
                      "task": seg.task, "instruction": seg.instruction})
        stats["segments"] += 1
        stats["frames"] += num_frames
        bar.set_postfix(frames=stats["frames"], skipped=stats["skipped"], refresh=False)
    finally:
      bar.close()
      if pool is not None:
        pool.terminate()
        pool.join()
    if not table:
      raise raw.CalvinDataError(f"{info.folder}: empty split, every annotation was skipped")
    self.stats[split] = stats
    self.info.metadata[split] = {
        "source_folder": str(info.folder.resolve()),
        "segments": table,
        "skipped": skipped,
        "num_records": stats["frames"],
        "statistics": info.statistics,
        "image_format": dataclasses.asdict(encoding),
    }


def dataset_dir(data_dir: str | os.PathLike, config: str = "jpeg") -> Path:
  """DATA_DIR/calvin_gr1/<config>/<version>: where a finished conversion lives."""
  return Path(data_dir) / NAME / config / str(CalvinGr1.VERSION)


def _dir_bytes(path: Path) -> int:
  return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def convert(src: str | os.PathLike, data_dir: str | os.PathLike, *, config: str = "jpeg",
            workers: int | None = None, on_bad: str = "raise", keep_cache: bool = False,
            splits: tuple[str, ...] = ("train", "validation"), progress: bool = True) -> dict:
  """Converts the CALVIN split SRC (with training/, validation/) into DATA_DIR.

  Returns a summary dict (path, per split segments / frames / skipped / cache hits,
  bytes, bytes_per_frame, seconds, frames_per_s) and prints it.  Raises
  CalvinDataError for bad input (unless on_bad="skip"); nothing under
  dataset_dir(data_dir, config) exists unless the conversion finished.
  """
  if workers is None:
    workers = max(1, (os.cpu_count() or 1) - 1)
  src = Path(src)
  if not src.is_dir():
    raise raw.CalvinDataError(f"{src}: CALVIN split directory not found")
  target = dataset_dir(data_dir, config)
  t0 = time.time()
  with scoped_tfds_tempdirs():
    builder = CalvinGr1(data_dir=os.fspath(data_dir), config=config, workers=workers, on_bad=on_bad,
                        keep_cache=keep_cache, progress=progress, splits=splits)
  already = target.is_dir()
  if not already:
    for stale in target.parent.glob(f"incomplete.*_{builder.version}"):
      log.warning("removing %s left by an interrupted conversion", stale)
      shutil.rmtree(stale, ignore_errors=True)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.fspath(src), compute_stats=tfds.download.ComputeStatsMode.SKIP))
  seconds = time.time() - t0
  downloads = Path(data_dir) / "downloads"
  if downloads.is_dir() and not any(p.is_file() for p in downloads.rglob("*")):
    shutil.rmtree(downloads, ignore_errors=True)  # empty dirs TFDS creates for manual datasets
  if not keep_cache and builder.cache_dir.is_dir():
    shutil.rmtree(builder.cache_dir, ignore_errors=True)
  total_bytes = _dir_bytes(target)
  frames = sum(s["frames"] for s in builder.stats.values())
  summary = {"path": str(target), "already_converted": already, "splits": builder.stats,
             "frames": frames, "segments": sum(s["segments"] for s in builder.stats.values()),
             "bytes": total_bytes, "bytes_per_frame": total_bytes / max(frames, 1),
             "seconds": seconds, "frames_per_s": frames / max(seconds, 1e-9)}
  if already:
    print(f"{NAME}/{config}: already converted at {target} ({total_bytes / 1e6:.1f} MB); nothing to do")
  else:
    for split, s in builder.stats.items():
      print(f"{NAME}/{config} {split}: {s['segments']} segments, {s['frames']} frames, "
            f"{s['skipped']} skipped, {s['cache_hits']} segments reused from an earlier run")
    print(f"{NAME}/{config}: {summary['segments']} segments, {frames} frames, "
          f"{total_bytes / 1e6:.1f} MB ({summary['bytes_per_frame'] / 1e3:.1f} kB/frame, both cameras), "
          f"{seconds:.1f} s ({summary['frames_per_s']:.0f} frames/s) -> {target}")
  return summary
