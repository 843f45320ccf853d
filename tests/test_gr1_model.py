"""Behaviour of the whole Flax GR-1: shapes and jit per stage, causality, padding, read-out queries."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gr1_jax.model_checkpoint import build_model, numpy_params
from gr1_jax.model_config import GR1Config
from gr1_jax.modules.gr1 import FROZEN, GR1, TRAINABLE
from tests.conftest import tiny_config


def _inputs(cfg: GR1Config, batch=2, seed=0):
  rng = np.random.default_rng(seed)
  s, l = cfg.mae.image_size, cfg.seq_len
  tokens = np.zeros((batch, 77), np.int32)
  tokens[:, 0], tokens[:, 1:4], tokens[:, 4] = 49406, rng.integers(1, 4000, (batch, 3)), 49407
  inputs = {"rgb": rng.normal(size=(batch, l, s, s, 3)).astype(np.float32),
            "tokens": tokens, "step_mask": np.ones((batch, l), np.float32)}
  if cfg.use_hand_rgb:
    inputs["hand_rgb"] = rng.normal(size=(batch, l, s, s, 3)).astype(np.float32)
  if cfg.use_state:
    inputs["arm_state"] = rng.normal(size=(batch, l, 6)).astype(np.float32)
    inputs["gripper_state"] = np.eye(2, dtype=np.float32)[rng.integers(0, 2, (batch, l))]
  return inputs


def _forward(model):
  @nnx.jit
  def run(model, inputs):
    return model(inputs["rgb"], inputs["tokens"], inputs["step_mask"],
                 **{k: v for k, v in inputs.items() if k not in ("rgb", "tokens", "step_mask")})
  return lambda inputs: jax.tree.map(np.asarray, run(model, inputs))


@pytest.fixture(scope="module")
def tiny_model():
  model = GR1(tiny_config(), rngs=nnx.Rngs(0))
  model.eval()
  return model


@pytest.mark.parametrize("variant,keys", [
    ("tiny", {"arm_action_preds", "gripper_action_preds", "obs_preds", "obs_targets",
              "obs_hand_preds", "obs_hand_targets"}),
    ("tiny_pretrain", {"obs_preds", "obs_targets"}),
])
def test_jitted_forward_shapes_per_stage(variant, keys):
  cfg = tiny_config(variant)
  model = GR1(cfg, rngs=nnx.Rngs(0))
  model.eval()
  out = _forward(model)(_inputs(cfg))
  assert set(out) == keys
  b, l, p = 2, cfg.seq_len, cfg.num_patches
  for key in keys & {"obs_preds", "obs_targets", "obs_hand_preds", "obs_hand_targets"}:
    assert out[key].shape == (b, l, p, cfg.patch_dim)
  if cfg.act_pred:
    assert out["arm_action_preds"].shape == (b, l, 1, 6)
    assert out["gripper_action_preds"].shape == (b, l, 1)
  assert all(np.isfinite(v).all() for v in out.values())


def test_causality_future_steps_do_not_change_the_past(tiny_model):
  run = _forward(tiny_model)
  base = _inputs(tiny_model.config)
  ref = run(base)
  for t in (0, 4, 8):
    changed = {k: v.copy() for k, v in base.items()}
    rng = np.random.default_rng(t)
    for key in ("rgb", "hand_rgb", "arm_state"):
      changed[key][:, t + 1:] = rng.normal(size=changed[key][:, t + 1:].shape)
    changed["gripper_state"][:, t + 1:] = changed["gripper_state"][:, t + 1:, ::-1]
    out = run(changed)
    for key in ("arm_action_preds", "gripper_action_preds", "obs_preds", "obs_hand_preds"):
      np.testing.assert_array_equal(out[key][:, :t + 1], ref[key][:, :t + 1], err_msg=f"{key} t={t}")
      assert not np.array_equal(out[key][:, t + 1:], ref[key][:, t + 1:]), key


def test_padded_steps_are_invisible(tiny_model):
  run = _forward(tiny_model)
  inputs = _inputs(tiny_model.config)
  inputs["step_mask"][:, 6:] = 0
  ref = run(inputs)
  changed = {k: v.copy() for k, v in inputs.items()}
  for key in ("rgb", "hand_rgb", "arm_state"):
    changed[key][:, 6:] *= -3.0
  out = run(changed)
  for key in ("arm_action_preds", "gripper_action_preds", "obs_preds", "obs_hand_preds"):
    np.testing.assert_array_equal(out[key][:, :6], ref[key][:, :6], err_msg=key)


def test_fully_padded_sample_gives_no_nan(tiny_model):
  inputs = _inputs(tiny_model.config)
  inputs["step_mask"][1] = 0
  out = _forward(tiny_model)(inputs)
  assert all(np.isfinite(v).all() for v in out.values())


def test_obs_queries_do_not_change_actions(tiny_model):
  """Nobody attends to the [OBS] queries, so dropping them leaves [ACT] outputs unchanged."""
  act_only_cfg = tiny_model.config.replace(fwd_pred=False, fwd_pred_hand=False)
  params = numpy_params(tiny_model)
  act_only_params = {k: v for k, v in params.items() if k not in ("obs_queries", "obs_hand_queries", "decoder")}
  act_only = build_model(act_only_cfg, act_only_params)
  act_only.eval()
  inputs = _inputs(tiny_model.config)
  inputs["step_mask"][0, 5:] = 0
  full, reduced = _forward(tiny_model)(inputs), _forward(act_only)(inputs)
  assert set(reduced) == {"arm_action_preds", "gripper_action_preds"}
  np.testing.assert_allclose(reduced["arm_action_preds"], full["arm_action_preds"], atol=1e-6, rtol=0)
  np.testing.assert_allclose(reduced["gripper_action_preds"], full["gripper_action_preds"], atol=1e-6, rtol=0)


def test_frozen_encoders_get_no_gradient_and_trainable_do(tiny_model):
  inputs = _inputs(tiny_model.config)
  graphdef, trainable, frozen, rest = nnx.split(tiny_model, TRAINABLE, FROZEN, ...)
  assert all("model_clip" in str(p) or "model_mae" in str(p) for p, _ in nnx.to_flat_state(frozen))
  assert not any("model_clip" in str(p) or "model_mae" in str(p) for p, _ in nnx.to_flat_state(trainable))

  def loss(trainable_state):
    model = nnx.merge(graphdef, trainable_state, frozen, rest)
    out = model(inputs["rgb"], inputs["tokens"], inputs["step_mask"], hand_rgb=inputs["hand_rgb"],
                arm_state=inputs["arm_state"], gripper_state=inputs["gripper_state"])
    return out["arm_action_preds"].sum() + out["obs_preds"].mean()

  grads = jax.jit(jax.grad(loss))(trainable)
  flat = {p: np.asarray(v[...] if hasattr(v, "__getitem__") else v) for p, v in nnx.to_flat_state(grads)}
  assert np.abs(flat[("perceiver_resampler", "latents")]).sum() > 0
  assert np.abs(flat[("transformer", "h", 0, "attn", "qkv", "kernel")]).sum() > 0
  assert np.abs(flat[("transformer", "wte")]).sum() == 0   # kept only for weight compatibility


def test_official_config_trainable_parameter_count():
  abstract = nnx.eval_shape(lambda: GR1(GR1Config(), rngs=nnx.Rngs(0)))
  count = lambda f: sum(x.size for x in jax.tree.leaves(nnx.state(abstract, f)))
  assert count(TRAINABLE) == 45_988_039        # the official figure (GR-1 issue #4)
  assert count(FROZEN) == 85_798_656 + 63_428_096   # MAE + CLIP text (logit_scale not kept)


def test_bfloat16_compute_tracks_float32(tiny_model):
  bf16 = build_model(tiny_model.config.replace(dtype="bfloat16"), numpy_params(tiny_model))
  bf16.eval()
  inputs = _inputs(tiny_model.config)
  ref, out = _forward(tiny_model)(inputs), _forward(bf16)(inputs)
  assert out["arm_action_preds"].dtype == np.float32
  np.testing.assert_allclose(out["arm_action_preds"], ref["arm_action_preds"], atol=0.1, rtol=0.1)


def test_window_length_must_match_the_timestep_table(tiny_model):
  inputs = _inputs(tiny_model.config)
  short = {k: (v[:, :9] if k != "tokens" else v) for k, v in inputs.items()}
  with pytest.raises(ValueError, match="seq_len=10"):
    tiny_model(**{k: jnp.asarray(v) for k, v in short.items() if k in ("rgb", "tokens", "step_mask")},
               hand_rgb=short["hand_rgb"], arm_state=short["arm_state"], gripper_state=short["gripper_state"])


@pytest.mark.slow
def test_official_config_builds_and_runs_one_forward():
  cfg = GR1Config()
  model = GR1(cfg, rngs=nnx.Rngs(0))
  model.eval()
  assert sum(x.size for x in jax.tree.leaves(nnx.state(model, TRAINABLE))) == 45_988_039
  out = _forward(model)(_inputs(cfg, batch=1))
  assert out["obs_preds"].shape == (1, 10, 196, 768) and out["arm_action_preds"].shape == (1, 10, 1, 6)
  assert all(np.isfinite(v).all() for v in out.values())
