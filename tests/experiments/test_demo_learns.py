"""The README's first command, run as written (its own corpus, MAE and 1200 steps, into a temp
dir): the stage-1 demo's held-out video loss sits well below the mean-frame baseline and its
predictions draw the ball near its place. About 3 CPU-minutes, so opt-in: -m slow."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_the_stage1_demo_learns_the_scene_and_the_ball(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.pretrain", "--config", "experiments/configs/pretrain.py:demo",
       "--workdir", str(tmp_path / "pretrain"), f"--config.data.path={tmp_path / 'ego4d'}",
       f"--config.mae_from={tmp_path / 'mae'}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
  summary = json.loads((tmp_path / "pretrain" / "summary.json").read_text())
  held, mean = summary["eval"]["loss/video"], summary["eval"]["baseline/video_mean_frame"]
  # Measured 0.077 vs 0.171 (45 %); a model that only learns the scene (no ball) sits near the
  # mean frame in one still scene, so 70 % is far from both.
  assert held < 0.7 * mean, (held, mean)
  ball = summary["ball"]
  # Measured: drawn in 100 % of held-out predictions, 5.1 px from its place vs 9.9 px for the
  # frame centre; v3's corpus drew it in 0 % and no closer than the centre.
  assert ball["found"] >= 0.5, ball
  assert ball["predicted_px"] < 0.75 * ball["centre_px"], ball
  assert (tmp_path / "pretrain" / "images" / "held_out_windows.png").is_file()
