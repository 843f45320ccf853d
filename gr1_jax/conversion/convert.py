"""Official PyTorch GR-1 checkpoints <-> model checkpoint directories (logic of `experiments.convert`).

Python API
----------
    from gr1_jax.conversion.convert import convert_official_checkpoint, from_official, to_torch

    # In memory: (GR1Config, nested numpy params) - the tree nnx.state(GR1(config), nnx.Param) holds.
    config, params = convert_official_checkpoint(
        "snapshot_ABCD.pt", mae="mae_pretrain_vit_base.pth", clip="ViT-B-32.pt")

    # On disk: the same, written as a model checkpoint directory (temp dir + rename).
    from_official("snapshot_ABCD.pt", "checkpoints/gr1_abcd", mae=..., clip=...)

    # Load it and run one forward pass.
    import numpy as np
    from gr1_jax.image_preprocessing import preprocess_uint8
    from gr1_jax.model_checkpoint import load_model
    from gr1_jax.tokenizer import tokenize
    model = load_model("checkpoints/gr1_abcd")                     # ready GR1, eval mode
    c = model.config
    frames = np.zeros((1, c.seq_len, 200, 200, 3), np.uint8)       # static camera, uint8 HWC
    wrist = np.zeros((1, c.seq_len, 84, 84, 3), np.uint8)          # gripper camera
    out = model(preprocess_uint8(frames, c.mae.image_size), tokenize("open the drawer"),
                np.ones((1, c.seq_len), np.int32),                 # step mask (1 = valid step)
                hand_rgb=preprocess_uint8(wrist, c.mae.image_size),
                arm_state=np.zeros((1, c.seq_len, 6), np.float32),
                gripper_state=np.tile(np.float32([0, 1]), (1, c.seq_len, 1)))   # one-hot, [0,1] = open
    out["arm_action_preds"]        # (1, 10, 1, 6); gripper_action_preds (1, 10, 1) logits; obs_preds ...

    # Back to PyTorch: {'state_dict': ...} in the official layout and dtypes.
    to_torch("checkpoints/gr1_abcd", "gr1_abcd.pt", clip="ViT-B-32.pt")

What the import does
--------------------
1. Reads the policy file and, when given, the MAE (`--mae`) and CLIP (`--clip`)
   files (`torch_files`: payload or bare state_dicts, 'module.'/'model.'
   prefixes, TorchScript or HF CLIP). An explicit --mae/--clip replaces the
   policy file's own model_mae.* / model_clip.* sub-tree.
2. Reads every size the tensors tell (widths, depths, seq_len, latents,
   vocabulary, context length, action_chunk, which modules exist) and checks it
   against the config; head counts, activations and eps come from the config
   only. All mismatches are reported together, with the --config overrides that
   would fit. Keys of modules the config switches off (e.g. the decoder for the
   act_only variant; official snapshots always contain all of them) are dropped
   and listed in the summary.
3. Maps every tensor with the one key table (`official_keys`, strict: see
   `official_state.import_official`); fp16/bf16 tensors become float32 exactly.
4. Records what the Flax parameters cannot hold in the stored config under
   "conversion": the original torch dtypes (OpenAI CLIP weights saved from GPU
   are fp16), whether the file had GPT-2's attn.bias / attn.masked_bias buffers,
   CLIP's logit_scale, the source files. `to_torch` uses it to write the
   original dtypes and buffers back, so official -> checkpoint -> official is
   bit-identical tensor by tensor (model_clip.visual.* excepted: GR-1 does not
   use the vision tower; pass the CLIP file again to `to_torch(clip=...)` to
   include it, which the official class needs for a strict load).

GR1-Training checkpoints carry `transformer.wpe.weight`, a learned absolute
position table the official architecture does not have; they are refused with
a message naming the key.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import time
import warnings
from typing import Any, Mapping

import numpy as np

from gr1_jax.conversion.torch_files import (CheckpointReadError, LazyTensor, LoadedFile, import_torch, read_clip,
                                            read_mae, read_policy)
from gr1_jax.model_config import GR1Config
from gr1_jax.user_errors import UserError

CONVERSION = "conversion"
OFFICIAL_N_CTX = 1024          # GPT2Config default n_ctx: size of the official attn.bias buffer
GPT2_MASKED_BIAS = -1e4


class ConversionError(UserError, ValueError):
  """The inputs cannot be converted; the message names the file(s) and every mismatch."""


@dataclasses.dataclass
class Conversion:
  config: GR1Config
  params: dict                   # nested numpy float32, = nnx.state(GR1(config), nnx.Param) as a pure dict
  metadata: dict                 # JSON-able, stored as config["conversion"]
  summary: list                  # human-readable lines


# --------------------------------------------------------------------------- config handling

def as_model_config(config: Any = None) -> GR1Config:
  """None (official), a GR1Config, or a mapping (a ConfigDict / dict of GR1Config fields, or one with 'model')."""
  if config is None:
    return GR1Config()
  if isinstance(config, GR1Config):
    return config
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  if isinstance(config, Mapping) and "model" in config and isinstance(config["model"], Mapping):
    config = config["model"]
  return GR1Config.from_dict(config)


def _field(config: GR1Config, name: str):
  value = config
  for part in name.split("."):
    value = getattr(value, part)
  return value


def _count(keys, pattern: str) -> int | None:
  regex = re.compile(pattern)
  found = {int(m.group(1)) for k in keys if (m := regex.match(k))}
  return max(found) + 1 if found else None


# field -> (key, shape -> value) ; layer counts are added by `infer_sizes`.
_SHAPE_RULES = (
    ("hidden_size", "embed_ln.weight", lambda s: s[0]),
    ("mlp_dim", "transformer.h.0.mlp.c_fc.weight", lambda s: s[1]),
    ("seq_len", "embed_timestep.weight", lambda s: s[0]),
    ("arm_dim", "embed_arm_state.weight", lambda s: s[1]),
    ("resampler.num_latents", "perceiver_resampler.latents", lambda s: s[0]),
    ("mae.width", "model_mae.cls_token", lambda s: s[-1]),
    ("mae.mlp_dim", "model_mae.blocks.0.mlp.fc1.weight", lambda s: s[0]),
    ("mae.patch_size", "model_mae.patch_embed.proj.weight", lambda s: s[-1]),
    ("clip.vocab_size", "model_clip.token_embedding.weight", lambda s: s[0]),
    ("clip.width", "model_clip.token_embedding.weight", lambda s: s[1]),
    ("clip.context_length", "model_clip.positional_embedding", lambda s: s[0]),
    ("clip.embed_dim", "model_clip.text_projection", lambda s: s[1]),
)
_LAYER_RULES = (
    ("num_layers", r"^transformer\.h\.(\d+)\.ln_1\.weight$", "transformer.h.N"),
    ("resampler.depth", r"^perceiver_resampler\.layers\.(\d+)\.0\.to_q\.weight$", "perceiver_resampler.layers.N"),
    ("decoder.depth", r"^decoder_blocks\.(\d+)\.norm1\.weight$", "decoder_blocks.N"),
    ("mae.depth", r"^model_mae\.blocks\.(\d+)\.norm1\.weight$", "model_mae.blocks.N"),
    ("clip.layers", r"^model_clip\.transformer\.resblocks\.(\d+)\.ln_1\.weight$", "model_clip.transformer.resblocks.N"),
)
# A config flag and the key whose presence shows the module exists.
_FLAG_KEYS = (
    ("use_state", "embed_arm_state.weight"),
    ("use_hand_rgb", "embed_hand_img.weight"),
    ("act_pred", "action_queries.weight"),
    ("fwd_pred", "obs_queries.weight"),
    ("fwd_pred_hand", "obs_hand_queries.weight"),
)


def infer_sizes(tensors: Mapping[str, LazyTensor]) -> dict[str, tuple[Any, str]]:
  """{config field: (value, evidence)} for every size the shapes determine."""
  out: dict[str, tuple[Any, str]] = {}

  def shape(key):
    return tuple(tensors[key].shape)

  for name, key, fn in _SHAPE_RULES:
    if key in tensors:
      try:
        out[name] = (int(fn(shape(key))), f"{key} {list(shape(key))}")
      except IndexError:
        pass          # a mis-shaped tensor: import_official reports it with the expected shape
  for name, pattern, label in _LAYER_RULES:
    n = _count(tensors, pattern)
    if n is not None:
      out[name] = (n, f"{label} for N < {n}")
  if "model_mae.pos_embed" in tensors and "mae.patch_size" in out:
    n_pos = shape("model_mae.pos_embed")[-2] - 1
    grid = int(round(n_pos ** 0.5))
    if grid * grid == n_pos:
      out["mae.image_size"] = (grid * out["mae.patch_size"][0],
                               f"model_mae.pos_embed {list(shape('model_mae.pos_embed'))}")
  key = "action_chunk_queries.weight"
  out["action_chunk"] = (shape(key)[0], f"{key} {list(shape(key))}") if key in tensors else \
      (1, "no action_chunk_queries.weight")
  key = "perceiver_resampler.layers.0.0.to_q.weight"
  if key in tensors:
    out["resampler.heads*resampler.dim_head"] = (shape(key)[0], f"{key} {list(shape(key))}")
  key, width = "perceiver_resampler.layers.0.1.1.weight", out.get("mae.width", (None,))[0]
  if key in tensors and width:
    out["resampler.ff_mult"] = (shape(key)[0] / width, f"{key} {list(shape(key))} / mae.width {width}")
  key, hidden = "decoder_blocks.0.mlp.fc1.weight", out.get("hidden_size", (None,))[0]
  if key in tensors and hidden:
    out["decoder.mlp_ratio"] = (shape(key)[0] / hidden, f"{key} {list(shape(key))} / hidden_size {hidden}")
  return out


def _config_value(config: GR1Config, name: str):
  if name == "resampler.heads*resampler.dim_head":
    return config.resampler.heads * config.resampler.dim_head
  return _field(config, name)


def _fmt(value):
  return int(value) if isinstance(value, float) and value.is_integer() else value


def check_config(config: GR1Config, tensors: Mapping[str, LazyTensor], origin: Mapping[str, str],
                 hf_text_config: Mapping | None = None) -> list[str]:
  """Every disagreement between the config and what the tensors tell, as sentences."""
  problems, overrides = [], []
  for name, (value, evidence) in infer_sizes(tensors).items():
    want = _config_value(config, name)
    if want != value:
      key = evidence.split(" ")[0]
      where = os.path.basename(origin.get(key, origin.get("policy", "?")))
      problems.append(f"{name} is {_fmt(want)} in the config but {_fmt(value)} in {where} ({evidence})")
      if "*" in name:
        overrides.append(f"--config.resampler.heads/--config.resampler.dim_head with a product of {value}")
      else:
        overrides.append(f"--config.{name}={_fmt(value)}")
  policy = os.path.basename(origin.get("policy", "the policy file"))
  for flag, key in _FLAG_KEYS:
    if getattr(config, flag) and key not in tensors:
      problems.append(f"{flag}=True in the config but {policy} has no {key}")
      overrides.append(f"--config.{flag}=False")
  if hf_text_config:
    for hf_name, name in (("num_attention_heads", "clip.heads"), ("layer_norm_eps", "clip.ln_eps")):
      if hf_name in hf_text_config and hf_text_config[hf_name] != _field(config, name):
        problems.append(f"{name} is {_field(config, name)} in the config but {hf_text_config[hf_name]} in "
                        f"{os.path.basename(origin.get('clip', '?'))}/config.json ({hf_name})")
        overrides.append(f"--config.{name}={hf_text_config[hf_name]}")
  if problems:
    problems.append("to convert it, pick a matching --config variant or override " + " ".join(overrides) +
                    " (head counts, activations and eps cannot be read from shapes and stay as configured)")
  return problems


# --------------------------------------------------------------------------- reading and merging

def _gather(policy: str, mae: str | None, clip: str | None, trust_pickle: bool):
  files: dict[str, LoadedFile] = {"policy": read_policy(policy, trust_pickle=trust_pickle)}
  tensors = dict(files["policy"].tensors)
  origin = {k: files["policy"].path for k in tensors}
  origin["policy"] = files["policy"].path
  notes = [f"{os.path.basename(policy)}: {n}" for n in files["policy"].notes]
  for role, path, reader, prefix in (("mae", mae, read_mae, "model_mae."), ("clip", clip, read_clip, "model_clip.")):
    if path is None:
      continue
    files[role] = loaded = reader(path, trust_pickle=trust_pickle)
    replaced = [k for k in tensors if k.startswith(prefix)]
    if replaced:
      notes.append(f"{prefix}* from {os.path.basename(path)} replaces the {len(replaced)} keys in "
                   f"{os.path.basename(policy)}")
      for k in replaced:
        del tensors[k], origin[k]
    tensors.update(loaded.tensors)
    origin.update({k: loaded.path for k in loaded.tensors})
    origin[role] = loaded.path
    notes += [f"{os.path.basename(os.path.normpath(path))}: {n}" for n in loaded.notes]
  return files, tensors, origin, notes


def _gpt2_buffers(tensors: dict, origin: Mapping, problems: list) -> dict | None:
  """Validates and describes GPT-2's causal-mask buffers (they are rebuilt on export)."""
  bias_keys = sorted(k for k in tensors if re.match(r"^transformer\.h\.\d+\.attn\.bias$", k))
  masked = sorted(k for k in tensors if re.match(r"^transformer\.h\.\d+\.attn\.masked_bias$", k))
  if not bias_keys and not masked:
    return None
  info: dict[str, Any] = {"layers_with_bias": len(bias_keys), "layers_with_masked_bias": len(masked)}
  if bias_keys:
    first = tensors[bias_keys[0]]
    n = first.shape[-1]
    info.update(n_ctx=int(n), bias_dtype=first.dtype)
    tril = np.tril(np.ones((n, n), bool))
    for key in bias_keys:
      value = np.asarray(tensors[key])
      if value.shape != (1, 1, n, n) or not np.array_equal(value.reshape(n, n) != 0, tril):
        problems.append(f"{key} in {os.path.basename(origin[key])} is not GPT-2's lower-triangular causal "
                        f"mask of shape [1, 1, {n}, {n}] (shape {list(value.shape)}); this model is causal")
  if masked:
    first = tensors[masked[0]]
    info.update(masked_bias=float(np.asarray(first, np.float64)), masked_bias_dtype=first.dtype)
  return info


