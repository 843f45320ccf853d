"""LeRobot pipeline: datasets written by this project's writer (v3.0, v2.1) and by LeRobot's own
writer -> Grain windows, checked frame by frame against the content every frame encodes
(data_pipelines/lerobot/make_fake.py: state, action and the frame index in the pixels).

LeRobot's writer runs in a separate venv (tests/data_pipelines/lerobot_official_writer.py says
how it is made): $GR1_LEROBOT_PYTHON, default /work/lerobot_venv/bin/python. Without it those
cases skip; the same checks run on the project's own writer, which the format test below
compares against LeRobot's output file by file when that venv exists.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_pipelines import batch_spec as bs
from data_pipelines.errors import DataError, DataNotFoundError
from data_pipelines.lerobot import format as lr_format
from data_pipelines.lerobot import make_fake as mf
from data_pipelines.lerobot import pipeline, stats
from gr1_jax import norm_stats as ns
from gr1_jax.tokenizer import tokenize

LENGTHS = (12, 20, 9)
SEQ_LEN, CHUNK = 10, 3
WRITER = Path(__file__).with_name("lerobot_official_writer.py")
LEROBOT_PYTHON = os.environ.get("GR1_LEROBOT_PYTHON", "/work/lerobot_venv/bin/python")


def official_writer_missing() -> str | None:
  """Why LeRobot's own writer cannot run here, or None."""
  if not os.path.isfile(LEROBOT_PYTHON):
    return f"no Python with lerobot at {LEROBOT_PYTHON} (set GR1_LEROBOT_PYTHON; see {WRITER.name})"
  probe = subprocess.run([LEROBOT_PYTHON, "-c", "import lerobot"], capture_output=True, text=True)
  if probe.returncode:
    return f"{LEROBOT_PYTHON} cannot import lerobot: {probe.stderr.strip().splitlines()[-1:]}"
  return None


def write_official(out: Path, lengths=LENGTHS) -> Path:
  subprocess.run([LEROBOT_PYTHON, str(WRITER), "--out", str(out), "--lengths", ",".join(map(str, lengths))],
                 check=True, capture_output=True, text=True, timeout=600)
  return out


@pytest.fixture(scope="module", params=["own-v3.0", "own-v2.1", "lerobot-writer"])
def dataset(request, tmp_path_factory):
  out = tmp_path_factory.mktemp(request.param) / "ds"
  if request.param == "lerobot-writer":
    reason = official_writer_missing()
    if reason:
      pytest.skip(reason)
    return write_official(out)
  return mf.make_fake_dataset(out, lengths=LENGTHS, version=request.param.split("-")[1])


def _all_windows(root, spec, *, split="validation", **kw):
  ds = pipeline.make_lerobot_dataset(root, split, spec, batch_size=1, seq_len=SEQ_LEN, action_chunk=CHUNK,
                                     shuffle=False, augment=False, num_epochs=1, **kw)
  return [{k: v[0] for k, v in batch.items()} for batch in ds]


def _expected(first: int, episode: int) -> dict:
  """The window starting at global frame `first` of `episode`, from make_fake's content rules."""
  start = sum(LENGTHS[:episode])
  end = start + LENGTHS[episode]
  out = {"step_mask": np.zeros(SEQ_LEN, np.float32), "frame_id": np.full(SEQ_LEN, -1),
         "arm_state": np.zeros((SEQ_LEN, 6), np.float32), "gripper_state": np.tile([1.0, 0.0], (SEQ_LEN, 1)),
         "arm_action": np.zeros((SEQ_LEN, CHUNK, 6), np.float32), "gripper_action": np.zeros((SEQ_LEN, CHUNK)),
         "action_mask": np.zeros((SEQ_LEN, CHUNK))}
  for t in range(SEQ_LEN):
    i = first + t
    if i >= end:
      break
    out["step_mask"][t], out["frame_id"][t] = 1, i
    out["arm_state"][t] = mf.state_of(i)[:6]
    out["gripper_state"][t] = [0.0, 1.0] if mf.state_of(i)[7] > 0 else [1.0, 0.0]
    for k in range(CHUNK):
      if i + k < end:
        out["arm_action"][t, k] = mf.action_of(i + k)[:6]
        out["gripper_action"][t, k] = float(mf.action_of(i + k)[6] > 0)
        out["action_mask"][t, k] = 1
  return out


