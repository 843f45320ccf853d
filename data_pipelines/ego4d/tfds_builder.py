r"""Ego4D clips as a TFDS dataset, built with Apache Beam (or serially without Beam).

    # serial, no Beam, no TensorFlow:
    python -m data_pipelines.ego4d.tfds_builder --ego4d_root ROOT --data_dir DATA
    # Beam: DirectRunner here, a cluster runner (Dataflow, Flink, Spark) unchanged:
    python -m data_pipelines.ego4d.tfds_builder --ego4d_root ROOT --data_dir DATA \
        --beam_runner DirectRunner \
        --beam_options "--direct_num_workers=2 --direct_running_mode=multi_processing"

Output: DATA/ego4d_clips/1.0.0/ (ArrayRecord shards, dataset_info.json, features.json),
readable with tfds.data_source / builder_from_directory and by
pipeline.make_pretrain_dataset(DATA/ego4d_clips/1.0.0, ...) which skips the JPEG
decoding of frames the window does not use.  Clip rule, text cleaning and decoding are
those of clips.py / text.py / decode.py (identical to prepare.py).  Per-video outcomes
(clips, frames, failures with uid and error) go to DATA/ego4d_clips_stats/1.0.0/ (one
JSON per video task, written by the workers), and the CLI prints the same summary as
prepare.py.  TFDS itself skips a build whose version directory is complete.

Beam installs beside this stack only with protobuf < 7 and pyarrow < 26 (apache-beam
2.77.0 caps both; the rest of the stack accepts protobuf 6.33.6 / pyarrow 25.0.1), so
use a separate environment for Beam builds, e.g.
    pip install -r requirements.txt apache-beam==2.77.0
and keep prepare.py (no Beam) for environments with protobuf 7.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections import Counter

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.ego4d import clips as clips_lib
from data_pipelines.errors import DataError
from data_pipelines.ego4d import prepare as prepare_lib
from data_pipelines.tfds_tempdirs import scoped_tfds_tempdirs

log = logging.getLogger("ego4d.tfds")

NAME = "ego4d_clips"
VERSION = "1.0.0"


def _features(size: int) -> tfds.features.FeaturesDict:
  f32, i32 = np.float32, np.int32
  return tfds.features.FeaturesDict({
      "clip_uid": tfds.features.Text(), "video_uid": tfds.features.Text(), "source": tfds.features.Text(),
      "text": tfds.features.Text(), "raw_text": tfds.features.Text(),
      "start_sec": tfds.features.Scalar(f32), "end_sec": tfds.features.Scalar(f32),
      "timestamp_sec": tfds.features.Scalar(f32),   # NaN for manifest clips
      "fps": tfds.features.Scalar(f32), "sample_fps": tfds.features.Scalar(f32),
      "frame_index": tfds.features.Sequence(tfds.features.Scalar(i32)),
      "frame_time": tfds.features.Sequence(tfds.features.Scalar(f32)),
      "frames": tfds.features.Sequence(tfds.features.Image(shape=(size, size, 3), encoding_format="jpeg")),
  })


def _stats_dir(data_dir: str) -> str:
  return os.path.join(data_dir, f"{NAME}_stats", VERSION)


def _write_json(path: str, obj) -> None:
  from etils import epath
  p = epath.Path(path)
  p.parent.mkdir(parents=True, exist_ok=True)
  tmp = p.parent / f"{p.name}.tmp-{os.getpid()}"
  tmp.write_text(json.dumps(obj))
  tmp.rename(p)


def _task_examples(task: tuple, stats_dir: str):
  """One video task -> (key, example) pairs; writes the task's stats JSON."""
  key, path, specs, opts, threads = task
  res = prepare_lib.process_video((key, path, specs, opts, threads))
  from data_pipelines.ego4d import records
  for rec in res["records"]:
    header, offset = records.decode_header(rec)
    jpegs = [rec[a:b] for a, b in records.jpeg_slices(header, offset)]
    ts = header["timestamp_sec"]
    yield header["clip_uid"], {
        "clip_uid": header["clip_uid"], "video_uid": header["video_uid"], "source": header["source"],
        "text": header["text"], "raw_text": header["raw_text"], "start_sec": header["start_sec"],
        "end_sec": header["end_sec"], "timestamp_sec": math.nan if ts is None else ts, "fps": header["fps"],
        "sample_fps": header["sample_fps"], "frame_index": header["frame_index"],
        "frame_time": header["frame_time"], "frames": jpegs}
  if res["error"]:
    log.warning("video %s failed: %s", res["video_uid"], res["error"])
  task_id = hashlib.sha1(f"{key}|{specs[0].clip_uid}".encode()).hexdigest()
  _write_json(os.path.join(stats_dir, f"task-{task_id}.json"),
              {"video_uid": res["video_uid"], "path": path, "counts": res["counts"], "error": res["error"],
               "bytes": sum(len(r) for r in res["records"])})


