"""Writes a small dataset in the exact raw CALVIN format, for tests and the demo.

    python -m data_pipelines.calvin.make_fake --out /tmp/calvin_fake --frames 1200 \
        [--val_frames 300] [--episode_len 300] [--segment_len 32] [--seed 0] [--uncompressed]

Layout (identical to a real split such as task_D_D):

    OUT/training/episode_0000000.npz ...   one file per frame, all real keys
    OUT/training/ep_start_end_ids.npy      (N, 2) int64, inclusive recordings
    OUT/training/scene_info.npy            {'calvin_scene_D': [first, last]}
    OUT/training/statistics.yaml           robot_obs / scene_obs mean+std, act bounds
    OUT/training/lang_annotations/auto_lang_ann.npy
        {'language': {'ann': [str], 'task': [str], 'emb': float32 (N, 1, 384)},
         'info': {'episodes': [], 'indx': [(start, end), ...]}}   (inclusive ids)
    OUT/validation/...                     same, frame ids continue after training;
                                           lang_annotations/embeddings.npy too.

Every npz holds rgb_static (200,200,3) u8, rgb_gripper (84,84,3) u8, rgb_tactile
(160,120,6) u8, depth_static (200,200) f32, depth_gripper (84,84) f32,
depth_tactile (160,120,2) f32, actions / rel_actions (7,) f32, robot_obs (15,)
f32, scene_obs (24,) f32; saved with np.savez_compressed like the real files.

The data is structured so a model can learn from it: each annotated segment has
one of six tasks whose instruction names a direction, and the tool centre point
(robot_obs[0:3]) moves that way; rel_actions are the clipped, scaled state
differences (x50 position, x20 orientation) exactly as in CALVIN; the gripper
closes during "lift" tasks; between annotated windows it wanders back towards the
middle of the workspace.  The static camera renders one smooth scene (the table,
whose colour drifts from left to right, the wall, and in muted colours the
sliding door and the drawer; the light, the LED and three blocks) and the gripper
as a large saturated disc at the tcp x/y (larger when higher, yellow when open,
red when closed), so that after resizing to a small model's 64 px the gripper is
what moves; the wrist camera looks down at the scene under the tcp (a zoomed
window of the static view without the gripper, wider when higher) and shows the
two fingers at the gripper opening.
Annotated windows may overlap and leave gaps, as in the real data.
Everything is a deterministic function of --seed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from data_pipelines import atomic_dir

# (task id, instruction, tcp direction, gripper closes?)
TASKS = (
    ("move_slider_left", "push the sliding door to the left side", (-1.0, 0.0, 0.0), False),
    ("move_slider_right", "push the sliding door to the right side", (1.0, 0.0, 0.0), False),
    ("open_drawer", "pull the handle to open the drawer", (0.0, -1.0, 0.0), False),
    ("close_drawer", "push the drawer closed", (0.0, 1.0, 0.0), False),
    ("lift_red_block_table", "pick up the red block from the table", (0.0, 0.0, 1.0), True),
    ("push_into_drawer", "press the gripper down towards the table", (0.0, 0.0, -1.0), False),
)
_LOW = np.array([-0.25, -0.25, 0.40])
_HIGH = np.array([0.25, 0.25, 0.70])
_SPEED = 0.008  # m / frame along the task direction -> rel action 0.4


def _annotation_windows(rec_start: int, rec_end: int, seg_len: int,
                        rng: np.random.Generator) -> list[tuple[int, int]]:
  """Inclusive windows of seg_len frames inside one recording, overlapping or with gaps."""
  windows = []
  pos = rec_start + int(rng.integers(0, seg_len // 2 + 1))
  while pos + seg_len - 1 <= rec_end:
    windows.append((pos, pos + seg_len - 1))
    pos += seg_len + int(rng.integers(-(seg_len // 4), seg_len // 2 + 1))
  return windows


def _simulate(num_frames: int, windows: list[tuple[int, int, int]], rng: np.random.Generator):
  """Robot and scene states for frames 0..num_frames (one extra for the last action)."""
  n = num_frames + 1
  task_of = np.full(n, -1)
  for start, end, task in windows:  # later windows win where they overlap
    task_of[start:end + 1] = task
  tcp = np.zeros((n, 3))
  euler = np.zeros((n, 3))
  grip_act = np.ones(n)  # action chosen at frame t (+1 open, -1 close)
  width = np.zeros(n)
  scene = np.zeros((n, 24))
  tcp[0] = rng.uniform(_LOW, _HIGH)
  width[0] = 0.08
  scene[0, 0] = 0.1
  scene[0, 6:9] = [0.05, -0.05, 0.46]
  scene[0, 12:15] = [-0.15, 0.1, 0.46]
  scene[0, 18:21] = [0.15, 0.12, 0.46]
  drift = rng.normal(0, 1, 3)
  holding = False
  for t in range(n):
    task = task_of[t]
    if task >= 0:
      direction = np.array(TASKS[task][2])
      closes = TASKS[task][3]
      segment_pos = t - max(s for s, e, k in windows if s <= t <= e)
      grip_act[t] = -1.0 if closes and segment_pos >= 4 else 1.0
    else:
      # wander, drawn back towards the middle of the workspace so that tasks rarely start
      # pinned against its bounds (where their motion would be clipped away)
      drift = 0.9 * drift + 0.3 * rng.normal(0, 1, 3) + 0.1 * ((_LOW + _HIGH) / 2 - tcp[t]) / (_HIGH - _LOW) * 8
      direction = drift / (np.linalg.norm(drift) + 1e-6) * 0.5
      grip_act[t] = 1.0
    if t + 1 == n:
      break
    step = _SPEED * direction + rng.normal(0, 0.0008, 3)
    tcp[t + 1] = np.clip(tcp[t] + step, _LOW, _HIGH)
    euler[t + 1] = [3.1 + 0.02 * np.sin(t / 9), 0.015 * np.cos(t / 7), 1.55 + 0.3 * np.sin(t / 40)]
    width[t + 1] = width[t] + 0.4 * ((0.08 if grip_act[t] > 0 else 0.0) - width[t])
    scene[t + 1] = scene[t]
    if task in (0, 1):
      scene[t + 1, 0] = np.clip(scene[t, 0] + step[0], -0.05, 0.3)
    if task in (2, 3):
      scene[t + 1, 1] = np.clip(scene[t, 1] - step[1], 0.0, 0.22)
    holding = grip_act[t] < 0 and np.linalg.norm(tcp[t, :2] - scene[t, 6:8]) < 0.3
    if holding:
      scene[t + 1, 6:9] = tcp[t + 1] - [0, 0, 0.02]
    scene[t + 1, 4] = float(scene[t + 1, 1] > 0.15)  # light on while the drawer is open
    scene[t + 1, 5] = float(scene[t + 1, 0] > 0.2)
  euler[0] = [3.1, 0.0, 1.55]
  joints = np.stack([np.sin(tcp[:, 0] * 3 + k) + tcp[:, 1] * k / 7 + tcp[:, 2] for k in range(7)], -1)
  prev_grip = np.concatenate([[1.0], grip_act[:-1]])
  robot_obs = np.concatenate([tcp, euler, width[:, None], joints, prev_grip[:, None]], -1)
  actions = np.concatenate([tcp[1:], euler[1:], grip_act[:-1, None]], -1)
  d_euler = (euler[1:] - euler[:-1] + np.pi) % (2 * np.pi) - np.pi
  rel = np.concatenate([np.clip((tcp[1:] - tcp[:-1]) * 50, -1, 1), np.clip(d_euler * 20, -1, 1),
                        grip_act[:-1, None]], -1)
  f32 = lambda x: x.astype(np.float32)
  return f32(robot_obs[:-1]), f32(scene[:-1]), f32(actions), f32(rel)


class _Renderer:
  """Draws the two RGB cameras (and depth) from robot_obs / scene_obs (see the module
  docstring); every split draws the same scene, as one CALVIN scene is shared."""

  def __init__(self):
    self.yy, self.xx = np.mgrid[0:200, 0:200].astype(np.float32)
    base = np.empty((200, 200, 3), np.float32)
    base[:] = [150, 118, 84]  # table
    base += (self.yy[..., None] / 200.0) * np.array([20, 16, 10], np.float32)
    # a smooth colour drift across the table: where the wrist camera looks shows in its colour
    base += (self.xx[..., None] / 200.0 - 0.5) * np.array([50, -10, -40], np.float32)
    base[:40] = [196, 198, 206]  # wall
    self.base = base
    gy, gx = np.mgrid[0:84, 0:84].astype(np.float32)
    self.gy, self.gx = gy, gx

  @staticmethod
  def _to_px(x, y):
    return 100 + x * 300, 115 + y * 260

  def scene(self, scene_obs):
    """The static camera's image without the robot (float32, for static() and gripper())."""
    img = self.base.copy()
    slider_x = 50 + scene_obs[0] * 300
    img[8:38, int(slider_x):int(slider_x) + 50] = [165, 158, 156]  # muted: the gripper is what moves most
    drawer_h = 8 + scene_obs[1] * 100
    img[int(196 - drawer_h):196, 70:130] = [128, 98, 70]
    light = [250, 230, 90] if scene_obs[4] > 0.5 else [90, 90, 90]
    img[(self.xx - 182) ** 2 + (self.yy - 20) ** 2 < 64] = light
    img[(self.xx - 165) ** 2 + (self.yy - 20) ** 2 < 25] = [60, 220, 60] if scene_obs[5] > 0.5 else [40, 70, 40]
    for offset, colour in ((6, [210, 40, 40]), (12, [40, 70, 210]), (18, [230, 120, 190])):
      px, py = self._to_px(scene_obs[offset], scene_obs[offset + 1])
      size = 9 + (scene_obs[offset + 2] - 0.46) * 40
      img[(np.abs(self.xx - px) < size) & (np.abs(self.yy - py) < size)] = colour
    return img

  def static(self, robot_obs, scene):
    img = scene.copy()
    px, py = self._to_px(robot_obs[0], robot_obs[1])
    radius = 24 + (robot_obs[2] - 0.4) * 50   # seen from above: larger when higher
    d2 = (self.xx - px) ** 2 + (self.yy - py) ** 2
    img[d2 < radius ** 2] = [235, 215, 40] if robot_obs[14] > 0 else [220, 40, 40]  # open / closed
    img[d2 < (radius * 0.3) ** 2] = [70, 70, 75]
    depth = 1.2 + self.yy / 400.0
    depth[d2 < radius ** 2] = 1.5 - robot_obs[2]
    return np.clip(img, 0, 255).astype(np.uint8), depth.astype(np.float32)

  def gripper(self, robot_obs, scene):
    px, py = self._to_px(robot_obs[0], robot_obs[1])
    half = 30 + (robot_obs[2] - 0.4) * 80  # half the view, in static-camera pixels: wider when higher
    rows = np.clip(np.round(py + (self.gy - 42) / 42 * half), 0, 199).astype(np.int64)
    cols = np.clip(np.round(px + (self.gx - 42) / 42 * half), 0, 199).astype(np.int64)
    img = scene[rows, cols]
    inset = int(round(4 + (0.08 - robot_obs[6]) / 0.08 * 22))
    img[60:84, inset:inset + 8] = [70, 70, 75]
    img[60:84, 84 - inset - 8:84 - inset] = [70, 70, 75]
    depth = np.full((84, 84), robot_obs[2] - 0.35, np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), depth


