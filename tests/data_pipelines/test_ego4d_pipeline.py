"""Grain pretraining windows from prepared Ego4D-layout clips."""
import hashlib

import grain
import numpy as np
import pytest

from data_pipelines import batch_spec, random_shift
from data_pipelines.ego4d import make_fake, pipeline, prepare, records

SIZE = 64   # small frames keep the tests fast; the pipeline is size-agnostic


def _prepare(tmp_path_factory, name, seed):
  root = str(tmp_path_factory.mktemp(f"{name}_raw"))
  make_fake.make_fake(root, num_videos=3, seconds=9.0, size=96, seed=seed, broken=False, missing=False)
  out = str(tmp_path_factory.mktemp(f"{name}_clips"))
  assert prepare.main(["--ego4d_root", root, "--out", out, "--size", str(SIZE), "--no_progress"]) == 0
  return out


@pytest.fixture(scope="module")
def source_a(tmp_path_factory):
  return _prepare(tmp_path_factory, "a", seed=1)


@pytest.fixture(scope="module")
def source_b(tmp_path_factory):
  return _prepare(tmp_path_factory, "b", seed=2)


def _ds(src, **kw):
  kw.setdefault("batch_size", 4)
  kw.setdefault("image_size", SIZE)
  return pipeline.make_pretrain_dataset(src, **kw)


def _take(ds, n):
  it = iter(ds)
  return [next(it) for _ in range(n)]


def _same(batches_a, batches_b):
  return all(set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a) for a, b in zip(batches_a, batches_b))


def _records(src):
  src_ds = pipeline.clip_source(src)
  return [records.decode_header(src_ds[i])[0] for i in range(len(src_ds))]


def test_batches_follow_the_contract(source_a):
  from gr1_jax.tokenizer import SOT_ID
  texts = {h["text"] for h in _records(source_a)}
  for b in _take(_ds(source_a, seed=0), 3):
    batch_spec.check_batch(b, batch_spec.PRETRAIN_KEYS, seq_len=10)
    assert b["rgb_static"].shape == (4, 10, SIZE, SIZE, 3)
    assert (b["language_tokens"][:, 0] == SOT_ID).all()
    np.testing.assert_array_equal(b["step_mask"], (b["frame_index"] >= 0).astype(np.float32))
    for row, mask in zip(b["frame_index"], b["step_mask"]):
      valid = row[mask > 0]
      assert (np.diff(valid) == 3).all()   # consecutive stored frames = every 3rd source frame
    assert (b["source_index"] == 0).all()
  from gr1_jax.tokenizer import tokenize
  assert any((tokenize([t])[0] == b["language_tokens"][0]).all() for t in texts)


def test_eval_windows_are_centred_and_padded(source_a):
  headers = _records(source_a)
  # seq_len 10, stride 1: centred start (n - 10) // 2.
  ds = _ds(source_a, batch_size=1, shuffle=False, num_epochs=1, drop_remainder=False)
  got = [b["frame_index"][0] for b in ds]
  assert len(got) == len(headers)
  for h, fi in zip(headers, got):
    n = len(h["frame_index"])
    start = (n - 10) // 2
    np.testing.assert_array_equal(fi, h["frame_index"][start:start + 10])
  # seq_len 12 at stride 3 stored frames needs 34 frames: every clip is right padded.
  ds = _ds(source_a, batch_size=1, shuffle=False, num_epochs=1, drop_remainder=False, seq_len=12, frame_stride=3)
  for h, b in zip(headers, ds):
    n = len(h["frame_index"])
    valid = len(range(0, n, 3))
    np.testing.assert_array_equal(b["step_mask"][0], [1.0] * valid + [0.0] * (12 - valid))
    np.testing.assert_array_equal(b["frame_index"][0][:valid], h["frame_index"][0:n:3])
    assert (b["frame_index"][0][valid:] == -1).all()
    assert not b["rgb_static"][0, valid:].any() and b["rgb_static"][0, :valid].any()
  assert {len(h["frame_index"]) for h in headers} >= {30, 18, 17}   # the fake corpus has short clips


