"""The stage-1 demo's corpus shows a ball the video loss can see, and demo_ball finds it."""
import numpy as np

from data_pipelines.ego4d import make_fake
from experiments import demo_ball, demo_data

SIZE = 96   # the demo's source videos (demo_data.ensure_ego4d_demo)


def _demo_frames(seed: int, frames=range(0, 90, 3)):
  """Frames of one demo video as ensure_ego4d_demo renders them (the first action), in [0, 1]."""
  background, actions = make_fake.video_scene(SIZE, SIZE, demo_data.EGO4D_DEMO_SECONDS, seed,
                                              demo_data.EGO4D_DEMO_BACKGROUND_CELL, random_lane=True,
                                              fixed_scene=True)
  return np.stack([make_fake.render_frame(i, SIZE, SIZE, background, actions, frame_code=False,
                                          ball_radius=demo_data.EGO4D_DEMO_BALL_RADIUS, pan=False)
                   for i in frames]).astype(np.float32) / 255.0, actions[0]


def _off_ball(frames, action):
  colour = np.asarray(make_fake.COLORS[action["color"]], np.float32) / 255.0
  return demo_ball.colour_distance(frames, colour) > 0.05


def test_every_demo_video_shows_the_same_still_scene_and_only_the_ball_differs():
  # The fix for the undrawn ball: one scene for all videos (a new background per video left
  # the ball's place unreadable through the resampler).
  (a, act_a), (b, act_b) = _demo_frames(0, frames=[0, 89]), _demo_frames(5, frames=[0, 89])
  assert act_a["color"] != act_b["color"] or act_a["lane"] != act_b["lane"]
  still = _off_ball(a, act_a) & _off_ball(b, act_b)
  assert still.mean() > 0.6, still.mean()                 # most pixels show the scene in all four
  np.testing.assert_array_equal(a[0][still[0] & still[1]], a[1][still[0] & still[1]])   # no pan
  np.testing.assert_array_equal(a[0][still[0]], b[0][still[0]])                        # one scene
  assert np.ptp(a[0][still[0]]) > 0.2                     # a scene with a layout, not a flat colour


def test_the_demo_ball_is_a_large_share_of_the_frame_and_crosses_at_different_places():
  # The regression: a ball of ~3 % of the pixels never appeared in the demo's predictions.
  frames, action = _demo_frames(0)
  colour = np.asarray(make_fake.COLORS[action["color"]], np.float32) / 255.0
  share = (demo_ball.colour_distance(frames, colour) < 0.02).mean(axis=(1, 2))
  assert share.min() > 0.08, share.min()
  lanes = []
  for seed in range(12):
    frames, action = _demo_frames(seed, frames=[45])   # mid-action
    colour = np.asarray(make_fake.COLORS[action["color"]], np.float32) / 255.0
    centre, _ = demo_ball.ball_pixels(frames[0], colour)
    axis = 1 if action["direction"] in ("up", "down") else 0   # across the motion: x or y
    lanes.append(centre[axis])
  assert np.ptp(lanes) > SIZE / 4, lanes   # not always through the centre line


def _moving_ball_window(steps=10, size=64, colour=(40, 70, 230)):
  """Real frames (1, L, S, S, 3): a disc moving 2 px right per step over a grey background."""
  yy, xx = np.mgrid[:size, :size]
  frames = np.full((1, steps, size, size, 3), 0.45, np.float32)
  for t in range(steps):
    frames[0, t][(yy - 30) ** 2 + (xx - 12 - 2 * t) ** 2 <= 100] = np.float32(colour) / 255
  return frames


def test_ball_report_tells_a_drawn_ball_from_a_missing_one():
  real, n = _moving_ball_window(), 3
  valid = np.zeros((1, 10), bool)
  valid[0, :10 - n] = True
  future = np.concatenate([real[:, n:], real[:, -n:]], axis=1)   # predicted[:, t] = real[:, t + n]

  perfect = demo_ball.ball_report(real, future, valid, n)
  assert perfect["steps"] == 7 and perfect["found"] == 1.0
  assert perfect["predicted_px"] < 0.1
  assert abs(perfect["current_px"] - 2 * n) < 0.1            # the ball moved 2 px per step

  copied = demo_ball.ball_report(real, real, valid, n)        # copies the current frame
  assert abs(copied["predicted_px"] - copied["current_px"]) < 0.1

  grey = demo_ball.ball_report(real, np.full_like(real, 0.45), valid, n)
  assert grey["found"] == 0.0 and grey["predicted_px"] is None
  assert "in 0 % of the predicted frames" in demo_ball.report_line(grey)

  faint = 0.45 + 0.3 * (future - 0.45)                          # a washed-out ball at the true place
  faint_report = demo_ball.ball_report(real, faint, valid, n)
  assert faint_report["found"] == 0.0 and faint_report["predicted_px"] < 1.0