def make_fake_split(folder: str | os.PathLike, first_frame: int, num_frames: int, *,
                    episode_len: int = 300, segment_len: int = 32, seed: int = 0,
                    compress: bool = True, validation: bool = False) -> dict:
  """Writes one CALVIN split folder; returns {'frames', 'segments', 'recordings'}."""
  if num_frames < segment_len:
    raise ValueError(f"num_frames={num_frames} < segment_len={segment_len}")
  folder = Path(folder)
  (folder / "lang_annotations").mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  recordings, windows = [], []
  for rec_start in range(0, num_frames, episode_len):
    rec_end = min(rec_start + episode_len, num_frames) - 1
    recordings.append((rec_start, rec_end))
    for s, e in _annotation_windows(rec_start, rec_end, segment_len, rng):
      windows.append((s, e, int(rng.integers(len(TASKS)))))
  if not windows:
    raise ValueError(f"no annotation window fits: episode_len={episode_len}, segment_len={segment_len}")
  robot_obs, scene_obs, actions, rel_actions = _simulate(num_frames, windows, rng)
  renderer = _Renderer()
  save = np.savez_compressed if compress else np.savez
  tactile_rgb = np.zeros((160, 120, 6), np.uint8)
  tactile_depth = np.zeros((160, 120, 2), np.float32)
  for t in range(num_frames):
    scene = renderer.scene(scene_obs[t])
    rgb_static, depth_static = renderer.static(robot_obs[t], scene)
    rgb_gripper, depth_gripper = renderer.gripper(robot_obs[t], scene)
    tactile_rgb[:] = 0 if robot_obs[t, 14] > 0 else 90
    save(folder / f"episode_{first_frame + t:07d}.npz", rgb_static=rgb_static,
         rgb_gripper=rgb_gripper, rgb_tactile=tactile_rgb, depth_static=depth_static,
         depth_gripper=depth_gripper, depth_tactile=tactile_depth, actions=actions[t],
         rel_actions=rel_actions[t], robot_obs=robot_obs[t], scene_obs=scene_obs[t])
  np.save(folder / "ep_start_end_ids.npy",
          np.array([(s + first_frame, e + first_frame) for s, e in recordings], np.int64))
  task_emb = {k: v for k, v in zip(
      (t[0] for t in TASKS), np.random.default_rng(1234).normal(0, 1, (len(TASKS), 384)).astype(np.float32))}
  task_emb = {k: v / np.linalg.norm(v) for k, v in task_emb.items()}
  ann = {
      "language": {
          "ann": [TASKS[k][1] for _, _, k in windows],
          "task": [TASKS[k][0] for _, _, k in windows],
          "emb": np.stack([task_emb[TASKS[k][0]][None] for _, _, k in windows]),
      },
      "info": {"episodes": [], "indx": [(s + first_frame, e + first_frame) for s, e, _ in windows]},
  }
  np.save(folder / "lang_annotations" / "auto_lang_ann.npy", ann, allow_pickle=True)
  if validation:
    np.save(folder / "lang_annotations" / "embeddings.npy",
            {name: {"emb": task_emb[name][None], "ann": [instr]} for name, instr, _, _ in TASKS},
            allow_pickle=True)
  else:
    np.save(folder / "scene_info.npy",
            {"calvin_scene_D": [first_frame, first_frame + num_frames - 1]}, allow_pickle=True)
  write_statistics(folder / "statistics.yaml", robot_obs, scene_obs, actions)
  return {"frames": num_frames, "segments": len(windows), "recordings": len(recordings)}


