"""The TFDS builder (serial here; under Beam where apache-beam is installed) gives the same
clips as prepare.py and feeds the same grain pipeline."""
import numpy as np
import pytest

from data_pipelines.ego4d import make_fake, pipeline, prepare, records


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("tfds_raw"))
  desc = make_fake.make_fake(root, num_videos=1, seconds=6.0, size=96, seed=4)
  out = str(tmp_path_factory.mktemp("tfds_prepared"))
  prepare.main(["--ego4d_root", root, "--out", out, "--size", "64", "--no_progress"])
  by_uid = {}
  src = pipeline.clip_source(out)
  for i in range(len(src)):
    header, frames = records.decode_frames(src[i])
    by_uid[header["clip_uid"]] = (header, frames)
  return root, desc, by_uid


def _check_build(data_dir, by_uid, capsys, desc):
  from data_pipelines.ego4d import tfds_builder
  version_dir = f"{data_dir}/ego4d_clips/1.0.0"
  src = pipeline.clip_source(version_dir)
  assert len(src) == len(by_uid)
  for i in range(len(src)):
    header, jpegs = tfds_builder.example_to_header(src[i])
    ref_header, ref_frames = by_uid[header["clip_uid"]]
    for key in ("frame_index", "text", "video_uid", "start_sec"):
      assert header[key] == pytest.approx(ref_header[key]), key
    np.testing.assert_array_equal(np.stack([records.decode_jpeg(j) for j in jpegs]), ref_frames)
  out = capsys.readouterr().out
  assert f"FAILED   {desc['broken_uid']}" in out and f"clips    {len(by_uid)} written" in out
  (b,) = [next(iter(pipeline.make_pretrain_dataset(version_dir, batch_size=2, image_size=64, seed=0)))]
  assert b["rgb_static"].shape == (2, 10, 64, 64, 3)


def test_serial_tfds_build_matches_prepare(corpus, tmp_path, capsys):
  from data_pipelines.ego4d import tfds_builder
  root, desc, by_uid = corpus
  assert tfds_builder.main(["--ego4d_root", root, "--data_dir", str(tmp_path), "--size", "64"]) == 0
  _check_build(str(tmp_path), by_uid, capsys, desc)


def test_beam_tfds_build_matches_prepare(corpus, tmp_path, capsys):
  pytest.importorskip("apache_beam")
  from data_pipelines.ego4d import tfds_builder
  root, desc, by_uid = corpus
  assert tfds_builder.main(["--ego4d_root", root, "--data_dir", str(tmp_path), "--size", "64",
                            "--beam_runner", "DirectRunner"]) == 0
  _check_build(str(tmp_path), by_uid, capsys, desc)