def _disabled_module_keys(config: GR1Config) -> set[str]:
  from gr1_jax.conversion.official_keys import official_key_map
  full = config.replace(use_state=True, use_hand_rgb=True, act_pred=True, fwd_pred=True, fwd_pred_hand=True)
  keys_full = {e.torch_key for e in official_key_map(full)} | {"decoder_pos_embed"}
  keys_now = {e.torch_key for e in official_key_map(config)} | ({"decoder_pos_embed"} if config.fwd_pred else set())
  return keys_full - keys_now


def _source_label(origin: Mapping) -> str:
  return " + ".join(f"{origin[r]}" for r in ("policy", "mae", "clip") if r in origin)


def convert_official(policy: str, mae: str | None = None, clip: str | None = None, config: Any = None, *,
                     trust_pickle: bool = False) -> Conversion:
  """Reads, checks and maps official-layout files; returns the parameters and what to store with them."""
  from gr1_jax.conversion.official_keys import official_key_map

  start = time.time()
  config = as_model_config(config)
  files, tensors, origin, notes = _gather(policy, mae, clip, trust_pickle)
  label = _source_label(origin)
  pname = os.path.basename(policy)
  missing_groups = []
  if not any(k.startswith("model_mae.") for k in tensors):
    missing_groups.append(f"{pname} has no model_mae.* weights: pass --mae mae_pretrain_vit_base.pth")
  if not any(k.startswith("model_clip.") for k in tensors):
    missing_groups.append(f"{pname} has no model_clip.* weights: pass --clip with OpenAI CLIP ViT-B/32 "
                          "(the clip.load .pt file or a state_dict) or a Hugging Face CLIP directory")
  if missing_groups:
    raise ConversionError(f"{label}: the frozen encoders are incomplete: " + "; ".join(missing_groups) + ".")

  hf_config = files["clip"].info.get("hf_text_config") if "clip" in files else None
  problems = check_config(config, tensors, origin, hf_config)
  if problems:
    raise ConversionError(f"{label}: the tensors do not match the model config: " + "; ".join(problems) + ".")

  dropped = sorted(k for k in _disabled_module_keys(config) if k in tensors)
  for k in dropped:
    del tensors[k]
  entries = official_key_map(config)
  mapped = {e.torch_key for e in entries}
  problems = []
  buffers = _gpt2_buffers(tensors, origin, problems)
  non_float = [f"{k} ({tensors[k].dtype})" for k in sorted(mapped) if k in tensors and not tensors[k].is_floating]
  if non_float:
    problems.append("parameters must be floating point, found " + ", ".join(non_float[:6]))
  if problems:
    raise ConversionError(f"{label}: " + "; ".join(problems) + ".")

  from gr1_jax.conversion.official_state import IGNORED_KEY_RULES, import_official  # imports jax
  params = _owned(import_official(tensors, config, source=label, require_encoders=True))

  torch_dtypes = {k: tensors[k].dtype for k in sorted(mapped | {"decoder_pos_embed"})
                  if k in tensors and tensors[k].dtype != "float32"}
  logit = tensors.get("model_clip.logit_scale")
  metadata = {
      "format": 1,
      "sources": {role: os.path.abspath(f.path) for role, f in files.items()},
      "payload_key": files["policy"].payload_key,
      "torch_dtypes": torch_dtypes,
      "gpt2_buffers": buffers,
      "clip_logit_scale": None if logit is None else
      {"value": float(np.asarray(logit, np.float64)), "dtype": logit.dtype},
      "decoder_pos_embed": "decoder_pos_embed" in tensors,
  }
  ignored: dict[str, int] = {}
  for k in tensors:
    if k not in mapped:
      for rule, why in IGNORED_KEY_RULES:
        if rule.search(k):
          ignored[why] = ignored.get(why, 0) + 1
          break
  summary = _import_summary(config, params, files, metadata, ignored, dropped, notes, time.time() - start)
  return Conversion(config, params, metadata, summary)


