"""CALVIN pipeline: fake raw split -> conversion -> Grain batches, checked against the npz files."""
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import batch_spec as bs
from data_pipelines import random_shift
from data_pipelines.calvin import builder, encoding, make_fake, pipeline, raw
from data_pipelines.errors import DataNotFoundError
from gr1_jax.tokenizer import tokenize
from gr1_jax.user_errors import UserError

SEQ_LEN = 10
CHUNK = 3


@pytest.fixture(scope="module")
def calvin(tmp_path_factory):
  root = tmp_path_factory.mktemp("calvin")
  src = root / "fake"
  make_fake.make_fake_dataset(src, frames=160, val_frames=48, episode_len=80, segment_len=16,
                              seed=3, compress=False)
  summary = builder.convert(src, root / "tfds", workers=0, progress=False)
  return {"src": src, "data_dir": root / "tfds", "summary": summary}


def _segments(folder):
  return {s.segment_id: s for s in raw.load_split(folder).segments}


def _jpeg(image):
  return encoding.decode_image(encoding.encode_image(image, encoding.ImageEncoding()))


_NPZ_CACHE = {}


def _npz(folder, frame):
  key = (str(folder), frame)
  if key not in _NPZ_CACHE:
    with np.load(raw.episode_path(folder, frame)) as npz:
      _NPZ_CACHE[key] = {k: npz[k] for k in raw.GR1_KEYS}
  return _NPZ_CACHE[key]


def _expected_window(folder, seg, first_frame, *, lossy=True):
  """The window starting at frame `first_frame` of `seg`, built straight from the npz files."""
  out = {
      "step_mask": np.zeros(SEQ_LEN, np.float32), "frame_id": np.full(SEQ_LEN, -1, np.int32),
      "rgb_static": np.zeros((SEQ_LEN, 200, 200, 3), np.uint8),
      "rgb_gripper": np.zeros((SEQ_LEN, 84, 84, 3), np.uint8),
      "arm_state": np.zeros((SEQ_LEN, 6), np.float32),
      "gripper_state": np.tile(np.float32([1, 0]), (SEQ_LEN, 1)),
      "arm_action": np.zeros((SEQ_LEN, CHUNK, 6), np.float32),
      "gripper_action": np.zeros((SEQ_LEN, CHUNK), np.float32),
      "action_mask": np.zeros((SEQ_LEN, CHUNK), np.float32),
      "language_tokens": tokenize([seg.instruction])[0],
  }
  for t in range(SEQ_LEN):
    frame = first_frame + t
    if frame > seg.end:
      break
    npz = _npz(folder, frame)
    out["step_mask"][t] = 1
    out["frame_id"][t] = frame
    for cam in ("rgb_static", "rgb_gripper"):
      out[cam][t] = _jpeg(npz[cam]) if lossy else npz[cam]
    out["arm_state"][t] = npz["robot_obs"][:6]
    out["gripper_state"][t] = [0, 1] if npz["robot_obs"][14] == 1 else [1, 0]
    for k in range(CHUNK):
      if frame + k <= seg.end:
        rel = _npz(folder, frame + k)["rel_actions"]
        out["arm_action"][t, k] = rel[:6]
        out["gripper_action"][t, k] = (rel[6] + 1) / 2
        out["action_mask"][t, k] = 1
  return out


def _window(batch, i):
  return {k: v[i] for k, v in batch.items()}


