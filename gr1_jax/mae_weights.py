"""Stand-alone MAE encoder weights: what `experiments/pretrain_mae.py` writes and `config.mae_from` loads.

A directory holding
  mae_params.npz   the encoder's parameters, keyed by their path in GR1's `model_mae`
                   sub-tree ("blocks/0/attn/qkv/kernel", "cls_token", ...)
  mae.json         {"mae": MAEConfig as a dict, ...how it was trained}
so the weights drop into the frozen `model_mae` of any GR-1 model whose `mae` config
has the same sizes (checked field by field, and tensor by tensor).
"""
from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from gr1_jax import url_paths
from gr1_jax.atomic_files import write_bytes
from gr1_jax.model_config import MAEConfig
from gr1_jax.user_errors import UserError



class MAEWeightsError(UserError, ValueError):
  """MAE weights that do not fit the model (named by config.mae_from)."""


PARAMS_FILE, CONFIG_FILE = "mae_params.npz", "mae.json"
# Fields that decide the parameter shapes or the features (ln_eps) of the encoder.
MATCHED_FIELDS = ("image_size", "patch_size", "width", "depth", "heads", "mlp_dim", "ln_eps")


def _flatten(tree: Mapping, prefix: str = "", leaf=np.asarray) -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(_flatten(value, name + "/", leaf))
    else:
      out[name] = leaf(value)
  return out


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
  out: dict = {}
  for name, value in flat.items():
    node = out
    *parents, leaf = name.split("/")
    for key in parents:
      key = int(key) if key.isdigit() else key
      node = node.setdefault(key, {})
    node[int(leaf) if leaf.isdigit() else leaf] = value
  return out


def save(directory: str, params: Mapping, mae_config: MAEConfig | Mapping, info: Mapping | None = None) -> str:
  """Writes the encoder's pure-dict params and config to `directory` (local or URL)."""
  config = mae_config if isinstance(mae_config, Mapping) else _mae_dict(mae_config)
  buffer = io.BytesIO()
  np.savez(buffer, **_flatten(params))
  write_bytes(url_paths.join(directory, PARAMS_FILE), buffer.getvalue())
  write_bytes(url_paths.join(directory, CONFIG_FILE),
              json.dumps({"mae": dict(config), **dict(info or {})}, indent=1).encode())
  return directory


def _mae_dict(config: MAEConfig) -> dict:
  import dataclasses
  return dataclasses.asdict(config)


def load(directory: str) -> tuple[dict, dict[str, Any]]:
  """(params as a nested dict of numpy arrays, the mae.json contents) of a saved encoder."""
  root = url_paths.as_epath(directory, "config.mae_from")
  for name in (PARAMS_FILE, CONFIG_FILE):
    if not (root / name).exists():
      raise FileNotFoundError(f"{root} has no {name}: not an MAE directory written by experiments/pretrain_mae.py")
  info = json.loads((root / CONFIG_FILE).read_text())
  with (root / PARAMS_FILE).open("rb") as f:
    with np.load(io.BytesIO(f.read())) as npz:
      flat = {k: npz[k] for k in npz.files}
  return _unflatten(flat), info


def check_compatible(saved: Mapping, model: MAEConfig, where: str) -> None:
  """Raises ValueError naming every MAE size that differs between `saved` (a dict) and `model`."""
  wanted = _mae_dict(model)
  diffs = [f"mae.{k}: {where} has {saved.get(k)!r}, the model {wanted[k]!r}"
           for k in MATCHED_FIELDS if saved.get(k) != wanted[k]]
  if diffs:
    raise MAEWeightsError(f"{where} was trained for a different encoder: " + "; ".join(diffs))


def load_into(directory: str, model: MAEConfig, like: Mapping) -> dict:
  """The saved params, checked against `model`'s sizes and `like` (the model's model_mae tree:
  arrays or ShapeDtypeStructs): same keys, same shapes. Returns numpy arrays in like's structure."""
  params, info = load(directory)
  check_compatible(info.get("mae", {}), model, f"config.mae_from={directory}")
  got, want = _flatten(params), {k: v for k, v in _flatten_shapes(like).items()}
  problems = [f"missing {k}" for k in sorted(set(want) - set(got))]
  problems += [f"unexpected {k}" for k in sorted(set(got) - set(want))]
  problems += [f"{k}: saved {tuple(got[k].shape)} vs model {tuple(want[k])}"
               for k in sorted(set(got) & set(want)) if tuple(got[k].shape) != tuple(want[k])]
  if problems:
    raise MAEWeightsError(f"config.mae_from={directory} does not match the model's MAE: " + "; ".join(problems[:10]))
  return _unflatten({k: got[k].astype(np.float32) for k in want})


def _flatten_shapes(tree: Mapping) -> dict[str, tuple]:
  return _flatten(tree, leaf=lambda value: tuple(value.shape))


def replace_in_frozen(directory: str, model: MAEConfig, frozen: Mapping, frozen_layout: Mapping) -> dict:
  """`frozen` (a training run's frozen params) with its `model_mae` sub-tree replaced by the
  weights in `directory`, placed with the shardings of `frozen_layout` (ShapeDtypeStructs)."""
  import jax
  if "model_mae" not in frozen_layout:
    raise MAEWeightsError("config.mae_from is set but the model has no frozen MAE (model_mae)")
  loaded = load_into(directory, model, frozen_layout["model_mae"])
  placed = jax.tree.map(lambda x, a: jax.device_put(x.astype(a.dtype), a.sharding), loaded,
                        frozen_layout["model_mae"])
  return {**frozen, "model_mae": placed}
