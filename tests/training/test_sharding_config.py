"""Mesh construction, the logical-axis rules and config validation: all fail at start, naming the field."""
import jax
import pytest

from experiments.configs import finetune_calvin, pretrain
from gr1_jax import sharding
from gr1_jax.training import experiment_config, optimizer
from gr1_jax.training import train_state as ts
from gr1_jax.training.train import train_and_evaluate
from tests.conftest import debug_config, tiny_config


def test_mesh_fill_and_errors():
  assert sharding.resolve_mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == (4, 2, 1)
  assert sharding.resolve_mesh_shape({"data": 1, "fsdp": -1, "tensor": 2}, 8) == (1, 4, 2)
  with pytest.raises(ValueError, match="does not divide the 8 devices"):
    sharding.resolve_mesh_shape({"data": -1, "fsdp": 3, "tensor": 1}, 8)
  with pytest.raises(ValueError, match="only one axis may be -1"):
    sharding.resolve_mesh_shape({"data": -1, "fsdp": -1, "tensor": 1}, 8)
  with pytest.raises(ValueError, match="has 4 devices but 8 are available"):
    sharding.resolve_mesh_shape({"data": 2, "fsdp": 2, "tensor": 1}, 8)
  with pytest.raises(ValueError, match="config.mesh.model"):
    sharding.resolve_mesh_shape({"data": -1, "model": 2}, 8)
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
  sharding.check_batch_size(16, mesh)
  with pytest.raises(ValueError, match=r"config.batch_size=12 is not divisible by .* 8 batch shards"):
    sharding.check_batch_size(12, mesh)


def test_logical_rules_place_parameters():
  config = tiny_config()
  tx, _ = optimizer.make_optimizer(pretrain.get_config("debug").optimizer, 10)
  layout = ts.make_layout(config, tx, sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
  spec = lambda tree: tree.sharding.spec
  block = layout.params["transformer"]["h"][0]
  assert spec(block["attn"]["qkv"]["kernel"]) == jax.P("fsdp", "tensor")      # (embed, heads)
  assert spec(block["attn"]["out"]["kernel"]) == jax.P("tensor", "fsdp")      # (heads, embed)
  assert spec(block["mlp"]["fc_in"]["kernel"]) == jax.P("fsdp", "tensor")     # (embed, mlp)
  assert spec(layout.params["embed_state"]["kernel"]) == jax.P("fsdp", None)  # square: first dim only
  assert spec(layout.frozen["model_clip"]["token_embedding"]["embedding"]) == jax.P(None, "fsdp")  # vocab stays whole
  # Adam moments follow their parameter; the step counts are replicated.
  moments = [a for a in jax.tree.leaves(layout.opt_state) if a.shape == (config.hidden_size, 3 * config.hidden_size)]
  assert moments and all(spec(a) == jax.P("fsdp", "tensor") for a in moments)
  counts = [a for a in jax.tree.leaves(layout.opt_state) if a.shape == ()]
  assert counts and all(spec(a) == jax.P() for a in counts)
  # Frozen encoders get no optimizer state: no moment has a CLIP/MAE-only shape path.
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(layout.opt_state)[0]]
  assert not [p for p in paths if "model_clip" in p or "model_mae" in p]


_config = debug_config


@pytest.mark.parametrize("changes, message", [
    ({"learning_rate": 1.0}, "unknown config key config.learning_rate"),
    ({"data.shuffle": True}, "unknown config key config.data.shuffle"),
    ({"optimizer.momentum": 0.9}, "unknown config key config.optimizer.momentum"),
    ({"loss_weights.depth": 1.0}, "unknown config key config.loss_weights.depth"),
    ({"batch_size": 0}, r"config.batch_size=0 must be > 0"),
    ({"model.num_heads": 5}, "hidden_size=32 is not divisible by num_heads=5"),
    ({"model.hiden_size": 5}, "unknown key.*model.hiden_size"),
    ({"data.name": "kinetics"}, "config.data.name='kinetics'"),
    ({"log_every": 1.5}, r"config.log_every=1.5 must be of type int"),
])
def test_bad_config_names_the_field(changes, message):
  with pytest.raises(ValueError, match=message):
    experiment_config.validate(_config(**changes))


@pytest.mark.parametrize("changes, message", [
    ({"mesh.fsdp": 3}, "config.mesh=.* does not divide the 8 devices"),
    ({"batch_size": 6}, "config.batch_size=6 is not divisible by the mesh.s data x fsdp = 8"),
])
def test_train_and_evaluate_fails_at_start(tmp_path, changes, message):
  with pytest.raises(ValueError, match=message):
    train_and_evaluate(_config(**changes), str(tmp_path))
  assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_all_variants_validate():
  # Their data paths need not exist here (the demo generates its data, /data is an example).
  for module in (pretrain, finetune_calvin):
    for variant in ("default", "demo", "mini", "debug"):
      config = module.get_config(variant).to_dict()
      if variant in ("default", "mini"):
        with pytest.raises(ValueError, match="config.data.path is empty"):
          experiment_config.validate(config, check_paths=False)
        config["data"]["path"] = "/data"
      experiment_config.validate(config, check_paths=False)
