"""Frame reuse in the data pipelines: the windows unfolded from a segment are, key by key, the
per-window pipeline's windows for the same starts (CALVIN, Ego4D), and the wiring of
config.data.frame_reuse (segment batches, validation)."""
import numpy as np
import pytest

from data_pipelines import batch_spec as bs
from data_pipelines import frame_reuse as reuse
from data_pipelines.calvin import make_fake as calvin_fake
from data_pipelines.calvin import pipeline as calvin
from data_pipelines.ego4d import make_fake as ego4d_fake
from data_pipelines.ego4d import pipeline as ego4d
from data_pipelines.ego4d import prepare
from experiments.configs import finetune_calvin, pretrain
from gr1_jax.training import experiment_config, input_pipeline
from gr1_jax.user_errors import ConfigError
from tests.conftest import tiny_config

L, W, CHUNK = 10, 6, 3
S = reuse.segment_length(L, W)   # 15
SIZE = 64


@pytest.fixture(scope="module")
def calvin_src(tmp_path_factory):
  src = tmp_path_factory.mktemp("calvin") / "fake"
  # 16-frame annotated segments: chunks start at frames 0, 6, 12 of each; the last chunk holds
  # 4 real window starts and 2 windows that are all padding.
  calvin_fake.make_fake_dataset(src, frames=96, val_frames=32, episode_len=48, segment_len=16, seed=4,
                                compress=False)
  return src


@pytest.fixture(scope="module")
def ego4d_src(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("ego4d_raw"))
  ego4d_fake.make_fake(root, num_videos=2, seconds=9.0, size=96, seed=1, broken=False, missing=False)
  out = str(tmp_path_factory.mktemp("ego4d_clips"))
  assert prepare.main(["--ego4d_root", root, "--out", out, "--size", str(SIZE), "--no_progress"]) == 0
  return out


def _unfold_one(element: dict) -> list[dict]:
  """One unbatched segment -> its W unbatched windows (through the batched unfold_batch)."""
  batch = reuse.unfold_batch({k: np.asarray(v)[None] for k, v in element.items()}, L, W)
  return [{k: v[w] for k, v in batch.items()} for w in range(W)]


def _assert_same(a: dict, b: dict, what: str):
  assert sorted(a) == sorted(b), what
  for key in a:
    assert a[key].dtype == b[key].dtype, f"{what}: {key}"
    np.testing.assert_array_equal(a[key], b[key], err_msg=f"{what}: {key}")


def _assert_all_padding(window: dict, what: str):
  assert not window[bs.STEP_MASK].any(), what
  assert (window[calvin.FRAME_ID] == -1).all(), what
  for key in (bs.RGB_STATIC, bs.RGB_GRIPPER, bs.ACTION_MASK, bs.ARM_ACTION, bs.ARM_STATE):
    if key in window:
      assert not window[key].any(), f"{what}: {key}"