def _take(ds, n):
  it = iter(ds)
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_fake_split_has_calvin_format(calvin):
  folder = calvin["src"] / "training"
  with np.load(folder / "episode_0000005.npz") as npz:
    for key, (shape, kind) in raw.EPISODE_SPEC.items():
      assert npz[key].shape == shape, key
      assert npz[key].dtype == (np.uint8 if kind == "u8" else np.float32), key
    obs, rel = npz["robot_obs"], npz["rel_actions"]
  with np.load(folder / "episode_0000006.npz") as npz:
    next_obs = npz["robot_obs"]
  np.testing.assert_allclose(rel[:3], np.clip((next_obs[:3] - obs[:3]) * 50, -1, 1), atol=1e-4)
  assert rel[6] in (-1, 1) and next_obs[14] == rel[6]
  ann = np.load(folder / raw.ANNOTATION_FILE, allow_pickle=True).item()
  assert set(ann) == {"language", "info"} and set(ann["language"]) == {"ann", "task", "emb"}
  assert ann["language"]["emb"].shape == (len(ann["info"]["indx"]), 1, 384)
  assert np.load(folder / raw.EP_START_END_FILE).shape == (2, 2)
  split = raw.load_split(folder)
  assert split.statistics["act_min_bound"][6] == -1.0
  assert len(split.statistics["robot_obs"][0]["mean"]) == 15


def test_converted_records_trace_to_source(calvin):
  import tensorflow_datasets as tfds  # the converted split opens with plain TFDS too
  source = tfds.builder_from_directory(calvin["summary"]["path"]).as_data_source("train")
  folder = calvin["src"] / "training"
  segments = _segments(folder)
  assert len(source) == calvin["summary"]["splits"]["train"]["frames"]
  assert len(source) == sum(s.num_frames for s in segments.values())
  for index in range(0, len(source), 7):
    record = source[index]
    seg = segments[record["segment_id"]]
    assert record["frame_id"] == seg.start + record["frame_index"]
    assert (record["segment_start"], record["segment_end"]) == (seg.start, seg.end)
    assert record["instruction"].decode() == seg.instruction and record["task"].decode() == seg.task
    with np.load(raw.episode_path(folder, record["frame_id"])) as npz:
      for key in raw.VECTOR_KEYS:
        np.testing.assert_array_equal(record[key], npz[key], err_msg=key)
      for cam in raw.IMAGE_KEYS:
        np.testing.assert_array_equal(record[cam], _jpeg(npz[cam]), err_msg=cam)
        assert np.abs(record[cam].astype(int) - npz[cam]).mean() < 4  # JPEG q90 stays close


def test_batches_hold_exactly_the_source_frames(calvin):
  ds = pipeline.make_calvin_dataset(calvin["data_dir"], "train", batch_size=8, seq_len=SEQ_LEN,
                                    action_chunk=CHUNK, shuffle=False, augment=False,
                                    num_epochs=1, drop_remainder=False)
  folder = calvin["src"] / "training"
  segments = _segments(folder)
  assert len(pipeline.ConvertedFrames(calvin["data_dir"], "train")) == sum(
      s.num_frames for s in segments.values())  # one window per frame
  windows = [_window(b, i) for b in _take(ds, 5) for i in range(8)]
  padded = 0
  for w in windows:  # the first two segments in record order, ends included
    bs.check_batch({k: v[None] for k, v in w.items()}, bs.FINETUNE_KEYS, seq_len=SEQ_LEN)
    seg = segments[int(w["segment_id"])]
    expected = _expected_window(folder, seg, int(w["frame_id"][0]))
    for key, value in expected.items():
      np.testing.assert_array_equal(w[key], value, err_msg=f"{key} of window at frame {w['frame_id'][0]}")
    padded += int(w["step_mask"].sum() < SEQ_LEN)
  assert padded >= 2 * (SEQ_LEN - 1)  # every segment's last 9 starts are right-padded


