"""Generates the demo's data with the pipelines' fake generators when it is not there yet.

  Ego4D layout:  make_fake videos + narrations -> prepare (64-px clips, a quarter of the
                 videos in the 'val' split), into <path>/raw and <path> itself.
  CALVIN layout: make_fake raw split (training/ + validation/) into <path>.
  MAE encoder:   experiments/pretrain_mae.py on the demo corpus into config.mae_from.
All are written under a temporary name and renamed when complete, so an
interrupted generation is redone, never half-read.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile

log = logging.getLogger(__name__)

EGO4D_DEMO_SIZE = 64
# One still scene for every demo video (make_fake's fixed_scene), as a robot's camera sees one
# table: the background is the same in every frame of every video, so only the ball differs.
# Measured: with a new random background per video (corpus v3) the demo model learnt each
# scene's colours but drew no ball (its most ball-coloured spot no closer than the frame
# centre); with one scene it draws the ball in its colour in every held-out prediction, about
# half the centre's distance from its place (README, quick start). Our reading of why: with a
# fixed scene the patches the ball covers are the ones whose tokens lack their usual background,
# which says where the ball is even after the resampler's attention averages over the patches;
# with a new scene each time, nothing tells a ball patch's place apart after that average.
# background_cell: source pixels between the scene's random colours (96-px videos: about two
# cells across, a layout coarse enough for 4x4 patches to draw).
EGO4D_DEMO_BACKGROUND_CELL = 48
# The ball: a sixth of the short side in radius (a disc about 21 px across in the 64-px clips,
# about 9 % of the frame's pixels: make_fake's default tenth-radius ball was ~3 % of them,
# too little of the video loss for the demo model to draw it at all), crossing the frame at a
# random lane so that its place must be read from the frame, not learnt as "the centre".
EGO4D_DEMO_BALL_RADIUS = 1 / 6
# Many short videos (one 3-s action each): every held-out video has a ball run (colour,
# direction, lane) that no training video has.
EGO4D_DEMO_VIDEOS, EGO4D_DEMO_SECONDS = 192, 3.0


def _fresh_tmp(path: str) -> str:
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  return tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)


def ensure_ego4d_demo(path: str, background_cell: int = EGO4D_DEMO_BACKGROUND_CELL) -> str:
  if os.path.isdir(path):
    return path
  from data_pipelines.ego4d import make_fake, prepare
  log.info("generating the Ego4D-layout demo corpus into %s (once)", path)
  tmp = _fresh_tmp(path)
  try:
    raw = os.path.join(tmp, "raw")
    corpus = make_fake.make_fake(raw, num_videos=EGO4D_DEMO_VIDEOS, seconds=EGO4D_DEMO_SECONDS, size=96,
                                 broken=False, missing=False, mixed_aspect=False, frame_code=False,
                                 background_cell=background_cell, ball_radius=EGO4D_DEMO_BALL_RADIUS,
                                 random_lane=True, fixed_scene=True)
    prepare.prepare_shard({"manifest": corpus["manifest"]}, tmp, shard_index=0, num_shards=1,
                          opts=prepare.PrepareOptions(size=EGO4D_DEMO_SIZE, val_fraction=0.25),
                          progress=False)
    shutil.rmtree(raw)
    os.replace(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return path


# 16 recordings of 300 frames (about 100 MB, 40 s to write): with the 4 of 1200 frames the
# stage-2 demo model learnt its training trajectories' views but not the held-out ones'.
CALVIN_DEMO_FRAMES, CALVIN_DEMO_VAL_FRAMES = 4800, 600


def ensure_calvin_demo(path: str) -> str:
  if os.path.isdir(path):
    return path
  from data_pipelines.calvin import make_fake
  log.info("generating the CALVIN-layout demo data into %s (once)", path)
  make_fake.make_fake_dataset(path, frames=CALVIN_DEMO_FRAMES, val_frames=CALVIN_DEMO_VAL_FRAMES)
  return path


def ensure(data_config) -> None:
  """Creates the demo data named by config.data if it asks for it and it is missing.

  A stage-1 data.mixture names the user's own corpora, so nothing is generated for it."""
  if not data_config.get("generate_demo_data") or data_config.get("mixture"):
    return
  name, path = data_config["name"], data_config["path"]
  if name == "ego4d":
    ensure_ego4d_demo(path)
  elif name in ("calvin_raw", "calvin"):
    if name == "calvin":
      raise ValueError("config.data.generate_demo_data makes raw CALVIN data: use data.name='calvin_raw'")
    ensure_calvin_demo(path)
  else:
    raise ValueError(f"config.data.generate_demo_data=True but data.name={name!r} has no demo generator")


# experiments/pretrain_mae.py settings for the demo's encoder: about a minute on 2 CPU cores.
DEMO_MAE_STEPS, DEMO_MAE_BATCH = 500, 32


def ensure_mae(config) -> None:
  """Pre-trains the frozen MAE named by config.mae_from on the demo corpus if it asks for
  demo data and the directory is missing (a random frozen encoder passes too little of the
  scene for the small demo model to learn from in minutes)."""
  if not (config.get("mae_from") and config["data"].get("generate_demo_data")) or os.path.isdir(config["mae_from"]):
    return
  from experiments.pretrain_mae import pretrain_mae
  from gr1_jax.model_config import GR1Config
  log.info("pre-training the demo's frozen MAE encoder into %s (once)", config["mae_from"])
  data = config["data"].to_dict() if hasattr(config["data"], "to_dict") else dict(config["data"])
  model = config["model"].to_dict() if hasattr(config["model"], "to_dict") else dict(config["model"])
  pretrain_mae(data, GR1Config.from_dict(model), config["mae_from"], steps=DEMO_MAE_STEPS,
               batch_size=DEMO_MAE_BATCH, seed=config["seed"])


def is_ego4d_demo(data_config) -> bool:
  """The stage-1 demo's own generated corpus (not a user's mixture)."""
  return bool(data_config.get("generate_demo_data")) and not data_config.get("mixture") \
      and data_config["name"] == "ego4d"


def report_ball(config, workdir: str, summary: dict) -> dict:
  """After the stage-1 demo: where the model draws the ball (experiments/demo_ball.py) on the
  held-out windows, logged, added to summary.json as 'ball' and drawn into
  images/held_out_windows.png (rows: current frame, real t+n, predicted t+n)."""
  from experiments import demo_ball
  from gr1_jax import url_paths, visualization
  from gr1_jax.training import checkpointing
  report, grid = demo_ball.evaluate_workdir(workdir, config)
  log.info(demo_ball.report_line(report))
  visualization.save_png(url_paths.join(workdir, "images", "held_out_windows.png"), grid)
  summary = dict(summary, ball=report)
  checkpointing.write_json(url_paths.join(workdir, "summary.json"), summary)
  return summary
