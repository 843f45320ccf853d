"""Official GR-1 state_dict <-> this model's parameter tree (numpy in, numpy out).

`import_official` is strict: every parameter of the model must be matched, and
missing, unexpected and mis-shaped keys are reported together in one error.
Keys that carry no information for this model are ignored by rule
(`IGNORED_KEY_RULES`); `decoder_pos_embed` is a fixed table and is checked
against ours instead of being loaded.
"""
from __future__ import annotations

import re
from typing import Mapping

import jax
import numpy as np
from flax import nnx

from gr1_jax.conversion.official_keys import KeyMap, flax_to_torch, official_key_map, torch_to_flax
from gr1_jax.model_config import GR1Config
from gr1_jax.modules.sincos import sincos_2d
from gr1_jax.user_errors import UserError

IGNORED_KEY_RULES = (
    (re.compile(r"^transformer\.h\.\d+\.attn\.(bias|masked_bias)$"), "GPT-2 causal-mask buffers"),
    (re.compile(r"^model_clip\.visual\."), "CLIP vision tower (GR-1 uses only the text tower)"),
    (re.compile(r"^model_clip\.logit_scale$"), "CLIP logit scale (unused by GR-1)"),
    (re.compile(r"^decoder_pos_embed$"), "fixed sin-cos table (checked, not loaded)"),
)
# OpenAI CLIP's trained logit scale is ln(100); written on export so strict loaders are satisfied.
CLIP_LOGIT_SCALE = float(np.log(100.0))
UNSUPPORTED_KEYS = {
    "transformer.wpe.weight": "a learned absolute position table (GR1-Training adds one; official "
                              "GR-1 has none, and this model keeps the official architecture)",
}


class CheckpointMismatchError(UserError, ValueError):
  """A state_dict does not fit the model config; the message lists every problem."""


def abstract_param_shapes(config: GR1Config) -> dict[tuple, tuple]:
  from gr1_jax.modules.gr1 import GR1  # local: keeps this module importable without building models
  abstract = nnx.eval_shape(lambda: GR1(config, rngs=nnx.Rngs(0)))
  flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))[0]
  return {tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path): tuple(leaf.shape)
          for path, leaf in flat}


def _set(tree: dict, path: tuple, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree, path: tuple):
  for key in path:
    tree = tree[key]
  return tree


def strip_prefixes(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops DDP's 'module.' and Lightning's 'model.' prefixes when every key has them."""
  keys = list(state_dict)
  for prefix in ("module.", "model."):
    if keys and all(k.startswith(prefix) for k in keys):
      keys = [k[len(prefix):] for k in keys]
      state_dict = dict(zip(keys, state_dict.values()))
  return dict(state_dict)


def import_official(state_dict: Mapping[str, np.ndarray], config: GR1Config, *,
                    source: str = "state_dict", require_encoders: bool = True) -> dict:
  """Official-layout numpy state_dict -> nested dict matching nnx.state(GR1(config), nnx.Param).

  With require_encoders=False, model_clip.* / model_mae.* may be absent (they are
  then simply not in the returned tree; load them from their own files).
  """
  state_dict = strip_prefixes(state_dict)
  shapes = abstract_param_shapes(config)
  entries = official_key_map(config)
  used, missing, misshaped, out = set(), [], [], {}
  for entry in entries:
    flax_shape = shapes[entry.flax_path]
    if entry.torch_key not in state_dict:
      if require_encoders or not entry.torch_key.startswith(("model_clip.", "model_mae.")):
        missing.append(f"{entry.torch_key} (expected for {'.'.join(map(str, entry.flax_path))} "
                       f"{flax_shape})")
      continue
    used.add(entry.torch_key)
    value = np.asarray(state_dict[entry.torch_key])
    try:
      _set(out, entry.flax_path, torch_to_flax(value, entry.rule, flax_shape))
    except ValueError:
      expected = _expected_torch_shape(entry, flax_shape, config.mae.patch_size)
      misshaped.append(f"{entry.torch_key} has shape {tuple(value.shape)}, expected {expected}")
  unexpected, unsupported = [], []
  for key in state_dict:
    if key in used or any(rule.search(key) for rule, _ in IGNORED_KEY_RULES):
      continue
    if key in UNSUPPORTED_KEYS:
      unsupported.append(f"{key}: {UNSUPPORTED_KEYS[key]}")
    else:
      unexpected.append(key)
  _check_decoder_pos_embed(state_dict, config, misshaped)
  mapped = {e.flax_path for e in entries}
  unmapped = sorted(".".join(map(str, p)) for p in shapes if p not in mapped)
  if missing or misshaped or unexpected or unsupported or unmapped:
    parts = [f"{source} does not fit the model config (hidden_size={config.hidden_size}, "
             f"num_layers={config.num_layers}, seq_len={config.seq_len}, "
             f"use_hand_rgb={config.use_hand_rgb}, act_pred={config.act_pred}, "
             f"fwd_pred={config.fwd_pred}, action_chunk={config.action_chunk}):"]
    for title, items in (("missing", missing), ("mis-shaped", misshaped),
                         ("unexpected", unexpected), ("unsupported", unsupported),
                         ("model parameters with no official key", unmapped)):
      if items:
        shown = items[:12] + ([f"... and {len(items) - 12} more"] if len(items) > 12 else [])
        parts.append(f"  {title} ({len(items)}): " + "; ".join(shown))
    raise CheckpointMismatchError("\n".join(parts))
  return out


def _expected_torch_shape(entry: KeyMap, flax_shape: tuple, patch_size: int) -> tuple:
  return flax_to_torch(np.zeros(flax_shape, np.float32), entry, patch_size).shape


def _check_decoder_pos_embed(state_dict, config: GR1Config, problems: list):
  if not config.fwd_pred or "decoder_pos_embed" not in state_dict:
    return
  grid = config.mae.image_size // config.mae.patch_size
  ours = sincos_2d(config.hidden_size, grid)[None]
  theirs = np.asarray(state_dict["decoder_pos_embed"], np.float32)
  if theirs.shape != ours.shape:
    problems.append(f"decoder_pos_embed has shape {theirs.shape}, expected {ours.shape}")
  elif np.abs(theirs - ours).max() > 1e-5:
    problems.append("decoder_pos_embed differs from the fixed 2-D sin-cos table by "
                    f"{np.abs(theirs - ours).max():.3g}; this model only supports the fixed table")


def export_official(params: Mapping, config: GR1Config, *, include_encoders: bool = True) -> dict[str, np.ndarray]:
  """Nested parameter dict (as import_official returns) -> official-layout state_dict."""
  entries = official_key_map(config)
  out: dict[str, np.ndarray] = {}
  for entry in entries:
    is_encoder = entry.torch_key.startswith(("model_clip.", "model_mae."))
    if is_encoder and not include_encoders:
      continue
    try:
      value = np.asarray(_get(params, entry.flax_path))
    except (KeyError, IndexError, TypeError) as exc:
      if is_encoder:
        continue  # a checkpoint without encoders exports without them
      raise CheckpointMismatchError(
          f"parameter {'.'.join(map(str, entry.flax_path))} (for {entry.torch_key}) is missing") from exc
    out[entry.torch_key] = flax_to_torch(value, entry, config.mae.patch_size)
  if config.fwd_pred:
    grid = config.mae.image_size // config.mae.patch_size
    out["decoder_pos_embed"] = sincos_2d(config.hidden_size, grid)[None]
  if include_encoders and any(k.startswith("model_clip.") for k in out):
    out["model_clip.logit_scale"] = np.asarray(CLIP_LOGIT_SCALE, np.float32)
  return out