def test_raw_reader_gives_the_same_windows(calvin):
  kwargs = dict(batch_size=5, seq_len=SEQ_LEN, action_chunk=CHUNK, seed=1, augment=False)
  raw_batches = _take(pipeline.make_calvin_raw_dataset(calvin["src"], "train", **kwargs), 2)
  conv_batches = _take(pipeline.make_calvin_dataset(calvin["data_dir"], "train", **kwargs), 2)
  for r, c in zip(raw_batches, conv_batches):
    assert sorted(r) == sorted(c)
    for key in r:
      if key in raw.IMAGE_KEYS:  # raw = the npz pixels, converted = their JPEG round trip
        np.testing.assert_array_equal(np.stack([[_jpeg(f) for f in w] for w in r[key]])
                                      * c["step_mask"][..., None, None, None].astype(np.uint8), c[key])
      else:
        np.testing.assert_array_equal(r[key], c[key], err_msg=key)
  folder = calvin["src"] / "training"
  w = _window(raw_batches[0], 0)
  expected = _expected_window(folder, _segments(folder)[int(w["segment_id"])], int(w["frame_id"][0]),
                              lossy=False)
  for key, value in expected.items():
    np.testing.assert_array_equal(w[key], value, err_msg=key)


def test_augmentation_one_shift_per_window_and_camera(calvin):
  kwargs = dict(batch_size=6, seed=5, shuffle=True)
  plain, = _take(pipeline.make_calvin_dataset(calvin["data_dir"], "train", augment=False, **kwargs), 1)
  shifted, = _take(pipeline.make_calvin_dataset(calvin["data_dir"], "train", augment=True, **kwargs), 1)
  np.testing.assert_array_equal(plain["frame_id"], shifted["frame_id"])  # same windows
  non_identity = 0
  for cam, pad in (("rgb_static", random_shift.STATIC_PAD), ("rgb_gripper", random_shift.GRIPPER_PAD)):
    for i in range(len(plain["frame_id"])):
      n = int(plain["step_mask"][i].sum())
      src, out = plain[cam][i, :n], shifted[cam][i, :n]
      matches = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if np.array_equal(random_shift.apply_shift(src[:1], pad, (dy, dx)), out[:1])]
      assert matches, f"{cam} window {i}: no replicate-pad shift reproduces frame 0"
      assert any(np.array_equal(random_shift.apply_shift(src, pad, m), out) for m in matches), \
          f"{cam} window {i}: frames of one window are not shifted alike"
      non_identity += (pad, pad) not in matches
      assert not shifted[cam][i, n:].any()  # padding stays zero
  assert non_identity >= 6


def test_validation_fixed_order_no_augmentation(calvin):
  ds = pipeline.make_calvin_dataset(calvin["data_dir"], "validation", batch_size=7)
  first, second = list(ds), list(ds)
  _assert_batches_equal(first, second)
  folder = calvin["src"] / "validation"
  segments = _segments(folder)
  starts = [int(f[0]) for b in first for f in b["frame_id"]]
  expected_starts = [f for s in sorted(segments.values(), key=lambda s: s.segment_id)
                     for f in s.frame_ids()]
  assert starts == expected_starts  # every window once, record order, last batch kept
  w = _window(first[1], 3)
  expected = _expected_window(folder, segments[int(w["segment_id"])], int(w["frame_id"][0]))
  np.testing.assert_array_equal(w["rgb_static"], expected["rgb_static"])
  np.testing.assert_array_equal(w["rgb_gripper"], expected["rgb_gripper"])


def test_deterministic_per_seed_and_epochs_reshuffled(calvin):
  make = lambda seed: pipeline.make_calvin_dataset(calvin["data_dir"], "train", batch_size=4, seed=seed)
  a, b, c = _take(make(0), 3), _take(make(0), 3), _take(make(1), 3)
  _assert_batches_equal(a, b)
  assert not np.array_equal(a[0]["frame_id"], c[0]["frame_id"])
  num = len(pipeline.ConvertedFrames(calvin["data_dir"], "train"))
  epochs = _take(pipeline.make_calvin_dataset(calvin["data_dir"], "train", batch_size=num, seed=0,
                                              seq_len=1, augment=False, pretrain_video_only=True), 2)
  firsts = [[tuple(w) for w in e["frame_id"][:, :1]] for e in epochs]
  assert sorted(firsts[0]) == sorted(firsts[1]) and firsts[0] != firsts[1]


