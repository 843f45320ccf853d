"""Checkpoint round trips: re-sharding onto another mesh, the non-finite refusal, and the
partial init_from that maps what exists and reports what is new."""
import jax
import numpy as np
import pytest

from experiments.configs import finetune_calvin
from gr1_jax import model_checkpoint, sharding
from gr1_jax.training import checkpointing, optimizer
from gr1_jax.training import train_state as ts
from tests.conftest import tiny_config


def _layout(config, mesh_shape):
  tx, _ = optimizer.make_optimizer(finetune_calvin.get_config("debug").optimizer, 10)
  return tx, ts.make_layout(config, tx, sharding.make_mesh(dict(zip(sharding.MESH_AXES, mesh_shape))))


def _random(abstract, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: jax.device_put(rng.normal(size=a.shape).astype(a.dtype), a.sharding), abstract)


def test_restore_reshards_onto_a_new_mesh(tmp_path):
  config = tiny_config()
  tx, layout_a = _layout(config, (8, 1, 1))
  state = ts.new_train_state(layout_a, tx, _random(layout_a.params, 0))
  frozen = _random(layout_a.frozen, 1)
  saver = checkpointing.TrainCheckpointer(str(tmp_path), keep=2, async_save=False)
  saver.save(state, frozen, None, {"note": "test"}, config)
  saver.close()

  _, layout_b = _layout(config, (2, 2, 2))
  restored, restored_frozen = checkpointing.TrainCheckpointer(str(tmp_path), keep=2).restore(layout_b, None)
  for x, y in zip(jax.tree.leaves(jax.device_get((state, frozen))),
                  jax.tree.leaves(jax.device_get((restored, restored_frozen)))):
    assert np.array_equal(x, y)
  qkv = restored.params["transformer"]["h"][0]["attn"]["qkv"]["kernel"]
  assert qkv.sharding.spec == jax.P("fsdp", "tensor") and qkv.sharding.mesh.shape["tensor"] == 2
  # The training checkpoint is also a model checkpoint.
  assert model_checkpoint.load_config(str(tmp_path))[0] == config


def test_nonfinite_state_is_never_written(tmp_path):
  config = tiny_config()
  tx, layout = _layout(config, (8, 1, 1))
  params = _random(layout.params, 0)
  params["embed_timestep"] = params["embed_timestep"].at[0, 0].set(np.nan)
  saver = checkpointing.TrainCheckpointer(str(tmp_path), keep=2, async_save=False)
  with pytest.raises(FloatingPointError, match="refusing to write checkpoint step 0"):
    saver.save(ts.new_train_state(layout, tx, params), _random(layout.frozen, 1), None, {}, config)
  saver.close()
  assert saver.latest_step() is None


def test_init_from_maps_shared_and_reports_new(tmp_path):
  stage1 = tiny_config("tiny_pretrain")
  _, layout1 = _layout(stage1, (8, 1, 1))
  source = ts.merge_params(jax.device_get(_random(layout1.params, 3)), jax.device_get(_random(layout1.frozen, 4)))
  model_checkpoint.save_model_checkpoint(str(tmp_path / "stage1"), source, stage1, step=7)

  stage2 = tiny_config()
  _, layout2 = _layout(stage2, (2, 2, 2))
  fresh_params, fresh_frozen = _random(layout2.params, 5), _random(layout2.frozen, 6)
  params, frozen, report = checkpointing.restore_init_from(str(tmp_path / "stage1"), layout2,
                                                           fresh_params, fresh_frozen)
  assert report["unused"] == []
  assert {"transformer/h/0/attn/qkv/kernel", "obs_queries", "embed_timestep", "model_mae/cls_token",
          "decoder/decoder_pred/kernel"} <= set(report["loaded"])
  new = set(report["initialised"])
  assert {"action_queries", "obs_hand_queries", "embed_arm_state/kernel", "embed_hand_img/kernel"} <= new
  np.testing.assert_array_equal(params["transformer"]["h"][0]["attn"]["qkv"]["kernel"],
                                source["transformer"]["h"][0]["attn"]["qkv"]["kernel"])
  np.testing.assert_array_equal(frozen["model_clip"]["token_embedding"]["embedding"],
                                source["model_clip"]["token_embedding"]["embedding"])
  np.testing.assert_array_equal(params["action_queries"], jax.device_get(fresh_params["action_queries"]))
  assert params["embed_timestep"].sharding == layout2.params["embed_timestep"].sharding
  text = checkpointing.format_init_report("stage1", report)
  assert "loaded" in text and "action_queries" in text


def test_init_from_rejects_shape_mismatch(tmp_path):
  stage1 = tiny_config("tiny_pretrain", seq_len=8, fwd_pred_next_n=3)
  _, layout1 = _layout(stage1, (8, 1, 1))
  model_checkpoint.save_model_checkpoint(
      str(tmp_path / "s1"), jax.device_get(ts.merge_params(_random(layout1.params, 0), _random(layout1.frozen, 1))),
      stage1)
  _, layout2 = _layout(tiny_config(), (8, 1, 1))
  with pytest.raises(ValueError, match=r"embed_timestep: checkpoint \(8, 32\) vs model \(10, 32\)"):
    checkpointing.restore_init_from(str(tmp_path / "s1"), layout2, _random(layout2.params, 0),
                                    _random(layout2.frozen, 1))