def test_every_window_exact(dataset):
  """Every window of every episode: frames by index (both cameras), states, actions, gripper
  classes, masks, padding at the episode end, never a frame of another episode, the task."""
  windows = _all_windows(dataset, pipeline.LeRobotSpec(normalization="none", val_episodes=0))
  assert len(windows) == sum(LENGTHS)
  starts = np.cumsum((0,) + LENGTHS)
  for w in windows:
    episode = int(w["segment_id"])
    first = int(w["frame_id"][0])
    assert starts[episode] <= first < starts[episode + 1]
    exp = _expected(first, episode)
    for key in ("step_mask", "frame_id", "arm_state", "gripper_state", "arm_action", "gripper_action",
                "action_mask"):
      np.testing.assert_array_equal(w[key], exp[key], err_msg=f"{key} of the window at frame {first}")
    valid = int(exp["step_mask"].sum())
    for c, cam in enumerate((bs.RGB_STATIC, bs.RGB_GRIPPER)):
      assert w[cam].shape == (SEQ_LEN, 64, 64, 3) and w[cam].dtype == np.uint8
      assert [mf.decode_image(w[cam][t]) for t in range(valid)] == [(first + t, c) for t in range(valid)]
      assert not w[cam][valid:].any()   # padding: zero images
    np.testing.assert_array_equal(w[bs.LANGUAGE_TOKENS], tokenize([mf.TASKS[episode % 2]])[0])
    bs.check_batch({k: v[None] for k, v in w.items()}, bs.FINETUNE_KEYS, seq_len=SEQ_LEN)


