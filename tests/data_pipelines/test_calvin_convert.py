"""CALVIN -> TFDS ArrayRecord conversion: failure safety, resume, skipping, formats, workers."""
import json

import numpy as np
import pytest

from data_pipelines.calvin import builder, make_fake, pipeline, raw


@pytest.fixture
def src(tmp_path):
  root = tmp_path / "calvin"
  make_fake.make_fake_dataset(root, frames=40, val_frames=16, episode_len=40, segment_len=8,
                              seed=0, compress=False)
  return root


def _records(path, split):
  from array_record.python import array_record_module
  out = []
  for shard in sorted(path.glob(f"calvin_gr1-{split}.array_record-*")):
    reader = array_record_module.ArrayRecordReader(str(shard))
    out += reader.read_all()
    reader.close()
  return out


def test_failed_conversion_leaves_nothing_complete_and_rerun_resumes(src, tmp_path):
  data_dir = tmp_path / "tfds"
  segments = raw.load_split(src / "training").segments
  bad = raw.episode_path(src / "training", segments[-1].start + 1)
  good_bytes = bad.read_bytes()
  bad.write_bytes(good_bytes[:1000])
  with pytest.raises(raw.CalvinDataError, match=f"{bad.name}: cannot read npz, truncated"):
    builder.convert(src, data_dir, workers=0, progress=False)
  target = builder.dataset_dir(data_dir)
  assert not target.exists()
  assert not list(target.parent.glob("incomplete.*"))  # TFDS removed its temp dir
  with pytest.raises(FileNotFoundError, match="no converted CALVIN dataset"):
    pipeline.make_calvin_dataset(data_dir, "train", batch_size=2)
  cached = sorted((target.parent / "1.0.0.conversion_cache" / "train").glob("segment_*.pkl"))
  assert len(cached) == len(segments) - 1  # everything before the bad segment is kept

  # A hard kill leaves TFDS's temp dir: never loadable, removed by the next run.
  leftover = target.parent / "incomplete.KILLED_1.0.0"
  leftover.mkdir()
  (leftover / "calvin_gr1-train.array_record-00000-of-00001").write_bytes(b"partial")
  with pytest.raises(FileNotFoundError, match="unfinished conversion"):
    pipeline.make_calvin_dataset(data_dir, "train", batch_size=2)

  bad.write_bytes(good_bytes)
  summary = builder.convert(src, data_dir, workers=0, progress=False)
  assert summary["splits"]["train"]["cache_hits"] == len(segments) - 1
  assert summary["splits"]["train"]["segments"] == len(segments)
  assert summary["frames"] == sum(s.num_frames for s in segments) + summary["splits"]["validation"]["frames"]
  assert summary["bytes_per_frame"] > 1000
  assert not leftover.exists() and target.is_dir()
  assert not (target.parent / "1.0.0.conversion_cache").exists()
  frames = pipeline.ConvertedFrames(data_dir, "train")
  assert len(frames) == sum(s.num_frames for s in segments)
  assert builder.convert(src, data_dir, workers=0, progress=False)["already_converted"]


def test_skip_bad_counts_logs_and_records_the_reason(src, tmp_path):
  segments = raw.load_split(src / "training").segments
  bad = raw.episode_path(src / "training", segments[0].end)
  with np.load(bad) as npz:
    data = {k: npz[k] for k in npz.files}
  data["robot_obs"] = np.zeros(14, np.float32)
  np.savez(bad, **data)
  summary = builder.convert(src, tmp_path / "tfds", workers=0, on_bad="skip", progress=False)
  assert summary["splits"]["train"]["skipped"] == 1
  assert summary["splits"]["train"]["segments"] == len(segments) - 1
  meta = json.loads((builder.dataset_dir(tmp_path / "tfds") / "metadata.json").read_text())
  (skipped_id, reason), = meta["train"]["skipped"]
  assert skipped_id == segments[0].segment_id
  assert bad.name in reason and "key 'robot_obs' has shape (14,)" in reason
  frames = pipeline.ConvertedFrames(tmp_path / "tfds", "train")
  assert segments[0].segment_id not in frames.table.segment_id


def test_png_config_is_lossless(src, tmp_path):
  builder.convert(src, tmp_path / "tfds", config="png", workers=0, progress=False, splits=("validation",))
  batch = next(iter(pipeline.make_calvin_dataset(tmp_path / "tfds", "validation", config="png",
                                                 batch_size=4)))
  for window, frame_ids in zip(batch["rgb_static"], batch["frame_id"]):
    for image, frame in zip(window, frame_ids):
      if frame >= 0:
        np.testing.assert_array_equal(image, raw.read_frame(src / "validation", frame)["rgb_static"])
  with pytest.raises(ValueError, match="split 'train' was not converted"):
    pipeline.make_calvin_dataset(tmp_path / "tfds", "train", config="png", batch_size=4)


def test_missing_split_folder(src, tmp_path):
  import shutil
  shutil.rmtree(src / "validation")
  with pytest.raises(raw.CalvinDataError, match="validation: split folder not found"):
    builder.convert(src, tmp_path / "tfds", workers=0, progress=False)
  assert not builder.dataset_dir(tmp_path / "tfds").exists()


@pytest.mark.slow  # spawns conversion worker processes
def test_parallel_conversion_gives_the_same_records(src, tmp_path):
  serial = builder.convert(src, tmp_path / "serial", workers=0, progress=False)
  parallel = builder.convert(src, tmp_path / "parallel", workers=2, progress=False)
  for split in ("train", "validation"):
    a = _records(builder.dataset_dir(tmp_path / "serial"), split)
    b = _records(builder.dataset_dir(tmp_path / "parallel"), split)
    assert len(a) == serial["splits"][split]["frames"] and a == b
  assert parallel["frames"] == serial["frames"]


def test_conversion_leaves_no_tfds_temp_dirs(src, tmp_path, monkeypatch):
  """TFDS makes an empty tempfile.mkdtemp('tfds') for every builder constructed before its data
  exists and never removes it (data_pipelines/tfds_tempdirs.py): shown on a bare construction,
  then a whole conversion (which constructs through scoped_tfds_tempdirs) leaves none."""
  import tempfile
  scratch = tmp_path / "tmp"
  scratch.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(scratch))
  builder.CalvinGr1(data_dir=str(tmp_path / "bare"), workers=0, progress=False)
  assert [p.name for p in scratch.iterdir() if p.name.endswith("tfds")], "TFDS no longer leaks: drop the workaround"
  for p in list(scratch.iterdir()):
    p.rmdir()
  builder.convert(src, tmp_path / "tfds", workers=0, progress=False, splits=("validation",))
  assert sorted(p.name for p in scratch.iterdir()) == []
