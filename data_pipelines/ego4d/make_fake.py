r"""Writes a small corpus in the Ego4D download layout, for tests and the demo config.

    python -m data_pipelines.ego4d.make_fake --out DIR [--num_videos 3 --seconds 12 --codec mpeg4]

Layout (as the Ego4D CLI writes it):
    DIR/v2/full_scale/<uid>.mp4            videos (one non-square video goes to v1/)
    DIR/v2/annotations/narration.json      real schema: uid -> narration_pass_1/2 ->
                                           {"narrations": [{timestamp_sec, timestamp_frame,
                                           narration_text, annotation_uid}], "summaries": [...]}
    DIR/manifest.jsonl                     the same pass-1 clips as a generic manifest
    DIR/fake_corpus.json                   what was written (uids, sizes, the broken/missing uids)

Content, learnable from language + past frames: a textured background that pans
slowly (camera motion) and, in each 3 s "action", a coloured disc that moves across
the picture in one direction (with fixed_scene, every video shows the same still
background, one scene like a robot's table, and only its ball differs).  The pass-1
narration at the middle of the action names both: "#C C moves the red ball to the
left"; pass 2 paraphrases it 0.2 s later.
Extra narrations exercise the edge cases: "#unsure" (dropped), an empty text
(dropped), "#O man X looks at C", one 0.3 s after the start and one 0.2 s before the end
(clamped, shorter clips).  One uid has a narration entry but no mp4 (missing), one
mp4 holds random bytes (broken; must be reported).

Every frame carries its index as a 12-bit code in a strip at the top centre
(`read_frame_code` reads it back from a resized 224 crop), so tests can check which
source frame a stored clip frame is without trusting any decoder (--no_frame_code
leaves it out of training data: see make_fake).
"""
from __future__ import annotations

import argparse
import json
import os

import av
import numpy as np

FPS = 30
ACTION_SECONDS = 3.0
CODE_BITS = 12
CODE_CELL = 16     # source pixels per bit (square cells), less on narrow frames
COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 70, 230), "yellow": (235, 215, 40)}
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
PARAPHRASE = {"left": "leftwards", "right": "rightwards", "up": "upwards", "down": "downwards"}
FIXED_SCENE_SEED = 2024   # the background of every video with fixed_scene