@pytest.mark.parametrize("mode", ["mean_std", "quantile"])
def test_normalised_arm_values(dataset, mode, tmp_path):
  path = stats.write_stats(dataset, tmp_path / "stats.json")
  written = json.loads(path.read_text())["keys"]
  states = np.stack([mf.state_of(i) for i in range(sum(LENGTHS))]).astype(np.float64)
  np.testing.assert_allclose(written["observation.state"]["mean"], states.mean(0), rtol=1e-6)
  np.testing.assert_allclose(written["observation.state"]["q99"], np.quantile(states, 0.99, axis=0), rtol=1e-6)
  spec = pipeline.LeRobotSpec(normalization=mode, stats_file=str(path), val_episodes=0)
  w = _all_windows(dataset, spec)[5]
  exp = _expected(int(w["frame_id"][0]), int(w["segment_id"]))
  s, a = written["observation.state"], written["action"]
  if mode == "mean_std":
    arm_state = (exp["arm_state"] - np.float32(s["mean"][:6])) / (np.float32(s["std"][:6]) + 1e-6)
    arm_action = (exp["arm_action"] - np.float32(a["mean"][:6])) / (np.float32(a["std"][:6]) + 1e-6)
  else:
    q = lambda d, x: 2 * (x - np.float32(d["q01"][:6])) / (np.float32(d["q99"][:6]) - np.float32(d["q01"][:6]) + 1e-6) - 1
    arm_state, arm_action = q(s, exp["arm_state"]), q(a, exp["arm_action"])
  mask = exp["action_mask"][..., None]
  np.testing.assert_allclose(w["arm_state"], arm_state * exp["step_mask"][:, None], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(w["arm_action"], arm_action * mask, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(w["gripper_action"], exp["gripper_action"])   # thresholded on raw values


def test_splits_shards_determinism_and_iterator_state(tmp_path_factory):
  root = mf.make_fake_dataset(tmp_path_factory.mktemp("split") / "ds", lengths=LENGTHS)
  spec = pipeline.LeRobotSpec(normalization="none", val_episodes=1)
  train = _all_windows(root, spec, split="train")
  val = _all_windows(root, spec, split="validation")
  assert {int(w["segment_id"]) for w in train} == {0, 1} and {int(w["segment_id"]) for w in val} == {2}
  halves = [{int(w["frame_id"][0]) for w in _all_windows(root, spec, split="train", shard_index=i, shard_count=2)}
            for i in range(2)]
  assert not halves[0] & halves[1] and halves[0] | halves[1] == set(range(LENGTHS[0] + LENGTHS[1]))

  def make():
    return pipeline.make_lerobot_dataset(root, "train", spec, batch_size=4, seq_len=SEQ_LEN, seed=7)
  first, second = iter(make()), iter(make())
  a = [next(first) for _ in range(3)]
  b = [next(second) for _ in range(3)]
  for x, y in zip(a, b):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  state = first.get_state()
  expected = next(first)
  resumed = iter(make())
  resumed.set_state(state)
  got = next(resumed)
  for key in expected:
    np.testing.assert_array_equal(got[key], expected[key])


def test_video_only_windows(tmp_path_factory):
  root = mf.make_fake_dataset(tmp_path_factory.mktemp("vo") / "ds", lengths=(4, 6))
  batch = next(iter(pipeline.make_lerobot_dataset(root, "validation", pipeline.LeRobotSpec(val_episodes=0),
                                                  batch_size=2, seq_len=SEQ_LEN, shuffle=False, augment=False,
                                                  pretrain_video_only=True)))
  assert set(batch) == set(bs.PRETRAIN_KEYS) | {"frame_id", "segment_id"}
  assert [mf.decode_image(batch[bs.RGB_STATIC][1, t]) for t in range(3)] == [(1, 0), (2, 0), (3, 0)]


def test_errors_name_the_file_or_key(tmp_path_factory):
  root = mf.make_fake_dataset(tmp_path_factory.mktemp("err") / "ds", lengths=(4, 6))
  with pytest.raises(DataNotFoundError, match="meta/info.json"):
    pipeline.LeRobotFrames(root.parent / "nowhere", pipeline.LeRobotSpec())
  with pytest.raises(DataError, match="'observation.images.front' does not exist"):
    pipeline.LeRobotFrames(root, pipeline.LeRobotSpec(static_camera="observation.images.front", normalization="none"))
  with pytest.raises(DataNotFoundError, match=r"gr1_stats.json; compute them once with `python -m data_pipelines"):
    pipeline.LeRobotFrames(root, pipeline.LeRobotSpec(normalization="mean_std"))
  with pytest.raises(DataError, match="dim 9 of 'action' does not exist"):
    pipeline.LeRobotFrames(root, pipeline.LeRobotSpec(normalization="none", gripper_action_dim=9))
  os.remove(root / "videos/observation.images.wrist_image/chunk-000/file-000.mp4")
  with pytest.raises(DataNotFoundError, match="file-000.mp4: video of camera 'observation.images.wrist_image'"):
    pipeline.LeRobotFrames(root, pipeline.LeRobotSpec(normalization="none"))


def test_stats_cli(tmp_path_factory):
  root = mf.make_fake_dataset(tmp_path_factory.mktemp("cli") / "ds", lengths=(4, 6))
  env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
  run = lambda *args: subprocess.run([sys.executable, "-m", "data_pipelines.lerobot.stats", *args],
                                     capture_output=True, text=True, env=env)
  done = run("--config", "experiments/configs/finetune_lerobot.py:debug", f"--config.data.path={root}")
  assert done.returncode == 0, done.stderr
  assert Path(done.stdout.strip()) == root / pipeline.STATS_FILE
  assert json.loads((root / pipeline.STATS_FILE).read_text())["num_frames"] == 10
  failed = run("--dataset", str(root / "missing"))
  assert failed.returncode == 2 and failed.stderr.startswith("error: ") and "meta/info.json" in failed.stderr


def test_own_writer_matches_lerobot_writer(tmp_path_factory):
  """The project's writer (used where LeRobot cannot be installed) writes the files, info keys,
  episode columns and data schema that LeRobot's own writer writes."""
  reason = official_writer_missing()
  if reason:
    pytest.skip(reason)
  base = tmp_path_factory.mktemp("cmp")
  ours = mf.make_fake_dataset(base / "ours", lengths=LENGTHS)
  theirs = write_official(base / "theirs")
  files = lambda root: {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
  assert files(ours) - {"meta/stats.json"} <= files(theirs)
  info_ours, info_theirs = (json.loads((r / lr_format.INFO).read_text()) for r in (ours, theirs))
  for key in ("codebase_version", "fps", "data_path", "video_path", "chunks_size", "total_episodes", "total_frames"):
    assert info_ours[key] == info_theirs[key], key
  for key, feature in info_theirs["features"].items():
    assert {k: feature[k] for k in ("dtype", "shape")} == {k: info_ours["features"][key][k] for k in ("dtype", "shape")}
  episodes = "meta/episodes/chunk-000/file-000.parquet"
  cols = lambda root, f: [c for c in pq.read_schema(root / f).names if not c.startswith("stats/")]
  assert set(cols(ours, episodes)) == set(cols(theirs, episodes))
  data = "data/chunk-000/file-000.parquet"
  assert pq.read_schema(ours / data).remove_metadata() == pq.read_schema(theirs / data).remove_metadata()
  texts = ("tasks", "__index_level_0__")
  for f in (episodes, data, "meta/tasks.parquet"):
    a, b = pq.read_table(ours / f).to_pydict(), pq.read_table(theirs / f).to_pydict()
    for col in (c for c in a if not c.startswith("stats/")):
      if col in texts:
        assert a[col] == b[col], f"{f}: {col}"
      else:
        np.testing.assert_allclose(np.asarray(a[col], float), np.asarray(b[col], float), err_msg=f"{f}: {col}")
  data_ours = lr_format.open_dataset(ours, ["observation.state", "action"])
  data_theirs = lr_format.open_dataset(theirs, ["observation.state", "action"])
  for key in ("observation.state", "action", "timestamp", "index"):
    np.testing.assert_array_equal(data_ours.arrays[key], data_theirs.arrays[key])


def test_config_wiring_mixture_and_validation(tmp_path_factory):
  """data.name='lerobot' configs validate (arm dims must match the model's arm), and the
  stage-1 mixture kind lerobot gives video-only windows of the static camera."""
  from experiments.configs import finetune_lerobot, pretrain
  from gr1_jax.training import experiment_config, input_pipeline
  from gr1_jax.user_errors import ConfigError
  root = mf.make_fake_dataset(tmp_path_factory.mktemp("cfg") / "ds", lengths=(4, 6))
  c = finetune_lerobot.get_config("debug")
  c.data.path = str(root)
  experiment_config.validate(c.to_dict())
  c.data.lerobot.arm_action_dims = (0, 1, 2)
  with pytest.raises(ConfigError, match=r"arm_action_dims=\(0, 1, 2\) has 3 dims; the model's arm has 6"):
    experiment_config.validate(c.to_dict())
  c.data.lerobot.arm_action_dims = (0, 1, 2, 3, 4, 5)
  c.data.lerobot.normalization = "minmax"
  with pytest.raises(ConfigError, match="normalization='minmax'"):
    experiment_config.validate(c.to_dict())

  p = pretrain.get_config("debug")
  p.data.update(name="ego4d", path="", mixture=f"lerobot:{root}=1")
  model = experiment_config.validate(p.to_dict())
  [(windows, weight)] = input_pipeline.pretrain_sources(p.data.to_dict(), model, seed=0, train=True,
                                                        shard_index=0, shard_count=1)
  w = windows[0]
  assert weight == 1.0 and set(w) == set(bs.PRETRAIN_KEYS) | {"frame_id", "segment_id"}
  assert mf.decode_image(w[bs.RGB_STATIC][0])[1] == 0   # the static camera