def _owned(tree):
  """Copies arrays that still view the (memory-mapped) input file, so the mapping is released with it."""
  if isinstance(tree, Mapping):
    return {k: _owned(v) for k, v in tree.items()}
  return tree if tree.flags.owndata else np.array(tree, copy=True)


def convert_official_checkpoint(policy: str, mae: str | None = None, clip: str | None = None,
                                config: Any = None, *, trust_pickle: bool = False) -> tuple[GR1Config, dict]:
  """(GR1Config, nested numpy params) from official-layout PyTorch files; see the module docstring."""
  result = convert_official(policy, mae, clip, config, trust_pickle=trust_pickle)
  return result.config, result.params


def _count_params(tree) -> int:
  if isinstance(tree, Mapping):
    return sum(_count_params(v) for v in tree.values())
  return int(np.size(tree))


def _import_summary(config, params, files, metadata, ignored, dropped, notes, seconds) -> list[str]:
  lines = []
  for role, f in files.items():
    payload = f"payload['{f.payload_key}']" if f.payload_key else ("bare state_dict" if f.kind == "torch" else f.kind)
    if f.other_payload_keys:
      payload += f", other payload entries ignored: {', '.join(f.other_payload_keys[:6])}"
    lines.append(f"read {role:6s} {f.path} ({f.kind}, {payload}, {len(f.tensors)} tensors)")
  total = _count_params(params)
  frozen = _count_params(params.get("model_clip", {})) + _count_params(params.get("model_mae", {}))
  lines.append(f"model: hidden {config.hidden_size}, {config.num_layers} layers x {config.num_heads} heads, "
               f"seq_len {config.seq_len}, hand={config.use_hand_rgb} state={config.use_state} "
               f"act={config.act_pred} fwd={config.fwd_pred} fwd_hand={config.fwd_pred_hand} "
               f"chunk={config.action_chunk}")
  lines.append(f"parameters: {total:,} ({total - frozen:,} trainable, {frozen:,} in the frozen CLIP text + MAE)")
  by_dtype: dict[str, int] = {}
  for dtype in metadata["torch_dtypes"].values():
    by_dtype[dtype] = by_dtype.get(dtype, 0) + 1
  if by_dtype:
    lines.append("upcast to float32 (original dtypes recorded for export): " +
                 ", ".join(f"{n} {d}" for d, n in sorted(by_dtype.items())))
  buffers = metadata["gpt2_buffers"]
  lines.append("GPT-2 attn.bias/masked_bias buffers: " +
               (f"present (n_ctx {buffers.get('n_ctx')}, {buffers.get('bias_dtype')}), rebuilt on export"
                if buffers else "absent"))
  for why, n in ignored.items():
    lines.append(f"ignored {n} keys: {why}")
  if dropped:
    lines.append(f"dropped {len(dropped)} keys of modules this config switches off: {dropped[0]}, ...")
  lines += notes
  lines.append(f"converted in {seconds:.1f} s")
  return lines


