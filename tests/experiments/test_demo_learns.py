"""The README's two commands, run as written (their own corpora, MAE and schedules, into a
temp dir). Stage 1: the held-out video loss sits well below the mean-frame baseline and the
predictions draw the ball near its place. Stage 2, fine-tuned from it: the wrist camera's
predictions beat its mean frame and both cameras' predicted frames change from step to step.
About 6.5 min wall on a quiet 2-core machine (about 3 + 7 CPU-minutes), so opt-in: -m slow."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def _run(*args):
  proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=ENV, capture_output=True,
                        text=True, timeout=3600)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  root = tmp_path_factory.mktemp("demo")
  _run("experiments.pretrain", "--config", "experiments/configs/pretrain.py:demo",
       "--workdir", str(root / "pretrain"), f"--config.data.path={root / 'ego4d'}",
       f"--config.mae_from={root / 'mae'}")
  return root


@pytest.mark.slow
def test_the_stage1_demo_learns_the_scene_and_the_ball(demo):
  summary = json.loads((demo / "pretrain" / "summary.json").read_text())
  held, mean = summary["eval"]["loss/video"], summary["eval"]["baseline/video_mean_frame"]
  # Measured 0.077 vs 0.171 (45 %); a model that only learns the scene (no ball) sits near the
  # mean frame in one still scene, so 70 % is far from both.
  assert held < 0.7 * mean, (held, mean)
  ball = summary["ball"]
  # Measured: drawn in 100 % of held-out predictions, 5.1 px from its place vs 9.9 px for the
  # frame centre; v3's corpus drew it in 0 % and no closer than the centre.
  assert ball["found"] >= 0.5, ball
  assert ball["predicted_px"] < 0.75 * ball["centre_px"], ball
  assert (demo / "pretrain" / "images" / "held_out_windows.png").is_file()


@pytest.mark.slow
def test_the_stage2_demo_reads_the_wrist_view_and_its_predictions_change(demo):
  _run("experiments.finetune", "--config", "experiments/configs/finetune_calvin.py:demo",
       "--workdir", str(demo / "finetune"), f"--config.data.path={demo / 'calvin'}",
       f"--config.init_from={demo / 'pretrain'}")
  ev = json.loads((demo / "finetune" / "summary.json").read_text())["eval"]
  # Measured 0.19 vs 0.27 (69 %). One constant frame, the most a model that ignores its
  # inputs can learn, scores the mean frame; the last release's 200-step demo scored 1.3x it
  # (on its first-seconds evaluation windows).
  assert ev["loss/video_hand"] < 0.85 * ev["baseline/video_hand_mean_frame"], ev
  # Predicted frames changed 0.5 (static) and 0.6 (wrist) grey levels per step against 0.5 and
  # 1.2 in the real ones; the last release's stood still (0.1 and 0.2 against 1.3 and 15.1).
  for camera in ("video", "video_hand"):
    assert ev[f"motion/{camera}"] > 0.3 * ev[f"motion/{camera}_real"], (camera, ev)
  for name in ("predicted_vs_real", "predicted_vs_real_hand"):
    assert (demo / "finetune" / "images" / f"{name}_0001000.png").is_file()
