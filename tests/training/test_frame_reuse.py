"""Frame reuse (data_pipelines/frame_reuse.py): on the same windows, the segment path's outputs, loss
and gradients equal the per-window path's, in stage 1 (video only) and stage 2 (all heads).

Tolerance: both paths compute the same float32 functions, but with different batch shapes
(the encoders see B*S frames instead of B*W*L, the language B rows instead of B*W) and the
gradient of a frame's features is summed by the gather's transpose instead of by the
per-window graph, so XLA may block and order the reductions differently: relative 1e-5
(float32 has 2^-24 ~ 6e-8 relative precision; sums of a few thousand terms reordered stay
well inside 1e-5), with an absolute floor of 1e-5 x the leaf's largest gradient for entries
that are sums cancelling to near zero. A one-frame misalignment of the windows is far outside
it (checked below), so the comparison can fail.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from data_pipelines import batch_spec as bs
from data_pipelines import frame_reuse as reuse
from data_pipelines.synthetic import synthetic_batch
from experiments.configs import finetune_calvin
from gr1_jax import sharding
from gr1_jax.model_inputs import model_inputs
from gr1_jax.training import optimizer
from gr1_jax.training import train_state as ts
from gr1_jax.training.train_step import make_loss_fn, make_train_step, rngs_for_step
from tests.conftest import tiny_config

W = 4                                   # windows per segment
L = 10                                  # seq_len of the tiny configs
S = reuse.segment_length(L, W)          # 13 frames per segment
VALID = (S, 6, 2)                       # valid frames per segment: full, windows 1-3 right-padded,
                                        # windows 2-3 of the last segment all padding
RTOL = 1e-5


def _segments(finetune: bool, chunk: int) -> dict:
  """Three segments in the batch contract (padding as the pipelines write it)."""
  b = len(VALID)
  batch = synthetic_batch(7, batch_size=b, seq_len=S, image_size=40, hand_size=20, action_chunk=chunk,
                          finetune=finetune)
  mask = (np.arange(S)[None, :] < np.array(VALID)[:, None]).astype(np.float32)
  batch[bs.STEP_MASK] = mask
  batch[bs.RGB_STATIC] = batch[bs.RGB_STATIC] * mask[..., None, None, None].astype(np.uint8)
  if finetune:
    batch[bs.RGB_GRIPPER] = batch[bs.RGB_GRIPPER] * mask[..., None, None, None].astype(np.uint8)
    batch[bs.ARM_STATE] = batch[bs.ARM_STATE] * mask[..., None]
    batch[bs.GRIPPER_STATE] = np.where(mask[..., None] > 0, batch[bs.GRIPPER_STATE], np.float32([1, 0]))
    # action (s, k) is valid iff frames s and s + k are both inside the segment
    idx = np.arange(S)[:, None] + np.arange(chunk)[None, :]
    valid = (idx[None] < np.array(VALID)[:, None, None]).astype(np.float32)
    batch[bs.ACTION_MASK] = valid
    batch[bs.ARM_ACTION] = batch[bs.ARM_ACTION] * valid[..., None]
    batch[bs.GRIPPER_ACTION] = batch[bs.GRIPPER_ACTION] * valid
  else:
    batch = {k: batch[k] for k in bs.PRETRAIN_KEYS}
  return batch


def _setup(variant: str, chunk: int = 1):
  config = tiny_config(variant, action_chunk=chunk)
  tx, _ = optimizer.make_optimizer(finetune_calvin.get_config("debug").optimizer, 10)
  layout = ts.make_layout(config, tx, sharding.make_mesh({"data": -1}, jax.devices()[:1]))
  params, frozen, rngs = ts.init_model_state(layout, 0)
  return config, layout, params, frozen, rngs


def _loss_and_grads(layout, frame_reuse, frozen, rngs):
  """jitted (params, batch) -> (per-head losses, gradients of the total) on the host."""
  loss_fn = make_loss_fn(layout, None, frame_reuse)
  fn = jax.jit(jax.value_and_grad(lambda p, b: loss_fn(p, frozen, rngs, b), has_aux=True))

  def run(params, batch):
    (_, losses), grads = fn(params, batch)
    return jax.device_get(losses), jax.device_get(grads)
  return run


def _assert_grads_close(expected, actual):
  flat_e = jax.tree_util.tree_flatten_with_path(expected)[0]
  flat_a = jax.tree.leaves(actual)
  assert len(flat_e) == len(flat_a)
  for (path, e), a in zip(flat_e, flat_a):
    atol = RTOL * float(np.abs(e).max())
    np.testing.assert_allclose(a, e, rtol=RTOL, atol=atol, err_msg=jax.tree_util.keystr(path))


def _resampler_norm(grads):
  return float(np.sqrt(sum(np.sum(x ** 2) for x in jax.tree.leaves(grads["perceiver_resampler"]))))


# Action chunks add no frame-reuse logic of their own (the losses see the unfolded windows): -m slow.
@pytest.mark.parametrize("variant,chunk", [("tiny_pretrain", 1), ("tiny", 1),
                                           pytest.param("tiny", 3, marks=pytest.mark.slow)],
                         ids=["stage1_video", "stage2", "stage2_chunk3"])
def test_loss_and_gradients_equal_the_per_window_path(variant, chunk):
  config, layout, params, frozen, rngs = _setup(variant, chunk)
  segments = _segments(finetune=variant == "tiny", chunk=chunk)
  windows = reuse.unfold_batch(segments, L, W)
  assert windows[bs.STEP_MASK].shape == (len(VALID) * W, L)
  assert windows[bs.STEP_MASK][-2:].sum() == 0            # two windows are all padding
  # Training mode: dropout is on in the trunk; both paths run it on (B*W, T, D) with the same keys.
  step_rngs = rngs_for_step(rngs, 3)
  per_window = _loss_and_grads(layout, 0, frozen, step_rngs)
  ref_losses, ref_grads = per_window(params, windows)
  losses, grads = _loss_and_grads(layout, W, frozen, step_rngs)(params, segments)

  expected_heads = {"video", "total"} | ({"video_hand", "arm", "gripper"} if variant == "tiny" else set())
  assert set(losses) == set(ref_losses) == expected_heads
  for head in ref_losses:
    np.testing.assert_allclose(losses[head], ref_losses[head], rtol=RTOL, err_msg=head)
  _assert_grads_close(ref_grads, grads)
  assert _resampler_norm(ref_grads) > 0 and _resampler_norm(grads) > 0   # the resampler still learns

  # The comparison can fail: the same windows with their frames one step out of place.
  shifted = dict(windows, **{k: np.roll(windows[k], 1, axis=1) for k in (bs.RGB_STATIC, bs.RGB_GRIPPER)
                             if k in windows})
  _, wrong_grads = per_window(params, shifted)
  with pytest.raises(AssertionError):
    _assert_grads_close(ref_grads, wrong_grads)


def test_outputs_equal_the_per_window_forward():
  config, layout, params, frozen, rngs = _setup("tiny")
  segments = _segments(finetune=True, chunk=1)
  windows = reuse.unfold_batch(segments, L, W)

  @jax.jit
  def both(seg_batch, win_batch):
    model = nnx.merge(layout.graphdef, params, frozen, rngs)
    model.eval()
    return (model.call_segments(num_windows=W, **model_inputs(seg_batch, config)),
            model(**model_inputs(win_batch, config)))

  out, ref = jax.device_get(both(segments, windows))
  assert set(out) == set(ref) and {"arm_action_preds", "obs_preds", "obs_hand_targets"} <= set(ref)
  for key in ref:
    assert out[key].shape == ref[key].shape, key
    np.testing.assert_allclose(out[key], ref[key], rtol=RTOL, atol=RTOL * float(np.abs(ref[key]).max()),
                               err_msg=key)


@pytest.mark.slow   # the loss/gradient equality above is the default suite's check; this adds the jitted step
def test_train_step_with_frame_reuse_runs_and_matches():
  """The jitted step of config.data.frame_reuse: same metrics as the per-window step on the same windows."""
  config, layout, params, frozen, rngs = _setup("tiny")
  tx, schedule = optimizer.make_optimizer(finetune_calvin.get_config("debug").optimizer, 10)
  segments = _segments(finetune=True, chunk=1)
  windows = reuse.unfold_batch(segments, L, W)
  metrics = {}
  for frame_reuse, batch in ((0, windows), (W, segments)):
    step = make_train_step(layout, tx, schedule, frame_reuse=frame_reuse)
    state = ts.new_train_state(layout, tx, jax.tree.map(jnp.copy, params))
    _, metrics[frame_reuse] = jax.device_get(step(state, frozen, rngs, batch))
  for key in ("loss/total", "loss/arm", "loss/video", "grad_norm"):
    np.testing.assert_allclose(metrics[W][key], metrics[0][key], rtol=RTOL, err_msg=key)


def test_segment_length_is_checked():
  config, layout, params, frozen, rngs = _setup("tiny_pretrain")
  segments = _segments(finetune=False, chunk=1)
  with pytest.raises(ValueError, match="need 14"):
    make_loss_fn(layout, None, W + 1)(params, frozen, rngs, segments)
