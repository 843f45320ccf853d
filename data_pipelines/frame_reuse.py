"""Frame reuse in training: batches of contiguous segments instead of independent windows (numpy, no JAX).

Why. A GR-1 window is seq_len (10) consecutive frames, and a window may start at any
frame, so each frame sits in up to 10 windows. The per-window path encodes every frame
of every window: at the official size most of a training step's FLOPs (about four fifths) are the
frozen MAE ViT-B/16 on 10 frames x 2 cameras per window, each frame encoded up to 10
times. With frame reuse (config.data.frame_reuse = W > 0) a batch element is a SEGMENT:

    S = seq_len + W - 1 consecutive frames, right-padded exactly like a window of S steps
    window w of the segment (w = 0 .. W-1) = its steps w .. w + seq_len - 1

The per-frame encoder (frozen MAE, then the trainable Perceiver Resampler and the
token embeddings: GR1.encode_frames) and the video targets run once per frame of the
segment, B x S frames instead of B x W x seq_len; the windows are then gathered from
the per-frame features (`unfold`, a static gather) and the trunk, heads and losses run
on the B*W windows exactly as on a per-window batch (GR1.call_segments, the train step's
frame_reuse path). Gradients are unchanged: the gather's transpose sums, over the
windows holding a frame, the gradients reaching that frame's resampler and embedding
inputs, which is what the per-window path computes by encoding the frame in each
window separately (nothing before the trunk uses dropout, so every copy of a frame's
features is the same function of the same parameters). tests/training/test_frame_reuse.py
checks loss and gradients against the per-window path on the same windows.

Why a segment is a long window. Padding and masks are per frame: a frame is valid iff
it lies inside its annotated segment (CALVIN) or clip (Ego4D), and the action target
(t, k) is valid iff frames t and t + k are both inside. So steps w .. w+L-1 of a segment
of S frames starting at frame r are, key by key, the per-window pipeline's window
starting at frame r + w (tests/data_pipelines/test_frame_reuse_data.py): the pipelines
produce a segment by reading a window of S steps, and nothing else changes. A window that
would start past the end of its segment (the last segment of a CALVIN annotation shorter
than W, or an Ego4D clip shorter than S) is all padding: step_mask and action_mask 0, so
it adds nothing to any loss's numerator or denominator (the losses are masked means
over the whole batch) and the attention replaces fully masked rows by a uniform
softmax, never NaN. It costs compute only.

Batch size. config.batch_size still counts windows (so the learning-rate schedule and
the windows/s figures mean the same thing); the pipelines batch batch_size / W
segments, which must divide over the processes and the mesh's batch shards.

What changes compared with per-window batches (the trade-off):
  * augmentation: GR-1's random shift is drawn once per segment and camera, so the W
    windows of a segment share one shift (per window and camera in the per-window path);
  * batch composition: a batch holds B segments of W overlapping windows each, B*W
    windows from only B annotations/clips (per-window: up to B*W), so the windows of a
    batch are correlated and the gradient noise of a step is larger than that of B*W
    independent windows;
  * which windows are drawn: CALVIN tiles each annotated segment into chunks of W
    window starts (first frame + 0, W, 2W, ...; one epoch still visits every window
    once, in shuffled chunks; the grouping is the same every epoch). Ego4D draws one
    segment per clip visit, its start uniform over the full segments of the clip, so
    one clip visit yields W windows instead of one, and the windows near a clip's ends
    are drawn less often than with a uniform window start unless the segment spans the
    whole clip: for GR-1's 30-frame clips and seq_len 10, W = 21 (S = 30) covers every
    full window of the clip exactly once per visit;
  * evaluation is unaffected: validation batches stay per-window.
frame_reuse = 0 (the default) is the faithful per-window path, bit for bit; W = 1 gives
the per-window batches too (segments of seq_len frames, one window each).
"""
from __future__ import annotations

import numpy as np

from data_pipelines import batch_spec as bs


def segment_length(seq_len: int, num_windows: int) -> int:
  """Frames per segment: S = seq_len + W - 1."""
  if seq_len < 1 or num_windows < 1:
    raise ValueError(f"seq_len ({seq_len}) and the windows per segment ({num_windows}) must be >= 1")
  return seq_len + num_windows - 1


def window_steps(seq_len: int, num_windows: int) -> np.ndarray:
  """int32 (W, L): segment step of each window step, window w = steps w .. w + L - 1."""
  return (np.arange(num_windows)[:, None] + np.arange(seq_len)[None, :]).astype(np.int32)


def unfold(x, seq_len: int, num_windows: int):
  """(B, S, ...) per-frame values -> (B*W, L, ...) windows, row b*W + w = segment b's window w.

  Plain indexing and reshape, so it serves numpy arrays and JAX arrays alike (under jit a
  static gather whose transpose sums the gradients of the windows sharing a frame)."""
  steps = segment_length(seq_len, num_windows)
  if x.shape[1] != steps:
    raise ValueError(f"segments have {x.shape[1]} steps; seq_len={seq_len} and {num_windows} windows "
                     f"per segment need {steps}")
  windows = x[:, window_steps(seq_len, num_windows)]                 # (B, W, L, ...)
  return windows.reshape((x.shape[0] * num_windows, seq_len) + tuple(x.shape[2:]))


def repeat_windows(x, num_windows: int):
  """(B, ...) per-segment values -> (B*W, ...), row b*W + w = x[b]."""
  return x[np.repeat(np.arange(x.shape[0]), num_windows)]


def unfold_batch(batch: dict, seq_len: int, num_windows: int) -> dict:
  """A batch of segments -> the batch of its B*W windows (every key: per-step ones unfolded,
  per-element ones such as language_tokens and trace ids repeated)."""
  out = {}
  for key, value in batch.items():
    per_step = key != bs.LANGUAGE_TOKENS and getattr(value, "ndim", 0) >= 2
    out[key] = unfold(value, seq_len, num_windows) if per_step else repeat_windows(value, num_windows)
  return out


def chunk_starts(first_record: np.ndarray, num_frames: np.ndarray, num_windows: int) -> np.ndarray:
  """First record of every segment when each annotated segment (first record, frame count)
  is tiled into chunks of W window starts: first, first + W, ... (< first + num_frames)."""
  if num_windows < 1:
    raise ValueError(f"windows per segment must be >= 1, got {num_windows}")
  starts = [np.arange(int(f), int(f) + int(n), num_windows, dtype=np.int64)
            for f, n in zip(first_record, num_frames)]
  return np.concatenate(starts) if starts else np.zeros(0, np.int64)