def write_statistics(path: Path, robot_obs, scene_obs, actions) -> None:
  """statistics.yaml as in a real CALVIN split: obs mean/std, bounds of the absolute actions."""
  fmt = lambda v: "[" + ", ".join(f"{x:.6f}" for x in v) + "]"
  lines = []
  for name, arr in (("robot_obs", robot_obs), ("scene_obs", scene_obs)):
    lines += [f"{name}:", "  - _target_: calvin_agent.utils.transforms.NormalizeVector",
              f"    mean: {fmt(arr.mean(0))}", f"    std: {fmt(arr.std(0) + 1e-6)}"]
  lines += ["", f"act_min_bound: {fmt(actions.min(0))}", f"act_max_bound: {fmt(actions.max(0))}", ""]
  path.write_text("\n".join(lines))


def make_fake_dataset(out: str | os.PathLike, *, frames: int = 1200, val_frames: int | None = None,
                      episode_len: int = 300, segment_len: int = 32, seed: int = 0,
                      compress: bool = True, overwrite: bool = False) -> dict:
  """Writes OUT/training and OUT/validation (via a temp dir renamed at the end)."""
  out = Path(out)
  val_frames = max(frames // 4, segment_len) if val_frames is None else val_frames
  if out.exists():
    if not overwrite:
      raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
  with atomic_dir.building(out) as tmp:
    summary = {
        "training": make_fake_split(tmp / "training", 0, frames, episode_len=episode_len,
                                    segment_len=segment_len, seed=seed, compress=compress),
        "validation": make_fake_split(tmp / "validation", frames, val_frames,
                                      episode_len=episode_len, segment_len=segment_len,
                                      seed=seed + 1, compress=compress, validation=True),
    }
  return summary


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="output directory (gets training/ and validation/)")
  parser.add_argument("--frames", type=int, default=1200, help="frames in training/")
  parser.add_argument("--val_frames", type=int, default=None, help="frames in validation/ (default frames/4)")
  parser.add_argument("--episode_len", type=int, default=300, help="frames per recording")
  parser.add_argument("--segment_len", type=int, default=32, help="frames per annotated window (real: 65)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--uncompressed", action="store_true", help="np.savez instead of savez_compressed")
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args(argv)
  summary = make_fake_dataset(args.out, frames=args.frames, val_frames=args.val_frames,
                              episode_len=args.episode_len, segment_len=args.segment_len,
                              seed=args.seed, compress=not args.uncompressed, overwrite=args.overwrite)
  for split, info in summary.items():
    print(f"{args.out}/{split}: {info['frames']} frames, {info['recordings']} recordings, "
          f"{info['segments']} annotated segments")


if __name__ == "__main__":
  main(sys.argv[1:])