class Ego4dClips(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Ego4D narration clips (3 s around each narration, 10 fps, 224 JPEG frames).

  Not registered by name (read builds with builder_from_directory / clip_source), so
  importing this module twice (e.g. as __main__) cannot clash.
  """

  VERSION = tfds.core.Version(VERSION)
  # TFDS looks for a checksums file beside the builder's code through
  # importlib_resources, which this stack does not install; nothing is downloaded here.
  code_path = None

  def __init__(self, *, ego4d_root: str | None = None, narration_json: str | None = None,
               manifest: str | None = None, options: prepare_lib.PrepareOptions = prepare_lib.PrepareOptions(),
               use_beam: bool = False, threads: int = 0, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    self._ego4d_root, self._narration_json, self._manifest = ego4d_root, narration_json, manifest
    self._opts, self._use_beam, self._threads = options, use_beam, threads
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, features=_features(self._opts.size),
        description="Ego4D clips for GR-1 video pretraining; options: " + json.dumps(self._opts.to_json()),
        metadata=tfds.core.MetadataDict(options=json.dumps(self._opts.to_json())))

  def _split_generators(self, dl_manager):
    del dl_manager
    source = prepare_lib.build_source(self._ego4d_root, self._manifest, self._narration_json)
    counts = Counter()
    by_video = prepare_lib.list_clips(source, self._opts, counts)
    stats_dir = _stats_dir(os.fspath(self._data_dir_root))
    from etils import epath
    if epath.Path(stats_dir).exists():
      for p in epath.Path(stats_dir).glob("*.json"):
        p.unlink()
    counts["videos"] = len(by_video)
    _write_json(os.path.join(stats_dir, "listing.json"), {"counts": dict(counts)})
    tasks: dict[str, list] = {"train": [], "val": []}
    for task in prepare_lib._tasks(by_video, self._opts, self._threads):  # pylint: disable=protected-access
      split = clips_lib.split_of(task[2][0].video_uid, self._opts.val_fraction)
      tasks[split].append(task)
    return {split: self._generate_examples(t, stats_dir) for split, t in tasks.items() if t}

  def _generate_examples(self, tasks, stats_dir):
    if self._use_beam:
      beam = tfds.core.lazy_imports.apache_beam
      return (beam.Create(tasks) | beam.Reshuffle()
              | beam.FlatMap(_task_examples, stats_dir=stats_dir))
    return (ex for task in tasks for ex in _task_examples(task, stats_dir))


def build_summary(data_dir: str, seconds: float) -> dict:
  """Summary in prepare.summarize's format from the stats files and dataset_info."""
  from etils import epath
  stats_dir = epath.Path(_stats_dir(data_dir))
  counts = Counter(json.loads((stats_dir / "listing.json").read_text())["counts"])
  failed, total_bytes = [], 0
  for p in sorted(stats_dir.glob("task-*.json")):
    t = json.loads(p.read_text())
    counts.update(t["counts"])
    total_bytes += t["bytes"]
    if t["error"] and t["video_uid"] not in {f["video_uid"] for f in failed}:
      failed.append({"video_uid": t["video_uid"], "path": t["path"], "error": t["error"]})
  counts["videos_failed"] = len(failed)
  counts["videos_ok"] = counts["videos"] - len(failed)
  builder = tfds.builder_from_directory(os.path.join(data_dir, NAME, VERSION))
  recs = {name: s.num_examples for name, s in builder.info.splits.items()}
  nbytes = {name: s.num_bytes for name, s in builder.info.splits.items()}
  return {"shards": 1, "records": recs, "bytes": nbytes, "counts": dict(counts), "failed_videos": failed,
          "seconds": seconds, "record_bytes": total_bytes}


def example_to_header(example: dict) -> tuple[dict, list]:
  """A parsed (not image-decoded) TFDS example -> (record-style header, JPEG bytes)."""
  def s(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)
  frames = list(example["frames"])
  ts = float(example["timestamp_sec"])
  header = {"clip_uid": s(example["clip_uid"]), "video_uid": s(example["video_uid"]),
            "source": s(example["source"]), "text": s(example["text"]), "raw_text": s(example["raw_text"]),
            "start_sec": float(example["start_sec"]), "end_sec": float(example["end_sec"]),
            "timestamp_sec": None if math.isnan(ts) else ts, "fps": float(example["fps"]),
            "sample_fps": float(example["sample_fps"]),
            "frame_index": [int(x) for x in example["frame_index"]],
            "frame_time": [float(x) for x in example["frame_time"]]}
  shape = example.get("_frame_shape")
  if shape is not None:
    header["height"], header["width"] = shape
  return header, frames


class TfdsClipSource:
  """Random access to a built Ego4dClips split: raw Example bytes parsed without decoding
  the JPEGs (the window decodes only the frames it uses). Picklable for grain workers."""

  def __init__(self, version_dir: str, split: str):
    self._dir, self._split = os.fspath(version_dir), split
    builder = tfds.builder_from_directory(self._dir)
    if split not in builder.info.splits:
      raise DataError(f"{self._dir!r} has splits {list(builder.info.splits)}, not {split!r}")
    info = builder.info.splits[split]
    self._files = [os.fspath(fi.filename) for fi in info.file_instructions]
    self._len = info.num_examples
    self._shape = tuple(builder.info.features["frames"].feature.shape[:2])
    self._reader = self._parser = None

  def _open(self):
    import grain
    from tensorflow_datasets.core import example_parser
    builder = tfds.builder_from_directory(self._dir)
    self._parser = example_parser.ExampleParserNp(builder.info.features.get_serialized_info())
    self._reader = grain.sources.ArrayRecordDataSource(self._files)

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> dict:
    if self._reader is None:
      self._open()
    ex = self._parser.parse_example(self._reader[index])
    ex["_frame_shape"] = self._shape
    return ex

  def __getstate__(self):
    return {"_dir": self._dir, "_split": self._split, "_files": self._files, "_len": self._len,
            "_shape": self._shape, "_reader": None, "_parser": None}

  def __repr__(self) -> str:
    return f"TfdsClipSource({self._dir!r}, {self._split!r})"


def data_source(version_dir: str, split: str) -> TfdsClipSource:
  return TfdsClipSource(version_dir, split)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--ego4d_root")
  p.add_argument("--narration_json")
  p.add_argument("--manifest")
  p.add_argument("--data_dir", required=True)
  p.add_argument("--beam_runner", default=None, help="e.g. DirectRunner; unset = no Beam, serial build")
  p.add_argument("--beam_options", default="", help="Beam pipeline flags, space separated")
  p.add_argument("--size", type=int, default=prepare_lib.PrepareOptions.size)
  p.add_argument("--sample_fps", type=float, default=clips_lib.SAMPLE_FPS)
  p.add_argument("--jpeg_quality", type=int, default=prepare_lib.PrepareOptions.jpeg_quality)
  p.add_argument("--min_frames", type=int, default=4)
  p.add_argument("--val_fraction", type=float, default=0.0)
  p.add_argument("--threads", type=int, default=0)
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  opts = prepare_lib.PrepareOptions(size=args.size, sample_fps=args.sample_fps, jpeg_quality=args.jpeg_quality,
                                    min_frames=args.min_frames, val_fraction=args.val_fraction)
  use_beam = bool(args.beam_runner)
  with scoped_tfds_tempdirs():
    builder = Ego4dClips(ego4d_root=args.ego4d_root, narration_json=args.narration_json, manifest=args.manifest,
                         options=opts, use_beam=use_beam, threads=args.threads, data_dir=args.data_dir)
  download_config = None
  if use_beam:
    import apache_beam as beam
    download_config = tfds.download.DownloadConfig(
        beam_runner=args.beam_runner,
        beam_options=beam.options.pipeline_options.PipelineOptions(args.beam_options.split()))
  already = builder.is_prepared()
  t0 = time.time()
  builder.download_and_prepare(download_config=download_config)
  seconds = time.time() - t0
  timing = os.path.join(_stats_dir(args.data_dir), "build_seconds.json")
  if already:
    from etils import epath
    seconds = json.loads(epath.Path(timing).read_text())["seconds"] if epath.Path(timing).exists() else math.nan
  else:
    _write_json(timing, {"seconds": seconds})
  title = f"TFDS build {builder.data_dir}" + (" (already built earlier; nothing done now)" if already else "")
  print(prepare_lib.format_summary(build_summary(args.data_dir, seconds), title))
  return 0


if __name__ == "__main__":
  # Run the importable module's copy so Beam workers unpickle the same functions.
  from data_pipelines.ego4d import tfds_builder as _module
  sys.exit(_module.main())
