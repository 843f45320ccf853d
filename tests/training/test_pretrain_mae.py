"""experiments/pretrain_mae.py: an MAE trained on a config's frames loads into that model's frozen encoder."""
import json

import jax
import numpy as np
import optax
import pytest

from experiments import pretrain_mae
from experiments.configs import pretrain
from gr1_jax import mae_weights, sharding
from gr1_jax.model_config import GR1Config
from gr1_jax.modules.sincos import sincos_2d
from gr1_jax.training import train_state as ts


def test_pretrained_mae_round_trips_into_the_frozen_encoder(tmp_path):
  config = pretrain.get_config("debug")                      # synthetic 40-px frames, a 32-px tiny MAE
  model = GR1Config.from_dict(config.model.to_dict())
  out = tmp_path / "mae"
  info = pretrain_mae.pretrain_mae(config.data.to_dict(), model, str(out), steps=2, batch_size=8,
                                   warmup_steps=1, decoder_width=32, log_every=1, windows_per_read=2)
  assert sorted(p.name for p in out.iterdir()) == ["mae.json", "mae_params.npz", "reconstructions.png"]
  saved = json.loads((out / "mae.json").read_text())
  assert saved["mae"]["image_size"] == 32 and saved["steps"] == 2 == info["steps"]

  layout = ts.make_layout(model, optax.adam(1e-3), sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}))
  frozen = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), layout.frozen)   # stands for a fresh model's
  loaded = mae_weights.replace_in_frozen(str(out), model.mae, frozen, layout.frozen)
  params, _ = mae_weights.load(str(out))
  want = jax.tree_util.tree_flatten_with_path(params)[0]
  got = jax.tree.leaves(loaded["model_mae"])
  assert len(want) == len(got) == len(jax.tree.leaves(frozen["model_mae"]))
  for (path, x), y in zip(want, got):
    assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)
  # MAE keeps its sin-cos positions fixed: the saved table is still the initial one.
  grid = model.mae.image_size // model.mae.patch_size
  assert np.array_equal(params["pos_embed"][0, 1:], sincos_2d(model.mae.width, grid))
  assert not params["pos_embed"][0, 0].any()
  for name in ("model_clip",):                               # the rest of the frozen tree is untouched
    for x, y in zip(jax.tree.leaves(frozen[name]), jax.tree.leaves(loaded[name])):
      assert x is y

  wider = model.replace(mae=model.mae.__class__(**{**saved["mae"], "width": 64, "mlp_dim": 128}))
  with pytest.raises(ValueError, match=r"mae\.width: config\.mae_from=.* has 32, the model 64"):
    mae_weights.load_into(str(out), wider.mae, layout.frozen["model_mae"])