def test_frames_are_the_stored_frames(source_a):
  headers = _records(source_a)
  src = pipeline.clip_source(source_a)
  (b,) = _take(_ds(source_a, batch_size=1, shuffle=False, num_epochs=1), 1)
  _, frames = records.decode_frames(src[0])
  n = len(headers[0]["frame_index"])
  start = (n - 10) // 2
  np.testing.assert_array_equal(b["rgb_static"][0], frames[start:start + 10])


def test_deterministic_per_seed_and_random_starts(source_a):
  a = _take(_ds(source_a, seed=5), 4)
  assert _same(a, _take(_ds(source_a, seed=5), 4))
  c = _take(_ds(source_a, seed=6), 4)
  assert not _same(a, c)
  starts = {int(fi[0]) for b in a + c for fi in b["frame_index"]}
  assert len(starts) > 8   # random window starts, not a fixed offset per clip


def _assert_resumes(ds, *, skip: int, take: int) -> list:
  """A fresh iterator set to the state after `skip` batches yields the next `take` again."""
  it = iter(ds)
  for _ in range(skip):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(take)]
  resumed = iter(ds)
  resumed.set_state(state)
  assert _same(expected, [next(resumed) for _ in range(take)])
  return expected


def test_resumed_iterator_yields_the_same_batches(source_a):
  _assert_resumes(_ds(source_a, seed=3, augment=True), skip=3, take=4)