def test_resume_from_iterator_state(calvin, tmp_path):
  make = lambda: pipeline.make_calvin_dataset(calvin["data_dir"], "train", batch_size=3, seed=7)
  it = iter(make())
  _ = [next(it) for _ in range(2)]
  state = it.get_state()
  expected = [next(it) for _ in range(2)]
  fresh = iter(make())
  fresh.set_state(state)
  _assert_batches_equal([next(fresh) for _ in range(2)], expected)

  import orbax.checkpoint as ocp
  import grain
  it = iter(make())
  _ = [next(it) for _ in range(2)]
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.save(2, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
  restored = iter(make())
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.restore(2, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(restored)))
  _assert_batches_equal([next(restored) for _ in range(2)], expected)


@pytest.mark.slow  # spawns Grain worker processes (~10 s on a loaded 2-core machine)
def test_resume_with_worker_process(calvin):
  make = lambda: pipeline.make_calvin_dataset(calvin["data_dir"], "train", batch_size=2, seed=3,
                                              worker_count=1, read_threads=1)
  it = iter(make())
  first = [next(it) for _ in range(2)]
  state = it.get_state()
  expected = [next(it) for _ in range(2)]
  it.close()
  in_process = _take(pipeline.make_calvin_dataset(calvin["data_dir"], "train", batch_size=2, seed=3), 4)
  _assert_batches_equal(first + expected, in_process)  # one worker = same order as in-process
  fresh = iter(make())
  fresh.set_state(state)
  _assert_batches_equal([next(fresh) for _ in range(2)], expected)
  fresh.close()


def test_shards_are_disjoint_and_cover_the_split(calvin):
  seen = []
  for shard in range(2):
    ds = pipeline.make_calvin_dataset(calvin["data_dir"], "train", batch_size=16, seed=0,
                                      num_epochs=1, drop_remainder=False, shard_index=shard,
                                      shard_count=2, seq_len=1, pretrain_video_only=True)
    seen.append({(int(s), int(f[0])) for b in ds for s, f in zip(b["segment_id"], b["frame_id"])})
  assert not seen[0] & seen[1]
  total = len(pipeline.ConvertedFrames(calvin["data_dir"], "train"))
  assert len(seen[0]) + len(seen[1]) == total
  with pytest.raises(ValueError, match="shard_index"):
    pipeline.make_calvin_dataset(calvin["data_dir"], "train", batch_size=2, shard_index=2, shard_count=2)


def test_pretrain_video_only_keys(calvin):
  batch, = _take(pipeline.make_calvin_dataset(calvin["data_dir"], "train", batch_size=2,
                                              pretrain_video_only=True), 1)
  bs.check_batch(batch, bs.PRETRAIN_KEYS, seq_len=SEQ_LEN)
  assert set(batch) == set(bs.PRETRAIN_KEYS) | {pipeline.FRAME_ID, pipeline.SEGMENT_ID}


def test_missing_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no converted CALVIN dataset"):
    pipeline.make_calvin_dataset(tmp_path, "train", batch_size=2)
  with pytest.raises(ValueError, match="split must be"):
    pipeline.make_calvin_dataset(tmp_path, "test", batch_size=2)


def test_missing_dataset_names_a_command_that_converts(tmp_path):
  """The command the message suggests, run as written, converts (here it fails on the made-up
  source, naming it). The one it named before, data_pipelines.calvin.builder, has no
  __main__: it exited 0 and wrote nothing."""
  with pytest.raises(DataNotFoundError) as err:
    pipeline.make_calvin_dataset(tmp_path, "train", batch_size=2)
  assert isinstance(err.value, UserError) and "\n" not in str(err.value)
  command = re.search(r"`(python -m [^`]+)`", str(err.value)).group(1)
  source = tmp_path / "no_such_split"
  argv = [sys.executable if a == "python" else a for a in shlex.split(command.replace("CALVIN_SPLIT", str(source)))]
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and f"{source}: CALVIN split directory not found" in proc.stderr, proc.stderr[-2000:]
  assert os.listdir(tmp_path) == []