@pytest.mark.parametrize("video_only", [False, True], ids=["finetune", "video_only"])
def test_calvin_segments_unfold_into_the_per_window_windows(calvin_src, video_only):
  frames = calvin.RawFrames(calvin.raw_split_folder(calvin_src, "train"))
  kwargs = dict(seq_len=L, action_chunk=CHUNK, shuffle=False, augment=False, num_epochs=1,
                pretrain_video_only=video_only)
  windows = calvin.calvin_windows(frames, **kwargs)            # windows[r]: the window at record r
  segments = calvin.calvin_windows(frames, frame_reuse=W, **kwargs)
  table = frames.table
  starts = reuse.chunk_starts(table.first_record, table.num_frames, W)
  assert len(segments) == len(starts) == sum(-(-int(n) // W) for n in table.num_frames)
  covered, padded = [], 0
  for k, start in enumerate(starts):
    segment = segments[k]
    assert segment[bs.STEP_MASK].shape == (S,)
    row, _ = table.locate(int(start))
    end = int(table.first_record[row] + table.num_frames[row])   # first record past the annotation
    for w, window in enumerate(_unfold_one(segment)):
      record = int(start) + w
      if record < end:
        _assert_same(window, windows[record], f"segment {k} window {w} (record {record})")
        covered.append(record)
      else:
        _assert_all_padding(window, f"segment {k} window {w}")
        padded += 1
  assert sorted(covered) == list(range(len(frames)))   # every per-window window exactly once
  assert padded == 2 * len(table.num_frames)


def test_calvin_one_window_per_segment_is_the_per_window_pipeline(calvin_src):
  kwargs = dict(batch_size=4, seq_len=L, action_chunk=CHUNK, seed=3, augment=True)
  plain = calvin.make_calvin_raw_dataset(calvin_src, "train", **kwargs)
  single = calvin.make_calvin_raw_dataset(calvin_src, "train", frame_reuse=1, **kwargs)
  for a, b, _ in zip(plain, single, range(3)):   # shuffled and augmented alike
    _assert_same(a, b, "frame_reuse=1")


def test_calvin_augmentation_is_one_shift_per_segment(calvin_src):
  kwargs = dict(batch_size=3, seq_len=L, seed=5, frame_reuse=W)
  plain = next(iter(calvin.make_calvin_raw_dataset(calvin_src, "train", augment=False, **kwargs)))
  shifted = next(iter(calvin.make_calvin_raw_dataset(calvin_src, "train", augment=True, **kwargs)))
  np.testing.assert_array_equal(plain[calvin.FRAME_ID], shifted[calvin.FRAME_ID])
  from data_pipelines import random_shift
  for i in range(3):
    n = int(plain[bs.STEP_MASK][i].sum())
    src, out = plain[bs.RGB_STATIC][i, :n], shifted[bs.RGB_STATIC][i, :n]
    pad = random_shift.STATIC_PAD
    assert any(np.array_equal(random_shift.apply_shift(src, pad, (dy, dx)), out)
               for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)), f"segment {i}: not one shift"


@pytest.mark.parametrize("stride", [1, 2])
def test_ego4d_segments_unfold_into_the_per_window_windows(ego4d_src, stride):
  clips = ego4d.clip_source(ego4d_src)
  make = lambda steps: ego4d.ClipToWindow(seq_len=steps, frame_stride=stride, train=False, shift_pad=0,
                                          source_index=0, image_size=SIZE)
  window_of, segment_of = make(L), make(S)
  checked = padded = 0
  for c in range(len(clips)):
    element = clips[c]
    n = len(ego4d._parse_element(element)[1])
    # full segments, and starts near the end where windows are right-padded or all padding
    for start in sorted({0, max(0, n - (S - 1) * stride - 1), max(0, n - 12), n - 2}):
      segment = segment_of.window_at(element, start)
      for w, window in enumerate(_unfold_one(segment)):
        first = start + w * stride
        if first < n:
          _assert_same(window, window_of.window_at(element, first), f"clip {c} start {start} window {w}")
          checked += 1
        else:
          assert not window[bs.STEP_MASK].any() and (window[ego4d.FRAME_INDEX] == -1).all()
          assert not window[bs.RGB_STATIC].any()
          padded += 1
  assert checked > 40 and padded > 0


def test_ego4d_training_segments_start_inside_the_clip(ego4d_src):
  ds = ego4d.make_pretrain_dataset(ego4d_src, batch_size=2, seed=1, image_size=SIZE, augment=True,
                                   frame_reuse=W)
  full = 0
  for batch, _ in zip(ds, range(4)):
    assert batch[bs.RGB_STATIC].shape == (2, S, SIZE, SIZE, 3)
    for fi, mask in zip(batch[ego4d.FRAME_INDEX], batch[bs.STEP_MASK]):
      n = int(mask.sum())
      assert (mask[:n] == 1).all() and (fi[n:] == -1).all() and (fi[:n] >= 0).all()   # right-padded
      full += n == S
  assert full > 0   # clips of at least S frames give full segments


def _config(base, **data):
  c = base.get_config("debug").to_dict()
  c["data"].update(data)
  return c


def test_config_validation():
  assert _config(finetune_calvin)["data"]["frame_reuse"] == 0   # off by default, both stages
  assert _config(pretrain)["data"]["frame_reuse"] == 0
  experiment_config.validate(_config(finetune_calvin, frame_reuse=4))   # batch 8 = 2 segments x 4
  with pytest.raises(ConfigError, match="config.data.frame_reuse=-1 must be 0"):
    experiment_config.validate(_config(finetune_calvin, frame_reuse=-1))
  with pytest.raises(ConfigError, match="config.batch_size=8 is not divisible by config.data.frame_reuse=3"):
    experiment_config.validate(_config(finetune_calvin, frame_reuse=3))
  assert experiment_config.segments_per_batch(_config(pretrain, frame_reuse=4)) == 2


def test_input_pipeline_batches_segments_for_training_only(calvin_src, ego4d_src):
  model = tiny_config("tiny")
  data = _config(finetune_calvin, name="calvin_raw", path=str(calvin_src), frame_reuse=W)["data"]
  train = next(iter(input_pipeline.make_dataset(data, model, global_batch=2 * W, seed=0, train=True)))
  assert train[bs.RGB_STATIC].shape[:2] == (2, S) and train[bs.ACTION_MASK].shape == (2, S, 1)
  val = next(iter(input_pipeline.make_dataset(data, model, global_batch=2 * W, seed=0, train=False)))
  assert val[bs.STEP_MASK].shape == (2 * W, L)   # evaluation stays per-window
  synthetic = _config(finetune_calvin, frame_reuse=W)["data"]
  batch = next(iter(input_pipeline.make_dataset(synthetic, model, global_batch=2 * W, seed=0, train=True)))
  assert batch[bs.ARM_ACTION].shape[:2] == (2, S)
  # a stage-1 mixture: Ego4D clips and CALVIN video-only windows both as segments
  mixture = f"ego4d:{ego4d_src}=1,calvin_raw:{calvin_src}=1"
  data = _config(pretrain, name="ego4d", path="", mixture=mixture, image_size=SIZE, frame_reuse=W)["data"]
  batch = next(iter(input_pipeline.make_dataset(data, tiny_config("tiny_pretrain"), global_batch=4 * W,
                                                seed=0, train=True)))
  assert batch[bs.RGB_STATIC].shape == (4, S, SIZE, SIZE, 3)
  assert set(batch[ego4d.SOURCE_INDEX].tolist()) == {0, 1}