def test_orbax_checkpoint_of_iterator(source_a, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  ds = _ds(source_a, seed=4)
  it = iter(ds)
  next(it)
  mngr = ocp.CheckpointManager(str(tmp_path / "ckpt"))
  mngr.save(1, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
  mngr.wait_until_finished()
  expected = [next(it) for _ in range(2)]
  it2 = iter(ds)
  mngr.restore(1, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(it2)))
  assert _same(expected, [next(it2) for _ in range(2)])


def test_augmentation_is_one_shift_per_window(source_a):
  plain = _take(_ds(source_a, seed=9), 2)
  aug = _take(_ds(source_a, seed=9, augment=True, shift_pad=4), 2)
  shifted = 0
  for p, a in zip(plain, aug):
    np.testing.assert_array_equal(p["frame_index"], a["frame_index"])   # same windows
    for x, y in zip(p["rgb_static"], a["rgb_static"]):
      matches = [(dy, dx) for dy in range(9) for dx in range(9)
                 if np.array_equal(random_shift.apply_shift(x, 4, (dy, dx)), y)]
      assert matches, "augmented window is not a single shift of the plain one"
      shifted += matches[0] != (4, 4)
  assert shifted > 0


def _clip_keys(batches):
  keys = []
  for b in batches:
    for fi, img, tok in zip(b["frame_index"], b["rgb_static"], b["language_tokens"]):
      keys.append((tuple(fi), tuple(tok), hashlib.sha1(img[0].tobytes()).hexdigest()))
  return keys


def test_process_shards_are_disjoint_and_cover(source_a):
  def keys(**kw):
    return _clip_keys(_ds(source_a, batch_size=1, shuffle=False, num_epochs=1, drop_remainder=False, **kw))
  whole = keys()
  parts = [keys(shard_index=i, shard_count=3) for i in range(3)]
  assert sum(len(p) for p in parts) == len(whole) == len(set(whole))
  assert set().union(*map(set, parts)) == set(whole)
  with pytest.raises(ValueError, match="shard_index 3 outside"):
    _ds(source_a, shard_index=3, shard_count=3)


def test_mixing_respects_weights(source_a, source_b):
  batches = _take(_ds([(source_a, 3.0), (source_b, 1.0)], batch_size=8, seed=0), 16)
  src = np.concatenate([b["source_index"] for b in batches])
  assert abs((src == 1).mean() - 0.25) < 0.08
  # Each source's windows come from its own clips: corpus b's backgrounds differ.
  a_keys = set(_clip_keys(_ds(source_a, batch_size=1, shuffle=False, num_epochs=1, drop_remainder=False)))
  for b in batches[:4]:
    for key, s in zip(_clip_keys([b]), b["source_index"]):
      if s == 1:
        assert key not in a_keys


def test_mixing_with_an_external_lower_resolution_source(source_a):
  """A CALVIN-like video-only source at another resolution is resized on the host."""
  def element(i):
    return {"step_mask": np.ones(10, np.float32), "language_tokens": np.full(77, 7, np.int32),
            "rgb_static": np.full((10, 48, 40, 3), i % 250, np.uint8)}
  external = grain.MapDataset.range(20).map(element)
  batches = _take(_ds([(source_a, 1.0), (external, 1.0)], batch_size=8, seed=0), 4)
  for b in batches:
    batch_spec.check_batch(b, batch_spec.PRETRAIN_KEYS, seq_len=10)
    ext = b["source_index"] == 1
    assert 0 < ext.sum() < 8
    assert (b["language_tokens"][ext] == 7).all() and (b["frame_index"][ext] == -1).all()
  # An IterDataset source switches to IterDataset.mix; its iterator state still restores.
  ds = _ds([(source_a, 1.0), (external.repeat().to_iter_dataset(), 1.0)], batch_size=8, seed=0)
  expected = _assert_resumes(ds, skip=1, take=2)
  assert 0 < sum((b["source_index"] == 1).sum() for b in expected) < 16
  bad = grain.MapDataset.range(4).map(lambda i: {"rgb_static": np.zeros((10, 8, 8, 3), np.uint8)})
  with pytest.raises(ValueError, match="without 'step_mask'"):
    _take(_ds([(source_a, 1.0), (bad, 1.0)], seed=0, read_threads=0), 2)


def _worker_run(source, workers, seed):
  """4 batches in one go, and the last 2 again from an iterator restored after 2."""
  from absl import flags
  flags.FLAGS.mark_as_parsed()   # grain workers read absl flags
  ds = _ds(source, seed=seed, worker_count=workers)
  it = iter(ds)
  try:
    first = [next(it) for _ in range(2)]
    state = it.get_state()
    rest = [next(it) for _ in range(2)]
  finally:
    it.close()
  it2 = iter(ds)
  try:
    it2.set_state(state)
    again = [next(it2) for _ in range(2)]
  finally:
    it2.close()
  return first + rest, again


def test_worker_process_matches_in_process_and_resumes(source_a):
  batches, again = _worker_run(source_a, 1, seed=11)
  assert _same(batches[2:], again)
  assert _same(batches, _take(_ds(source_a, seed=11), 4))


@pytest.mark.slow
def test_two_workers_deterministic_and_resumable(source_a):
  batches, again = _worker_run(source_a, 2, seed=12)
  assert _same(batches[2:], again)
  assert _same(batches, _worker_run(source_a, 2, seed=12)[0])


def test_jpeg_decoders_agree_and_sizes_are_checked(source_a, monkeypatch):
  rec = pipeline.clip_source(source_a)[0]
  fn = pipeline.ClipToWindow(seq_len=10, frame_stride=1, train=True, shift_pad=4, source_index=0, image_size=SIZE)
  fast = fn(rec, np.random.default_rng(0))
  monkeypatch.setattr(pipeline.image_codec, "simplejpeg", None)   # PIL fallback
  slow = fn(rec, np.random.default_rng(0))
  assert all(np.array_equal(fast[k], slow[k]) for k in fast)
  with pytest.raises(ValueError, match=r"is 64x64, the pipeline expects image_size=224"):
    _take(_ds(source_a, image_size=224, read_threads=0), 1)


def test_mixing_with_calvin_video_only_windows(source_a, tmp_path):
  """Integration with the CALVIN pipeline's pretraining mode (200x200 static camera)."""
  from data_pipelines.calvin import make_fake as calvin_fake
  from data_pipelines.calvin import pipeline as calvin
  calvin_fake.make_fake_dataset(tmp_path / "calvin", frames=160, val_frames=64, episode_len=80, segment_len=32)
  frames = calvin.RawFrames(calvin.raw_split_folder(tmp_path / "calvin", "training"))
  windows = calvin.calvin_windows(frames, seq_len=10, seed=0, augment=True, pretrain_video_only=True)
  assert windows[0]["rgb_static"].shape == (10, 200, 200, 3)
  batches = _take(_ds([(source_a, 1.0), (windows, 3.0)], batch_size=8, seed=0, read_threads=1), 2)
  for b in batches:
    assert b["rgb_static"].shape == (8, 10, SIZE, SIZE, 3)   # CALVIN 200x200 resized on the host
    assert (b["source_index"] == 1).sum() == 6
    np.testing.assert_array_equal(b["frame_index"][b["source_index"] == 1], -1)