def _background(width: int, height: int, rng: np.random.Generator, cell: int = 32) -> np.ndarray:
  """A smooth random texture 2x the frame size (panned over time): random colours every
  `cell` source pixels, bilinearly interpolated."""
  h2, w2 = 2 * height, 2 * width
  small = rng.integers(40, 200, size=(h2 // cell + 2, w2 // cell + 2, 3)).astype(np.float32)
  ys = np.linspace(0, small.shape[0] - 1.001, h2)
  xs = np.linspace(0, small.shape[1] - 1.001, w2)
  y0, x0 = ys.astype(int), xs.astype(int)
  fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
  a = small[y0][:, x0]
  b = small[y0][:, x0 + 1]
  c = small[y0 + 1][:, x0]
  d = small[y0 + 1][:, x0 + 1]
  return ((a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy).astype(np.uint8)


def actions_for(duration: float, rng: np.random.Generator, random_lane: bool = False) -> list[dict]:
  """One action per ACTION_SECONDS: a colour, a direction and, with random_lane, a "lane" in
  [0, 1]: where across its direction the ball crosses the frame (else through the centre)."""
  out = []
  colors, directions = list(COLORS), list(DIRECTIONS)
  for k in range(int(duration // ACTION_SECONDS)):
    out.append({"start": k * ACTION_SECONDS, "end": (k + 1) * ACTION_SECONDS,
                "color": colors[int(rng.integers(len(colors)))],
                "direction": directions[int(rng.integers(len(directions)))]})
    if random_lane:
      out[-1]["lane"] = float(rng.uniform(0.0, 1.0))
  return out


def code_cell(width: int, height: int) -> int:
  """Side of a code cell: 16 px, smaller so the code fits in the central square."""
  return max(4, min(CODE_CELL, min(width, height) // (CODE_BITS + 2)))


def code_cells(width: int, height: int) -> list[tuple[int, int, int, int]]:
  """(y0, y1, x0, x1) of each bit cell, MSB first, centred at the top of the frame."""
  cell = code_cell(width, height)
  x_start = (width - CODE_BITS * cell) // 2
  return [(0, cell, x_start + b * cell, x_start + (b + 1) * cell) for b in range(CODE_BITS)]


def ball_radius_px(width: int, height: int, ball_radius: float | None = None) -> int:
  """The ball's radius in source pixels: a tenth of the short side (at least 6) by default,
  else `ball_radius` times the short side."""
  if ball_radius is None:
    return max(6, min(width, height) // 10)
  return max(2, int(round(ball_radius * min(width, height))))


def render_frame(index: int, width: int, height: int, background: np.ndarray,
                 actions: list[dict], frame_code: bool = True, ball_radius: float | None = None,
                 pan: bool = True) -> np.ndarray:
  """Frame `index`; pan=False holds the camera still at its first frame's view."""
  t = index / FPS
  view_t = t if pan else 0.0
  pan_x = int((width / 2) * (1 + np.sin(2 * np.pi * view_t / 17.0)))
  pan_y = int((height / 2) * (1 + np.sin(2 * np.pi * view_t / 23.0)))
  frame = background[pan_y:pan_y + height, pan_x:pan_x + width].copy()
  for act in actions:
    if act["start"] <= t < act["end"]:
      u = (t - act["start"]) / (act["end"] - act["start"])          # 0 -> 1 over the action
      dx, dy = DIRECTIONS[act["direction"]]
      radius = ball_radius_px(width, height, ball_radius)
      cx = width / 2 + dx * (u - 0.5) * (width - 3 * radius)
      cy = height / 2 + 12 + dy * (u - 0.5) * (height - 3 * radius - 24)
      if "lane" in act:   # crosses off-centre: the lane picks the position across the motion
        across = act["lane"] - 0.5
        cx = cx if dx else width / 2 + across * (width - 3 * radius)
        cy = cy if dy else height / 2 + 12 + across * (height - 3 * radius - 24)
      yy, xx = np.ogrid[:height, :width]
      mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
      frame[mask] = COLORS[act["color"]]
  if not frame_code:
    return frame
  frame[:code_cell(width, height), :] = 128
  for bit, (y0, y1, x0, x1) in enumerate(code_cells(width, height)):
    on = (index >> (CODE_BITS - 1 - bit)) & 1
    frame[y0:y1, x0:x1] = 255 if on else 0
  return frame


def read_frame_code(image: np.ndarray, src_width: int, src_height: int) -> int:
  """Reads the frame index back from an RGB image that is the short-side resize +
  center crop (any output size) of a rendered frame."""
  size = image.shape[0]
  scale = size / min(src_width, src_height)
  rw, rh = max(size, round(src_width * scale)), max(size, round(src_height * scale))
  crop_x, crop_y = (rw - size) // 2, (rh - size) // 2
  value = 0
  for (y0, y1, x0, x1) in code_cells(src_width, src_height):
    cy = int(((y0 + y1) / 2) * scale) - crop_y
    cx = int(((x0 + x1) / 2) * scale) - crop_x
    r = max(1, int(code_cell(src_width, src_height) * scale / 4))
    patch = image[max(cy - r, 0):cy + r, max(cx - r, 0):cx + r].astype(np.float32)
    value = (value << 1) | int(patch.mean() > 128)
  return value


def video_scene(width: int, height: int, seconds: float, seed: int, background_cell: int = 32,
                random_lane: bool = False, fixed_scene: bool = False) -> tuple[np.ndarray, list[dict]]:
  """(background texture, actions) of the video that write_video(seed=seed) renders; with
  render_frame (pan=not fixed_scene), its frames without an mp4 in between."""
  rng = np.random.default_rng(seed)
  background = _background(width, height, rng, background_cell)   # drawn either way: same actions
  if fixed_scene:
    background = _background(width, height, np.random.default_rng(FIXED_SCENE_SEED), background_cell)
  return background, actions_for(seconds, rng, random_lane)


def write_video(path: str, *, width: int, height: int, seconds: float, codec: str = "mpeg4",
                seed: int = 0, gop: int = FPS, frame_code: bool = True, background_cell: int = 32,
                ball_radius: float | None = None, random_lane: bool = False,
                fixed_scene: bool = False) -> list[dict]:
  """Writes an mp4 (tmp + rename) and returns its actions."""
  background, actions = video_scene(width, height, seconds, seed, background_cell, random_lane, fixed_scene)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}.mp4"
  with av.open(tmp, "w") as container:
    stream = container.add_stream(codec, rate=FPS)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.codec_context.gop_size = gop
    if codec == "libx264":
      stream.options = {"preset": "veryfast", "crf": "20"}
    else:
      stream.bit_rate = 4_000_000
    for i in range(int(round(seconds * FPS))):
      frame = av.VideoFrame.from_ndarray(render_frame(i, width, height, background, actions, frame_code,
                                                    ball_radius, pan=not fixed_scene),
                                       format="rgb24")
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  os.replace(tmp, path)
  return actions


def _narration(uid: str, k: int, ts: float, text: str) -> dict:
  return {"timestamp_sec": round(ts, 4), "timestamp_frame": int(round(ts * FPS)), "narration_text": text,
          "annotation_uid": f"{uid}-n{k}"}


def make_fake(out: str, *, num_videos: int = 3, seconds: float = 12.0, size: int = 256,
              codec: str = "mpeg4", seed: int = 0, broken: bool = True, missing: bool = True,
              mixed_aspect: bool = True, gop: int = FPS, frame_code: bool = True,
              background_cell: int = 32, ball_radius: float | None = None,
              random_lane: bool = False, fixed_scene: bool = False) -> dict:
  """Writes the corpus; returns the description also saved as fake_corpus.json.

  frame_code=False leaves out the frame-index strip: training data for the demo, where
  that strip (a new random-looking bit pattern every frame) is the one thing no model can
  predict, and its squared error swamps the learnable signal. background_cell: source pixels
  between the background's random colours (larger = smoother scenes). ball_radius: the ball's
  radius as a fraction of the short side (default: a tenth); random_lane: each ball crosses
  the frame at a random distance from the centre line; fixed_scene: every video shows the
  same still background (FIXED_SCENE_SEED, no camera pan), so only the balls differ.
  """
  narrations: dict[str, dict] = {}
  videos = []
  manifest = []
  for v in range(num_videos):
    uid = f"fake{v:04d}-{seed:04d}-0000-0000-000000000000"
    # Every third video is non-square (5:4) and stored under v1/ to test both.
    odd = mixed_aspect and v % 3 == 1
    width, height = ((size * 5) // 4, size) if odd else (size, size)
    width -= width % 2
    version = "v1" if odd else "v2"
    path = os.path.join(out, version, "full_scale", f"{uid}.mp4")
    actions = write_video(path, width=width, height=height, seconds=seconds, codec=codec, seed=seed * 1000 + v,
                          gop=gop, frame_code=frame_code, background_cell=background_cell,
                          ball_radius=ball_radius, random_lane=random_lane, fixed_scene=fixed_scene)
    pass1, pass2 = [], []
    for k, act in enumerate(actions):
      mid = (act["start"] + act["end"]) / 2
      pass1.append(_narration(uid, k, mid, f"#C C moves the {act['color']} ball to the {act['direction']}"))
      pass2.append(_narration(uid, 100 + k, mid + 0.2,
                              f"#C C  pushes the {act['color']} ball {PARAPHRASE[act['direction']]}."))
      manifest.append({"video": os.path.relpath(path, out), "start": act["start"], "end": act["end"],
                       "text": f"move the {act['color']} ball to the {act['direction']}",
                       "clip_uid": f"{uid}-m{k}", "video_uid": uid})
    pass1.append(_narration(uid, 200, 0.3, "#C C looks at the table"))
    pass1.append(_narration(uid, 201, seconds - 0.2, "#O man X looks at C"))
    pass2.append(_narration(uid, 202, 1.0, "#C C picks #unsure from the floor"))
    pass2.append(_narration(uid, 203, 2.0, "   "))
    narrations[uid] = {
        "status": "complete",
        "narration_pass_1": {"narrations": pass1, "summaries": [
            {"summary_text": "#Summary C plays with balls.", "start_sec": 0.0, "end_sec": seconds}]},
        "narration_pass_2": {"narrations": pass2, "summaries": []},
    }
    videos.append({"video_uid": uid, "path": path, "width": width, "height": height, "seconds": seconds,
                   "fps": FPS, "codec": codec, "actions": actions})
  broken_uid = missing_uid = None
  if broken:
    broken_uid = f"broken00-{seed:04d}-0000-0000-000000000000"
    path = os.path.join(out, "v2", "full_scale", f"{broken_uid}.mp4")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    narrations[broken_uid] = {"narration_pass_1": {"narrations": [
        _narration(broken_uid, 0, 1.5, "#C C opens a broken door")], "summaries": []}}
  if missing:
    missing_uid = f"missing0-{seed:04d}-0000-0000-000000000000"
    narrations[missing_uid] = {"narration_pass_1": {"narrations": [
        _narration(missing_uid, 0, 1.5, "#C C walks away")], "summaries": []}}
  ann = os.path.join(out, "v2", "annotations", "narration.json")
  os.makedirs(os.path.dirname(ann), exist_ok=True)
  with open(ann, "w", encoding="utf-8") as f:
    json.dump(narrations, f, indent=1)
  with open(os.path.join(out, "manifest.jsonl"), "w", encoding="utf-8") as f:
    for row in manifest:
      f.write(json.dumps(row) + "\n")
  desc = {"videos": videos, "broken_uid": broken_uid, "missing_uid": missing_uid, "narration_json": ann,
          "manifest": os.path.join(out, "manifest.jsonl")}
  with open(os.path.join(out, "fake_corpus.json"), "w", encoding="utf-8") as f:
    json.dump(desc, f, indent=1)
  return desc


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True)
  parser.add_argument("--num_videos", type=int, default=3)
  parser.add_argument("--seconds", type=float, default=12.0)
  parser.add_argument("--size", type=int, default=256, help="short side of the videos (pixels)")
  parser.add_argument("--codec", default="mpeg4", help="mpeg4 (fast) or libx264")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no_broken", action="store_true")
  parser.add_argument("--no_frame_code", action="store_true",
                      help="leave out the frame-index strip (training data rather than test data)")
  args = parser.parse_args(argv)
  desc = make_fake(args.out, num_videos=args.num_videos, seconds=args.seconds, size=args.size,
                   codec=args.codec, seed=args.seed, broken=not args.no_broken,
                   frame_code=not args.no_frame_code)
  print(f"wrote {len(desc['videos'])} videos (+ broken {desc['broken_uid']}, missing {desc['missing_uid']}) "
        f"and {desc['narration_json']} under {args.out}")


if __name__ == "__main__":
  main()
