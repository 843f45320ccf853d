"""Done-when of LeRobot support: a dataset written by LeRobot's own writer (or, where LeRobot is
not installed, by the project's writer following its format) trains through
`experiments.finetune` (finetune_lerobot.py:debug), the normalisation statistics are saved
with the checkpoints, and GR1Policy un-normalises its actions from them."""
import os
import subprocess
import sys

import jax
import numpy as np

from data_pipelines.lerobot import make_fake as mf
from data_pipelines.lerobot import stats
from gr1_jax import model_checkpoint
from gr1_jax.policy import GR1Policy
from tests.data_pipelines.test_lerobot_pipeline import official_writer_missing, write_official

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0",
       "JAX_PLATFORMS": "cpu"}


def test_finetune_on_a_lerobot_dataset_saves_stats_the_policy_uses(tmp_path):
  if official_writer_missing() is None:
    dataset, writer = write_official(tmp_path / "ds"), "lerobot"
  else:
    dataset, writer = mf.make_fake_dataset(tmp_path / "ds"), "own"
  stats_file = stats.write_stats(dataset)
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.finetune", "--config", "experiments/configs/finetune_lerobot.py:debug",
       "--workdir", str(workdir), "--compilation_cache_dir=", f"--config.data.path={dataset}",
       "--config.num_train_steps=4", "--config.eval_every=4", "--config.checkpoint_every=4"],
      cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, f"({writer} writer) {proc.stderr[-3000:]}"
  assert "normalisation" in proc.stderr and str(stats_file) in proc.stderr

  norm = model_checkpoint.load_norm_stats(str(workdir))
  assert norm is not None and norm.mode == "mean_std" and norm.source == str(stats_file)
  states = np.stack([mf.state_of(i) for i in range(41)])
  np.testing.assert_allclose(norm.state.stats["mean"], states[:, :6].mean(0), rtol=1e-5)
  assert (norm.state.dim, norm.state.gripper_dim, norm.action.dim, norm.action.gripper_dim) == (8, 7, 7, 6)

  policy = GR1Policy.from_checkpoint(str(workdir), static_shape=(64, 64, 3), gripper_shape=(64, 64, 3))
  assert policy.norm.to_json() == norm.to_json() and policy.robot_obs_dim == 8
  i = 14
  obs = {"rgb_obs": {"rgb_static": mf.image_of(i, 0), "rgb_gripper": mf.image_of(i, 1)},
         "robot_obs": mf.state_of(i)}
  action = policy.step(obs, mf.TASKS[1])
  assert action.shape == (7,) and action[6] in (-1.0, 1.0)
  # Un-normalised: the model's outputs are O(1) in normalised units; here they come back in the
  # dataset's action units (mean about -20, std about 12 per arm dim).
  mean, std = norm.action.stats["mean"], norm.action.stats["std"]
  normalised = norm.normalise_arm_action(action[:6])
  assert np.abs(normalised).max() < 20 and np.abs(action[:6]).max() > 1.0

  # `convert release`: the model only (config, params, norm_stats), without the optimizer
  # state, acting exactly as the run's own checkpoint.
  released = tmp_path / "released"
  proc = subprocess.run([sys.executable, "-m", "experiments.convert", "release", "--checkpoint", str(workdir),
                         "--out", str(released)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "step 4 of" in proc.stdout and "norm_stats" in proc.stdout
  assert os.listdir(released) == ["4"]
  assert "opt_state" in os.listdir(workdir / "checkpoints" / "4")
  assert not {"opt_state", "data_iter"} & set(os.listdir(released / "4"))
  config, stored = model_checkpoint.load_config(str(released))
  assert stored["experiment"]["data"]["path"] == str(dataset)   # the run's config travels along
  a = model_checkpoint.load_params(str(released), config)
  b = model_checkpoint.load_params(str(workdir), config)
  assert jax.tree.all(jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b))
  twin = GR1Policy.from_checkpoint(str(released), static_shape=(64, 64, 3), gripper_shape=(64, 64, 3))
  assert twin.norm.to_json() == norm.to_json()
  np.testing.assert_array_equal(twin.step(obs, mf.TASKS[1]), action)
  again = subprocess.run([sys.executable, "-m", "experiments.convert", "release", "--checkpoint", str(workdir),
                          "--out", str(released)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
  assert again.returncode == 2 and again.stderr.strip().startswith("error:")
  assert "already exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
