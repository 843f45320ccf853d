"""Raw CALVIN split reading: every bad input gives an error naming the file and the problem."""
import logging
import re

import numpy as np
import pytest

from data_pipelines.calvin import make_fake, raw


@pytest.fixture
def split(tmp_path):
  folder = tmp_path / "training"
  make_fake.make_fake_split(folder, 0, 40, episode_len=40, segment_len=8, seed=0, compress=False)
  segments = raw.load_split(folder).segments
  assert len(segments) >= 2
  return folder, segments


def _rewrite(path, **changes):
  with np.load(path) as npz:
    data = {k: npz[k] for k in npz.files}
  for key, value in changes.items():
    if value is None:
      del data[key]
    else:
      data[key] = value
  np.savez(path, **data)


def _set_annotations(folder, **changes):
  path = folder / raw.ANNOTATION_FILE
  ann = np.load(path, allow_pickle=True).item()
  for key, value in changes.items():
    outer, inner = key.split("__")
    ann[outer][inner] = value
  np.save(path, ann, allow_pickle=True)


def test_reads_checked_frames(split):
  folder, segments = split
  frame = raw.read_frame(folder, segments[0].start)
  assert set(frame) == set(raw.GR1_KEYS)
  assert frame["rgb_static"].shape == (200, 200, 3) and frame["robot_obs"].dtype == np.float32
  assert len(list(raw.read_segment(folder, segments[0]))) == segments[0].num_frames


def test_missing_npz_names_annotation_and_file(split, caplog):
  folder, segments = split
  missing = segments[0].start + 2
  raw.episode_path(folder, missing).unlink()
  with pytest.raises(raw.CalvinDataError, match=rf"annotation 0 .*points outside the available "
                     rf"frames.*episode_{missing:07d}\.npz"):
    raw.load_split(folder)
  with caplog.at_level(logging.WARNING):
    checked = raw.load_split(folder, on_bad="skip")
  assert [s for s, _ in checked.skipped] == [0]
  assert 0 not in [s.segment_id for s in checked.segments]
  assert f"episode_{missing:07d}.npz" in caplog.text and "skipping" in caplog.text
  with pytest.raises(raw.CalvinDataError, match=rf"episode_{missing:07d}\.npz: episode file not found"):
    raw.read_frame(folder, missing)


def test_truncated_npz(split):
  folder, segments = split
  path = raw.episode_path(folder, segments[1].start)
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  with pytest.raises(raw.CalvinDataError, match=re.escape(str(path)) + ": cannot read npz, truncated or corrupt"):
    raw.read_frame(folder, segments[1].start)


@pytest.mark.parametrize("change, message", [
    ({"rgb_static": np.zeros((100, 100, 3), np.uint8)},
     r"key 'rgb_static' has shape \(100, 100, 3\), expected \(200, 200, 3\)"),
    ({"rgb_gripper": np.zeros((84, 84, 3), np.float32)}, r"key 'rgb_gripper' has dtype float32, expected uint8"),
    ({"robot_obs": np.zeros(15, np.int64)}, r"key 'robot_obs' has dtype int64, expected float32"),
    ({"rel_actions": np.zeros(6, np.float32)}, r"key 'rel_actions' has shape \(6,\), expected \(7,\)"),
    ({"rel_actions": None}, r"missing key\(s\) \['rel_actions'\]"),
])
def test_wrong_contents(split, change, message):
  folder, segments = split
  path = raw.episode_path(folder, segments[0].start)
  _rewrite(path, **change)
  with pytest.raises(raw.CalvinDataError, match=re.escape(str(path)) + ": " + message):
    raw.read_frame(folder, segments[0].start)


def test_annotation_outside_available_frames(split):
  folder, segments = split
  indx = [(s.start, s.end) for s in segments]
  indx[1] = (segments[1].start, 10_000)
  _set_annotations(folder, info__indx=indx)
  with pytest.raises(raw.CalvinDataError, match=r"auto_lang_ann\.npy: annotation 1 .*frames "
                     rf"{segments[1].start}\.\.10000\) points outside the available frames"):
    raw.load_split(folder)
  indx[1] = (30, 20)
  _set_annotations(folder, info__indx=indx)
  with pytest.raises(raw.CalvinDataError, match=r"\['info'\]\['indx'\]\[1\] = \(30, 20\); expected 0 <= start <= end"):
    raw.load_split(folder)


def test_empty_split(split, tmp_path):
  folder, _ = split
  _set_annotations(folder, language__ann=[], language__task=[], info__indx=[])
  with pytest.raises(raw.CalvinDataError, match="empty split, no language annotations"):
    raw.load_split(folder)
  other = tmp_path / "validation"
  (other / "lang_annotations").mkdir(parents=True)
  (folder / raw.ANNOTATION_FILE).rename(other / raw.ANNOTATION_FILE)
  _set_annotations(other, language__ann=["x"], language__task=["t"], info__indx=[(0, 3)])
  with pytest.raises(raw.CalvinDataError, match=re.escape(str(other)) + ": empty split, no episode"):
    raw.load_split(other)
  with pytest.raises(raw.CalvinDataError, match="split folder not found"):
    raw.load_split(tmp_path / "nope")


def test_bad_annotation_file(split):
  folder, _ = split
  path = folder / raw.ANNOTATION_FILE
  ann = np.load(path, allow_pickle=True).item()
  del ann["language"]["task"]
  np.save(path, ann, allow_pickle=True)
  with pytest.raises(raw.CalvinDataError, match=re.escape(str(path)) + r": missing key 'task'"):
    raw.load_split(folder)
  path.write_bytes(b"garbage")
  with pytest.raises(raw.CalvinDataError, match=re.escape(str(path)) + ": cannot load"):
    raw.load_split(folder)
  path.unlink()
  with pytest.raises(raw.CalvinDataError, match="language annotation file not found"):
    raw.load_split(folder)