# --------------------------------------------------------------------------- writing directories

def _temp_sibling(out: str, suffix: str = "") -> str:
  parent = os.path.dirname(out) or "."
  os.makedirs(parent, exist_ok=True)
  return tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent) if not suffix else \
      tempfile.mkstemp(prefix=f".{os.path.basename(out)}.tmp-", suffix=suffix, dir=parent)[1]


def write_checkpoint(conversion: Conversion, out: str, *, overwrite: bool = False) -> str:
  """Saves a Conversion as a model checkpoint directory: into a temp sibling, then one rename."""
  from gr1_jax.model_checkpoint import save_model_checkpoint
  return _write_directory(out, overwrite, lambda tmp: save_model_checkpoint(
      tmp, conversion.params, conversion.config, extra_config={CONVERSION: conversion.metadata}))


def _write_directory(out: str, overwrite: bool, write) -> str:
  """write(tmp) fills a temp sibling of `out`, which then replaces `out` in one rename."""
  out = os.path.abspath(out)
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite")
  tmp = _temp_sibling(out)
  try:
    write(tmp)
    if os.path.exists(out):
      old = _temp_sibling(out)
      os.rmdir(old)
      os.rename(out, old)
      os.rename(tmp, out)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


def release(checkpoint: str, out: str, *, step: int | None = None, overwrite: bool = False) -> list[str]:
  """One step of a training run as a model-only checkpoint directory, for shipping a trained
  policy: the config (the run's whole config, for provenance), params and norm_stats under the
  same step number; no optimizer or data-iterator state. GR1Policy.from_checkpoint, evaluate,
  visualize, to-torch and init_from read it like the run's own checkpoint."""
  from gr1_jax.model_checkpoint import load_config, load_norm_stats, load_params, locate, save_model_checkpoint
  directory, step = locate(checkpoint, step)
  config, stored = load_config(directory, step)
  params = load_params(directory, config, step=step)
  norm_stats = load_norm_stats(directory, step)
  extra = {k: v for k, v in stored.items() if k != "model"}
  _write_directory(out, overwrite, lambda tmp: save_model_checkpoint(
      tmp, params, config, step=step, extra_config=extra, norm_stats=norm_stats))
  return [f"step {step} of {directory}: config, params ({_count_params(params):,} values)"
          + (", norm_stats" if norm_stats is not None else "") + " (no optimizer or data-iterator state)",
          f"wrote {os.path.abspath(out)} ({_du(out) / 1e6:.1f} MB)"]


