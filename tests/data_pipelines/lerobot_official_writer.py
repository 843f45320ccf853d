"""Writes the make_fake content with LeRobot's OWN writer (lerobot.datasets.LeRobotDataset).

Run with a Python that has `lerobot` (tests/data_pipelines/test_lerobot_pipeline.py runs it
with $GR1_LEROBOT_PYTHON, default /work/lerobot_venv/bin/python), never this project's env:

    python tests/data_pipelines/lerobot_official_writer.py --out DIR [--lengths 12,20,9]

How that venv is made (LeRobot pins torch<2.11, this project allows only torch 2.13.0):
    python3.11 -m venv VENV && VENV/bin/pip install lerobot-dataset==0.4.4   # lerobot's deps, no torch
    VENV/bin/pip install torch==2.13.0                                       # the local CPU wheel
    VENV/bin/pip install --no-deps lerobot==0.4.4
torchvision is not installed: no release loads beside torch 2.13.0 here, and LeRobot's
writing path never calls it (it is imported at module level for decoding and image
transforms only), so an empty stand-in module is registered before the import below.
"""
import argparse
import os
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repo root: make_fake's content
os.environ.setdefault("SVT_LOG", "1")

if "torchvision" not in sys.modules:
  import importlib.machinery
  stub = types.ModuleType("torchvision")
  stub.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)   # `datasets` asks find_spec
  stub.transforms = types.ModuleType("torchvision.transforms")
  stub.io = types.ModuleType("torchvision.io")
  sys.modules.update({"torchvision": stub, "torchvision.transforms": stub.transforms, "torchvision.io": stub.io})

from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

from data_pipelines.lerobot import make_fake as mf  # noqa: E402


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", required=True)
  parser.add_argument("--lengths", default="12,20,9")
  parser.add_argument("--size", type=int, default=64)
  args = parser.parse_args()
  lengths = [int(x) for x in args.lengths.split(",")]
  size = args.size
  features = {cam: {"dtype": "video", "shape": (size, size, 3), "names": ["height", "width", "channels"]}
              for cam in mf.CAMERAS}
  features["observation.state"] = {"dtype": "float32", "shape": (mf.STATE_DIM,), "names": None}
  features["action"] = {"dtype": "float32", "shape": (mf.ACTION_DIM,), "names": None}
  ds = LeRobotDataset.create(repo_id="gr1/fake", fps=mf.FPS, features=features, root=args.out,
                             robot_type="fake", use_videos=True)
  i = 0
  for episode, length in enumerate(lengths):
    for _ in range(length):
      frame = {cam: mf.image_of(i, c, size) for c, cam in enumerate(mf.CAMERAS)}
      frame.update({"observation.state": mf.state_of(i), "action": mf.action_of(i),
                    "task": mf.TASKS[episode % len(mf.TASKS)]})
      ds.add_frame(frame)
      i += 1
    ds.save_episode()
  ds.finalize()
  print(ds.root)


if __name__ == "__main__":
  main()
