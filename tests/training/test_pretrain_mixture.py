"""config.data.mixture: stage-1 windows from weighted Ego4D and CALVIN sources, and its validation."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import batch_spec
from data_pipelines.calvin import make_fake as calvin_fake
from data_pipelines.calvin import raw as calvin_raw
from data_pipelines.ego4d import make_fake as ego4d_fake
from data_pipelines.ego4d import pipeline, prepare, records
from experiments.configs import pretrain
from gr1_jax.tokenizer import tokenize
from gr1_jax.training import experiment_config, input_pipeline
from tests.conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 64   # Ego4D clips are prepared at this size; CALVIN's 200x200 frames are resized to it


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
  root = tmp_path_factory.mktemp("mixture")
  ego4d_fake.make_fake(str(root / "ego4d_raw"), num_videos=3, seconds=9.0, size=96, seed=1,
                       broken=False, missing=False)
  ego4d = str(root / "ego4d_clips")
  # val_fraction 0.5 puts one of the three fake videos into 'val', which the run below evaluates on.
  assert prepare.main(["--ego4d_root", str(root / "ego4d_raw"), "--out", ego4d, "--size", str(SIZE),
                       "--val_fraction", "0.5", "--no_progress"]) == 0
  calvin = root / "calvin"
  calvin_fake.make_fake_dataset(calvin, frames=160, val_frames=64, episode_len=80, segment_len=32)
  return {"ego4d": ego4d, "calvin_raw": str(calvin)}


def _data(mixture: str, **changes) -> dict:
  data = pretrain.get_config("debug").data.to_dict()
  data.update(name="ego4d", path="", mixture=mixture, image_size=SIZE, augment=True, worker_count=0)
  data.update(changes)
  return data


def _batches(data, n, seed=0):
  ds = input_pipeline.make_dataset(data, tiny_config("tiny_pretrain"), global_batch=8, seed=seed, train=True)
  it = iter(ds)
  return [next(it) for _ in range(n)]


def _token_rows(texts):
  return {tuple(row) for row in tokenize(sorted(set(texts)), context_length=77, truncate=True)}


def test_mixture_yields_both_sources_in_proportion(corpora):
  mixture = f"ego4d:{corpora['ego4d']}=3, calvin_raw:{corpora['calvin_raw']}=1"
  config = pretrain.get_config("debug").to_dict()
  config["data"] = _data(mixture)
  experiment_config.validate(config)
  batches = _batches(config["data"], 8)
  ego4d_texts = _token_rows(records.decode_header(r)[0]["text"]
                            for r in pipeline.clip_source(corpora["ego4d"]))
  calvin_texts = _token_rows(s.instruction for s in calvin_raw.load_split(
      os.path.join(corpora["calvin_raw"], "training")).segments)
  for b in batches:
    batch_spec.check_batch(b, batch_spec.PRETRAIN_KEYS, seq_len=10)
    assert b["rgb_static"].shape == (8, 10, SIZE, SIZE, 3)
    for tokens, source, frames in zip(b["language_tokens"], b["source_index"], b["frame_index"]):
      # Each window carries its own corpus's text: the two sources really are both read.
      assert tuple(tokens) in (ego4d_texts if source == 0 else calvin_texts)
      assert (frames >= 0).any() == (source == 0)   # CALVIN windows have no Ego4D frame index
  share = np.concatenate([b["source_index"] for b in batches]).mean()
  assert abs(share - 0.25) <= 0.05, share


def test_converted_calvin_entry(corpora, tmp_path):
  from data_pipelines.calvin import builder
  builder.convert(corpora["calvin_raw"], tmp_path / "tfds", workers=0, progress=False)
  raw_only = _batches(_data(f"calvin_raw:{corpora['calvin_raw']}=1"), 2)
  converted = _batches(_data(f"calvin:{tmp_path / 'tfds'}=1"), 2)
  for a, b in zip(raw_only, converted):
    np.testing.assert_array_equal(a["language_tokens"], b["language_tokens"])
    # The converted split stores JPEG frames (q90), the raw one the exact pixels.
    assert np.abs(a["rgb_static"].astype(int) - b["rgb_static"]).mean() < 3


def test_mixture_is_deterministic_per_seed(corpora):
  data = _data(f"ego4d:{corpora['ego4d']}=1,calvin_raw:{corpora['calvin_raw']}=1")
  first, again, other = _batches(data, 3), _batches(data, 3), _batches(data, 3, seed=1)
  assert all(np.array_equal(a[k], b[k]) for a, b in zip(first, again) for k in a)
  assert not all(np.array_equal(a["rgb_static"], b["rgb_static"]) for a, b in zip(first, other))


def test_path_alone_still_reads_one_corpus(corpora):
  batches = _batches(_data("", path=corpora["ego4d"]), 2)
  assert all((b["source_index"] == 0).all() for b in batches)


@pytest.mark.parametrize("mixture, message", [
    ("kinetics:/data/k=1", r"entry 1 'kinetics:/data/k=1': unknown kind 'kinetics'; expected one of ego4d, calvin, calvin_raw"),
    ("ego4d:{ego4d}=0", r"entry 1 'ego4d:.*=0': weight 0 must be a finite number > 0"),
    ("ego4d:{ego4d}=1,calvin_raw:{calvin}=-0.5", r"entry 2 'calvin_raw:.*': weight -0.5 must be"),
    ("ego4d:{ego4d}=nan", r"entry 1 .*: weight nan must be a finite number > 0"),
    ("ego4d:{ego4d}=lots", r"entry 1 .*: weight 'lots' is not a number"),
    ("calvin:=0.2", r"entry 1 'calvin:=0.2' has no path; calvin expects a converted CALVIN"),
    ("ego4d:{ego4d}", r"entry 1 'ego4d:.*' has no '=WEIGHT'"),
    ("{ego4d}=1", r"entry 1 '/.*=1' has no 'KIND:'"),
    ("ego4d:{ego4d}=1,", r"entry 2 is empty"),
    ("ego4d:{ego4d}=1,calvin_raw:/no/such/dir=1", r"entry 2 .*'/no/such/dir' is not a directory"),
])
def test_bad_mixture_names_the_field_and_entry(corpora, mixture, message):
  config = pretrain.get_config("debug").to_dict()
  config["data"] = _data(mixture.format(**{"ego4d": corpora["ego4d"], "calvin": corpora["calvin_raw"]}))
  with pytest.raises(ValueError, match="config.data.mixture " + message):
    experiment_config.validate(config)


def test_mixture_conflicts_are_refused(corpora):
  config = pretrain.get_config("debug").to_dict()
  config["data"] = _data(f"ego4d:{corpora['ego4d']}=1", path=corpora["ego4d"])
  with pytest.raises(ValueError, match="config.data.path=.* and config.data.mixture are both set"):
    experiment_config.validate(config)
  config["data"] = _data(f"ego4d:{corpora['ego4d']}=1", name="synthetic")
  with pytest.raises(ValueError, match="config.data.mixture is set but data.name='synthetic'"):
    experiment_config.validate(config)


def test_mixture_is_set_from_the_command_line(tmp_path):
  """The flag reaches validation: a bad entry stops the CLI before anything is compiled."""
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.pretrain", "--config", "experiments/configs/pretrain.py:debug",
       "--workdir", str(tmp_path / "run"), "--compilation_cache_dir=", "--config.data.name=ego4d",
       f"--config.data.mixture=ego4d:{tmp_path}=1,calvin:{tmp_path}=0"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode != 0
  assert f"config.data.mixture entry 2 'calvin:{tmp_path}=0': weight 0 must be" in proc.stderr


@pytest.mark.slow   # about a minute here: compiles the tiny stage-1 train and eval steps
def test_stage1_run_on_a_mixture(corpora, tmp_path):
  """A tiny stage-1 run through the CLI on Ego4D + CALVIN windows: trains, evaluates on both
  sources' validation splits, checkpoints."""
  workdir = tmp_path / "run"
  mixture = f"ego4d:{corpora['ego4d']}=0.7,calvin_raw:{corpora['calvin_raw']}=0.3"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.pretrain", "--config", "experiments/configs/pretrain.py:debug",
       "--workdir", str(workdir), "--compilation_cache_dir=", "--config.data.name=ego4d",
       f"--config.data.mixture={mixture}", f"--config.data.image_size={SIZE}",
       "--config.num_train_steps=2", "--config.eval_every=2", "--config.checkpoint_every=2",
       "--config.log_every=1", "--config.image_every=1000"],
      cwd=REPO, capture_output=True, text=True, timeout=900,
      env={**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["step"] == 2
  assert json.loads((workdir / "config.json").read_text())["data"]["mixture"] == mixture
  assert (workdir / "checkpoints" / "2").is_dir()
  assert np.isfinite(summary["train"]["loss/video"]) and np.isfinite(summary["eval"]["loss/video"])


def test_demo_data_is_not_generated_for_a_mixture(corpora, tmp_path):
  from experiments import demo_data
  demo = tmp_path / "demo_ego4d"
  demo_data.ensure(_data(f"ego4d:{corpora['ego4d']}=1", path=str(demo), generate_demo_data=True))
  assert not demo.exists()