def from_official(policy: str, out: str, mae: str | None = None, clip: str | None = None, config: Any = None, *,
                  overwrite: bool = False, trust_pickle: bool = False) -> Conversion:
  """convert_official + write_checkpoint; nothing is created unless everything succeeds."""
  out = os.path.abspath(out)
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite")
  conversion = convert_official(policy, mae, clip, config, trust_pickle=trust_pickle)
  write_checkpoint(conversion, out, overwrite=overwrite)
  conversion.summary.append(f"wrote {out} ({_du(out) / 1e6:.1f} MB)")
  conversion.params = None      # release the arrays (and any memory-mapped file behind them)
  return conversion


def _du(path: str) -> int:
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)


# --------------------------------------------------------------------------- export

def export_torch_state_dict(directory: str, *, clip: str | None = None, gpt2_buffers: str = "auto",
                            restore_dtypes: bool = True, step: int | None = None) -> tuple[dict, list[str]]:
  """A checkpoint directory -> (official-layout {key: torch.Tensor}, summary lines).

  gpt2_buffers: 'auto' writes them when the imported file had them, and for
  checkpoints that were not imported (trained here) writes the transformers
  4.5.1 layout the official class expects (uint8 tril [1,1,1024,1024] and -1e4);
  'yes' / 'no' force it. restore_dtypes casts tensors back to the dtypes recorded
  at import (fp16 CLIP). clip: an OpenAI/HF CLIP source whose vision tower and
  logit_scale are added (the official class holds the whole CLIP model).
  """
  import jax

  from gr1_jax.conversion.official_state import export_official
  from gr1_jax.model_checkpoint import load_config, load_params
  torch = import_torch("writing PyTorch checkpoints")
  if gpt2_buffers not in ("auto", "yes", "no"):
    raise ValueError(f"gpt2_buffers must be auto, yes or no, got {gpt2_buffers!r}")
  config, stored = load_config(directory, step)
  if config.blind:
    raise ValueError(f"{directory}: model.blind=True (the no-vision baseline) has no counterpart in "
                     "the official class, which always looks at its images; it cannot be exported")
  meta = stored.get(CONVERSION) or {}
  params = jax.tree.map(np.asarray, load_params(directory, config, step=step))
  state = export_official(params, config, include_encoders=True)
  del params
  lines = []
  dtypes = meta.get("torch_dtypes", {}) if restore_dtypes else {}
  out = {}
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*not writable.*")
    for key in list(state):
      value = torch.from_numpy(state.pop(key))
      dtype = dtypes.get(key)
      if dtype and dtype != "float32":
        value = value.to(getattr(torch, dtype))
      out[key] = value
  if dtypes:
    lines.append(f"restored {sum(1 for k in dtypes if k in out)} tensors to their recorded dtypes")
  logit = meta.get("clip_logit_scale")
  if logit and "model_clip.logit_scale" in out:
    out["model_clip.logit_scale"] = torch.tensor(logit["value"], dtype=getattr(torch, logit["dtype"]))
  if gpt2_buffers == "auto":
    buffers = meta["gpt2_buffers"] if "gpt2_buffers" in meta else \
        {"n_ctx": OFFICIAL_N_CTX, "bias_dtype": "uint8", "masked_bias": GPT2_MASKED_BIAS,
         "masked_bias_dtype": "float32", "layers_with_bias": 1, "layers_with_masked_bias": 1}
  elif gpt2_buffers == "yes":
    buffers = {"n_ctx": OFFICIAL_N_CTX, "bias_dtype": "uint8", "masked_bias": GPT2_MASKED_BIAS,
               "masked_bias_dtype": "float32", "layers_with_bias": 1, "layers_with_masked_bias": 1,
               **(meta.get("gpt2_buffers") or {})}
  else:
    buffers = None
  if buffers:
    n = buffers.get("n_ctx", OFFICIAL_N_CTX)
    tril = torch.tril(torch.ones((n, n), dtype=getattr(torch, buffers.get("bias_dtype", "uint8")))).view(1, 1, n, n)
    for i in range(config.num_layers):
      if buffers.get("layers_with_bias"):
        out[f"transformer.h.{i}.attn.bias"] = tril.clone()
      if buffers.get("layers_with_masked_bias"):
        out[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(
            buffers.get("masked_bias", GPT2_MASKED_BIAS),
            dtype=getattr(torch, buffers.get("masked_bias_dtype", "float32")))
    if config.seq_len * _tokens_per_step(config) > n:
      lines.append(f"warning: {config.seq_len} x {_tokens_per_step(config)} tokens exceed GPT-2's n_ctx={n}; "
                   "the official torch model cannot run this window")
    lines.append(f"wrote GPT-2 attn.bias/masked_bias buffers (n_ctx {n})")
  if clip:
    extra = {k: v for k, v in read_clip(clip).tensors.items()
             if k.startswith("model_clip.visual.") or k == "model_clip.logit_scale"}
    for key, lazy in extra.items():
      out[key] = lazy.to_torch()
    lines.append(f"added {len(extra)} CLIP vision-tower/logit_scale tensors from {clip}")
  return out, lines


def _tokens_per_step(config: GR1Config) -> int:
  from gr1_jax.modules.token_layout import TokenLayout
  return TokenLayout.from_config(config).tokens_per_step


def to_torch(directory: str, out: str, *, fmt: str = "pt", clip: str | None = None, gpt2_buffers: str = "auto",
             restore_dtypes: bool = True, overwrite: bool = False, step: int | None = None) -> list[str]:
  """Writes a checkpoint directory as an official-layout file: {'state_dict': ...} (.pt) or flat safetensors."""
  torch = import_torch("writing PyTorch checkpoints")
  if fmt not in ("pt", "safetensors"):
    raise ValueError(f"format must be pt or safetensors, got {fmt!r}")
  out = os.path.abspath(out)
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite")
  state, lines = export_torch_state_dict(directory, clip=clip, gpt2_buffers=gpt2_buffers,
                                         restore_dtypes=restore_dtypes, step=step)
  tmp = _temp_sibling(out, suffix=".part")
  try:
    if fmt == "pt":
      torch.save({"state_dict": state}, tmp)
    else:
      from safetensors.torch import save_file
      save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata={"format": "pt"})
    os.replace(tmp, out)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  n = sum(v.numel() for v in state.values())
  lines.insert(0, f"read {os.path.abspath(directory)}")
  lines.append(f"wrote {out} ({fmt}, {len(state)} tensors, {n:,} values, {os.path.getsize(out) / 1e6:.1f} MB)")
  return lines
