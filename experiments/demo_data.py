"""Generates the demo's data with the pipelines' fake generators when it is not there yet.

  Ego4D layout:  make_fake videos + narrations -> prepare (64-px clips, a quarter of the
                 videos in the 'val' split), into <path>/raw and <path> itself.
  CALVIN layout: make_fake raw split (training/ + validation/) into <path>.
Both are written under a temporary name and renamed when complete, so an
interrupted generation is redone, never half-read.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile

log = logging.getLogger(__name__)

EGO4D_DEMO_SIZE = 64


def _fresh_tmp(path: str) -> str:
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  return tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)


def ensure_ego4d_demo(path: str) -> str:
  if os.path.isdir(path):
    return path
  from data_pipelines.ego4d import make_fake, prepare
  log.info("generating the Ego4D-layout demo corpus into %s (once)", path)
  tmp = _fresh_tmp(path)
  try:
    raw = os.path.join(tmp, "raw")
    # Many short videos rather than a few long ones: each has its own background, so the
    # held-out videos are scenes the model has not memorised.
    corpus = make_fake.make_fake(raw, num_videos=48, seconds=4.0, size=96, broken=False, missing=False,
                                 frame_code=False)
    prepare.prepare_shard({"manifest": corpus["manifest"]}, tmp, shard_index=0, num_shards=1,
                          opts=prepare.PrepareOptions(size=EGO4D_DEMO_SIZE, val_fraction=0.25),
                          progress=False)
    shutil.rmtree(raw)
    os.replace(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return path


def ensure_calvin_demo(path: str) -> str:
  if os.path.isdir(path):
    return path
  from data_pipelines.calvin import make_fake
  log.info("generating the CALVIN-layout demo data into %s (once)", path)
  make_fake.make_fake_dataset(path, frames=1200, val_frames=300)
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
