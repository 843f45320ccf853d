"""data_pipelines.npz_reader: the same arrays as np.load, without ast (CPython 3.11's AST race)."""
from __future__ import annotations

import ast
import zipfile

import numpy as np
import pytest

from data_pipelines import npz_reader
from data_pipelines.calvin import make_fake, raw


def _arrays():
  rng = np.random.default_rng(0)
  return {
      "rgb": rng.integers(0, 255, (20, 30, 3), dtype=np.uint8),
      "f32": rng.normal(size=(7,)).astype(np.float32),
      "f64_big_endian": rng.normal(size=(3, 4)).astype(">f8"),
      "fortran": np.asfortranarray(rng.normal(size=(5, 6))),
      "scalar": np.float64(3.5),
      "empty": np.zeros((0, 4), np.int16),
      "booleans": rng.normal(size=(9,)) > 0,
      "structured": np.zeros(3, dtype=[("a", "<i4"), ("b", "<f4")]),    # numpy's own parser
  }


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_every_member_equals_np_load_and_ast_is_never_used(tmp_path, monkeypatch, save):
  path = tmp_path / "a.npz"
  save(path, **_arrays())
  expected = dict(np.load(path))

  def no_ast(*args, **kwargs):
    raise AssertionError("ast.literal_eval was called")
  monkeypatch.setattr(ast, "literal_eval", no_ast)
  with zipfile.ZipFile(path) as archive:
    assert sorted(npz_reader.members(archive)) == sorted(expected)
    for key, want in expected.items():
      if key == "structured":
        continue             # the fallback is numpy's parser, i.e. ast: checked below
      got = npz_reader.read_member(archive, key)
      assert got.dtype == want.dtype and got.shape == want.shape, key
      np.testing.assert_array_equal(got, want)
      assert got.flags.writeable, key           # as np.load's arrays are
  monkeypatch.undo()
  with zipfile.ZipFile(path) as archive:
    got = npz_reader.read_member(archive, "structured")
  assert got.dtype == expected["structured"].dtype


def test_a_truncated_member_is_an_error_not_short_data(tmp_path):
  path = tmp_path / "a.npz"
  with zipfile.ZipFile(path, "w") as archive:
    with archive.open("x.npy", "w") as f:
      full = tmp_path / "x.npy"
      np.save(full, np.arange(100, dtype=np.int64))
      f.write(full.read_bytes()[:-8])           # one element short
  with zipfile.ZipFile(path) as archive, pytest.raises(EOFError, match="792 of 800 data bytes"):
    npz_reader.read_member(archive, "x")


def test_calvin_frames_read_through_it_without_ast(tmp_path, monkeypatch):
  """raw.read_frame (the pipelines' frame reader, called from several threads) never parses
  with ast, and its frames equal np.load's."""
  make_fake.make_fake_dataset(tmp_path / "calvin", frames=80, val_frames=40, episode_len=80)
  split = tmp_path / "calvin" / "training"
  frame_id = raw.load_split(split).segments[0].start
  expected = dict(np.load(raw.episode_path(split, frame_id)))
  monkeypatch.setattr(ast, "literal_eval", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ast used")))
  frame = raw.read_frame(split, frame_id)
  assert set(frame) == set(raw.GR1_KEYS)
  for key, value in frame.items():
    np.testing.assert_array_equal(value, expected[key].astype(value.dtype))
