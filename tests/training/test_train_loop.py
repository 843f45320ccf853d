"""The training loop as a user runs it (the CLI in subprocesses): resume after kill -9 is
bit-identical, SIGTERM saves and exits cleanly, K consecutive non-finite steps stop the run
without ever writing a non-finite checkpoint, and init_from fine-tunes a stage-1 run."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gr1_jax import model_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 20   # one value for every run here, so all of them share one compiled program
ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0",
       "JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module")
def cache(finetune_xla_cache):
  return finetune_xla_cache


def _command(stage, workdir, cache, *overrides):
  config = {"pretrain": "pretrain", "finetune": "finetune_calvin"}[stage]
  return [sys.executable, "-m", f"experiments.{stage}", "--config", f"experiments/configs/{config}.py:debug",
          "--workdir", str(workdir), f"--compilation_cache_dir={cache}", f"--config.num_train_steps={STEPS}",
          "--config.eval_every=1000", "--config.log_every=5", *overrides]


def _run(*args, timeout=900):
  proc = subprocess.run(_command(*args), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
  return proc


def _steps(workdir):
  directory = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(directory) else []


def _params(workdir, step):
  config, _ = model_checkpoint.load_config(str(workdir), step)
  return jax.device_get(model_checkpoint.load_params(str(workdir), config, step=step))


def _wait_for_checkpoint(proc, workdir, timeout=900):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if _steps(workdir):
      return
    if proc.poll() is not None:
      raise AssertionError(f"run ended (rc {proc.returncode}) before its first checkpoint:\n"
                           + proc.stderr.read()[-3000:])
    time.sleep(0.05)
  raise AssertionError("no checkpoint appeared")


def test_kill9_resume_is_bit_identical(tmp_path, cache):
  straight = tmp_path / "straight"
  proc = _run("finetune", straight, cache, "--config.checkpoint_every=4")
  assert proc.returncode == 0, proc.stderr[-3000:]
  # The final evaluation prints the model's held-out video losses beside two baselines and
  # draws a grid for each camera.
  evaluated = json.loads((straight / "summary.json").read_text())["eval"]
  assert {f"baseline/{c}_{b}" for c in ("video", "video_hand") for b in ("mean_frame", "copy_last")} <= set(evaluated)
  assert f"step {STEPS}: held-out video loss" in proc.stderr and "copy-last-frame baseline" in proc.stderr
  assert sorted(os.listdir(straight / "images")) == [f"predicted_vs_real_{STEPS:07d}.png",
                                                      f"predicted_vs_real_hand_{STEPS:07d}.png"]

  resumed = tmp_path / "resumed"
  victim = subprocess.Popen(_command("finetune", resumed, cache, "--config.checkpoint_every=4"), cwd=REPO,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  _wait_for_checkpoint(victim, resumed)
  time.sleep(random.uniform(0.0, 0.5))
  assert victim.poll() is None, "the run finished before it could be killed"
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  killed_at = _steps(resumed)
  assert killed_at and killed_at[-1] < STEPS

  # The same workdir given relative to the run's cwd: resolved to the absolute path once.
  proc = _run("finetune", os.path.relpath(resumed, REPO), cache, "--config.checkpoint_every=4")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"resumed from {resumed}/checkpoints step {killed_at[-1]}" in proc.stderr
  a, b = _params(straight, STEPS), _params(resumed, STEPS)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    assert np.array_equal(x, y), jax.tree_util.keystr(path)


def _random_mae(directory):
  """An MAE directory (gr1_jax/mae_weights.py) for the finetune debug model, random weights."""
  from experiments.configs import finetune_calvin
  from gr1_jax import mae_weights
  from gr1_jax.model_config import GR1Config
  from gr1_jax.modules.mae_vit import MAEEncoder
  from flax import nnx
  model = GR1Config.from_dict(finetune_calvin.get_config("debug").model.to_dict())
  shapes = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: MAEEncoder(model.mae, rngs=nnx.Rngs(0))), nnx.Param))
  rng = np.random.default_rng(5)
  params = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32), shapes)
  mae_weights.save(str(directory), params, model.mae)
  return params


def test_sigterm_saves_and_exits_cleanly(tmp_path, cache):
  mae = _random_mae(tmp_path / "mae")   # config.mae_from replaces the fresh frozen encoder
  proc = subprocess.Popen(_command("finetune", tmp_path, cache, "--config.checkpoint_every=3",
                                   f"--config.mae_from={tmp_path / 'mae'}"), cwd=REPO,
                          env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  _wait_for_checkpoint(proc, tmp_path)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 0, stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["stopped_by"] == "SIGTERM"
  assert summary["step"] < STEPS and _steps(tmp_path)[-1] == summary["step"]
  saved = _params(tmp_path, summary["step"])
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(saved))
  assert "frozen MAE from" in summary["init"]
  for x, y in zip(jax.tree.leaves(mae), jax.tree.leaves(saved["model_mae"])):
    assert np.array_equal(x, y)


def test_consecutive_nonfinite_steps_stop_the_run(tmp_path, cache):
  proc = _run("finetune", tmp_path, cache, "--config.checkpoint_every=1", "--config.data.nonfinite_from=5",
              "--config.max_consecutive_nonfinite=3")
  assert proc.returncode != 0
  assert "3 consecutive steps (up to step 8) had a non-finite loss or gradient" in proc.stderr
  steps = _steps(tmp_path)
  assert steps and steps[-1] <= 8
  for step in steps:   # skipped steps keep the last finite params; nothing non-finite is saved
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(_params(tmp_path, step)))


@pytest.mark.slow   # compiles the stage-1 program too; test_checkpointing covers the mapping itself
def test_init_from_stage1_logs_loaded_and_new(tmp_path, cache):
  stage1 = tmp_path / "stage1"
  proc = _run("pretrain", stage1, cache, "--config.num_train_steps=2", "--config.checkpoint_every=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  stage2 = tmp_path / "stage2"
  proc = _run("finetune", stage2, cache, "--config.checkpoint_every=100", "--config.num_train_steps=2",
              f"--config.init_from={stage1}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((stage2 / "init_from_report.json").read_text())
  assert "init_from" in proc.stderr and "initialised fresh" in proc.stderr
  loaded, fresh = set(report["loaded"]), set(report["initialised"])
  assert {"transformer/h/0/attn/qkv/kernel", "obs_queries", "embed_timestep", "decoder/decoder_pred/kernel"} <= loaded
  assert any(k.startswith("perceiver_resampler/") for k in loaded)
  assert any(k.startswith("embed_arm_state/") for k in fresh) and "action_queries" in fresh
  assert any(k.startswith("embed_hand_img/") for k in fresh) and "obs_hand_queries" in fresh
  assert report["unused"] == []
  # Frozen encoders never train, so stage 2 holds stage 1's exactly.
  a, b = _params(stage1, 2), _params(stage2, 2)
  for x, y in zip(jax.tree.leaves(a["model_mae"]), jax.tree.leaves(b["model_mae"])):
    assert np.array_equal(x, y)
