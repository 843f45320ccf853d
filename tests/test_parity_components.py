"""Each Flax component against the independent PyTorch reference, identical weights, fp32.

The reference (tests/torch_reference) was written separately from the official
code's behaviour; the weights travel through the official key layout, so these
tests also exercise import_official.
"""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.conftest import tiny_config
from gr1_jax.modules.attention_mask import attention_mask
from tests.torch_reference.config_bridge import paired_models

TOL = 1e-5


def _close(flax_value, torch_value, tol=TOL):
  a, b = np.asarray(flax_value), torch_value.detach().numpy()
  assert a.shape == b.shape, (a.shape, b.shape)
  np.testing.assert_allclose(a, b, atol=tol, rtol=0)


@pytest.fixture(scope="module")
def pair():
  cfg = tiny_config()
  ref, model = paired_models(cfg, seed=3)
  return cfg, ref, model


def _tokens(rng, batch, cfg):
  tokens = np.zeros((batch, cfg.clip.context_length), np.int64)
  for i in range(batch):
    n = rng.integers(2, 12)
    tokens[i, 0] = 49406
    tokens[i, 1:n] = rng.integers(1, 49000, n - 1)
    tokens[i, n] = 49407
  return tokens


def test_clip_text(pair):
  cfg, ref, model = pair
  tokens = _tokens(np.random.default_rng(0), 3, cfg)
  with torch.no_grad():
    expected = ref.encode_text(torch.from_numpy(tokens))
  _close(model.model_clip(jnp.asarray(tokens, jnp.int32)), expected)


def test_mae_encoder(pair):
  cfg, ref, model = pair
  images = np.random.default_rng(1).normal(size=(4, cfg.mae.image_size, cfg.mae.image_size, 3)).astype(np.float32)
  with torch.no_grad():
    cls, patches = ref.encode_image(torch.from_numpy(images).permute(0, 3, 1, 2))
  got_cls, got_patches = model.model_mae(jnp.asarray(images))
  _close(got_cls, cls)
  _close(got_patches, patches)


def test_perceiver_resampler(pair):
  cfg, ref, model = pair
  patches = np.random.default_rng(2).normal(size=(5, 7, cfg.mae.width)).astype(np.float32)
  with torch.no_grad():
    expected = ref.resample(torch.from_numpy(patches))[:, 0]
  _close(model.perceiver_resampler(jnp.asarray(patches)), expected)


def test_gpt2_trunk_with_mask(pair):
  cfg, ref, model = pair
  layout = model.layout
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, layout.num_tokens, cfg.hidden_size)).astype(np.float32)
  valid = np.ones((2, cfg.seq_len), np.float32)
  valid[1, 6:] = 0
  key_mask = np.repeat(valid, layout.tokens_per_step, axis=1) * np.tile(~layout.query_flags(), cfg.seq_len)
  with torch.no_grad():
    expected = ref.trunk(torch.from_numpy(x), torch.from_numpy(key_mask).long())
  got = model.transformer(jnp.asarray(x), attention_mask(layout, valid))
  _close(got, expected)


def test_video_decoder(pair):
  cfg, ref, model = pair
  q = np.random.default_rng(4).normal(size=(2, 3, cfg.resampler.num_latents + 1, cfg.hidden_size)).astype(np.float32)
  with torch.no_grad():
    expected = ref.decode(torch.from_numpy(q))
  _close(model.decoder(jnp.asarray(q)), expected)


def test_action_head(pair):
  cfg, ref, model = pair
  x = np.random.default_rng(5).normal(size=(2, 4, cfg.hidden_size)).astype(np.float32)
  with torch.no_grad():
    arm, grip = ref.action_head(torch.from_numpy(x))
  got_arm, got_grip = model.action_head(jnp.asarray(x))
  _close(got_arm, arm)
  _close(got_grip, grip[..., 0])


@pytest.mark.parametrize("variant", ["tiny", "tiny_pretrain"])
def test_full_forward_all_outputs(variant):
  cfg = tiny_config(variant)
  ref, model = paired_models(cfg, seed=11)
  rng = np.random.default_rng(6)
  b, l, s = 2, cfg.seq_len, cfg.mae.image_size
  rgb = rng.normal(size=(b, l, s, s, 3)).astype(np.float32)
  hand = rng.normal(size=(b, l, s, s, 3)).astype(np.float32)
  arm = rng.normal(size=(b, l, 6)).astype(np.float32)
  grip = np.eye(2, dtype=np.float32)[rng.integers(0, 2, (b, l))]
  valid = np.ones((b, l), np.float32)
  valid[1, 7:] = 0
  tokens = _tokens(rng, b, cfg)
  with torch.no_grad():
    expected = ref(torch.from_numpy(rgb).permute(0, 1, 4, 2, 3), torch.from_numpy(hand).permute(0, 1, 4, 2, 3),
                   {"arm": torch.from_numpy(arm), "gripper": torch.from_numpy(grip)},
                   torch.from_numpy(tokens), torch.from_numpy(valid))
  got = model(jnp.asarray(rgb), jnp.asarray(tokens, jnp.int32), jnp.asarray(valid),
              hand_rgb=jnp.asarray(hand) if cfg.use_hand_rgb else None,
              arm_state=jnp.asarray(arm) if cfg.use_state else None,
              gripper_state=jnp.asarray(grip) if cfg.use_state else None)
  compared = 0
  for key, value in expected.items():
    if value is None:
      assert key not in got
      continue
    if key == "arm_action_preds":
      _close(got[key][:, :, 0], value)
    elif key == "gripper_action_preds":
      _close(got[key][:, :, 0], value[..., 0])
    else:
      _close(got[key], value)
    compared += 1
  assert compared == (6 if variant == "tiny" else 2)
