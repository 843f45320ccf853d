"""Reading PyTorch / Hugging Face checkpoint files into lazily converted state_dicts.

torch is imported only when a torch file is actually read (it is an optional
dependency: requirements-torch.txt). Every reader returns a `LoadedFile` whose
`tensors` map a key to a `LazyTensor`: the shape and original dtype are known
up front, the values are produced only when asked for, so keys that the
conversion ignores (the CLIP vision tower, GPT-2 buffers) are never read and
each tensor can be freed as soon as it has been converted.

    np.asarray(lazy)     float32 numpy for floating tensors (fp16/bf16 upcast exactly),
                         other dtypes (uint8 masks, int buffers) unchanged
    lazy.to_torch()      a torch tensor in the ORIGINAL dtype (used by export)

Accepted files:
  * torch.save files: `{'state_dict': ...}` payloads (GR-1, Lightning), `{'model': ...}`
    payloads (MAE's mae_pretrain_vit_base.pth) and bare state_dicts. Loaded with
    `torch.load(mmap=True, weights_only=True)`; legacy (non-zip) files fall back to
    a plain load. Pickles that need arbitrary classes are refused unless
    `trust_pickle=True` (only for files you trust: unpickling can run code).
  * TorchScript archives (the OpenAI CLIP files that `clip.load` downloads), read with
    `torch.jit.load(..., map_location='cpu').state_dict()`.
  * `.safetensors` files (what `experiments.convert to-torch --format safetensors`
    writes), read with `safetensors.numpy` (no torch needed).
  * Hugging Face CLIP directories (CLIPModel / CLIPTextModelWithProjection), mapped to
    OpenAI names by `gr1_jax.conversion.hf_clip`.

Every failure is a `CheckpointReadError` naming the file and what was wrong.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import zipfile
from typing import Any, Callable, Mapping

import numpy as np

from gr1_jax.user_errors import UserError


class CheckpointReadError(UserError, ValueError):
  """A file could not be read as a checkpoint; the message names the file and the reason."""


def import_torch(purpose: str):
  try:
    import torch
  except ImportError as exc:  # pragma: no cover - torch is installed in CI
    raise ImportError(f"{purpose} needs PyTorch; install it with `pip install -r requirements-torch.txt` "
                      "(torch==2.13.0, CPU wheel)") from exc
  return torch


def dtype_name(dtype) -> str:
  """'float16', 'bfloat16', 'uint8', ... for torch and numpy dtypes alike."""
  return str(dtype).replace("torch.", "")


@dataclasses.dataclass(eq=False)
class LazyTensor:
  """One tensor of a file: shape and dtype now, values on demand."""
  shape: tuple
  dtype: str
  load: Callable[[], Any]         # -> numpy array or torch tensor in the original dtype

  @property
  def is_floating(self) -> bool:
    return self.dtype in ("float16", "bfloat16", "float32", "float64")

  def __array__(self, dtype=None, copy=None):
    raw = self.load()
    if not isinstance(raw, np.ndarray):            # torch tensor
      raw = raw.detach()
      if raw.dtype.is_floating_point and dtype_name(raw.dtype) != "float32":
        raw = raw.float()
      raw = raw.numpy()
    elif self.is_floating and raw.dtype != np.float32:
      raw = raw.astype(np.float32)
    if dtype is not None and np.dtype(dtype) != raw.dtype:
      raw = raw.astype(dtype)
    return raw

  def to_torch(self):
    torch = import_torch("writing torch files")
    raw = self.load()
    return torch.from_numpy(np.ascontiguousarray(raw)) if isinstance(raw, np.ndarray) else raw.detach()

  @classmethod
  def of(cls, value) -> "LazyTensor":
    return cls(tuple(value.shape), dtype_name(value.dtype), lambda: value)

  def derive(self, fn: Callable[[Any], Any], shape: tuple) -> "LazyTensor":
    """A lazy tensor computed from this one (transposes, reshapes) in the original dtype."""
    return LazyTensor(tuple(shape), self.dtype, lambda: fn(self.load()))


@dataclasses.dataclass
class LoadedFile:
  path: str
  kind: str                                   # 'torch', 'torchscript', 'safetensors', 'huggingface'
  tensors: dict[str, LazyTensor]
  payload_key: str | None = None              # 'state_dict', 'model', ... or None for a bare dict
  other_payload_keys: tuple = ()
  notes: list = dataclasses.field(default_factory=list)
  info: dict = dataclasses.field(default_factory=dict)   # reader-specific facts (e.g. HF config)


# --------------------------------------------------------------------------- generic reading

def _is_torchscript_zip(path: str) -> bool:
  try:
    with zipfile.ZipFile(path) as archive:
      names = archive.namelist()
  except (zipfile.BadZipFile, OSError):
    return False
  return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in names) and \
      any("/code/" in n or n.startswith("code/") for n in names)


def _describe(obj) -> str:
  if isinstance(obj, Mapping):
    keys = list(obj)
    shown = ", ".join(repr(k) for k in keys[:8]) + (", ..." if len(keys) > 8 else "")
    return f"a dict with keys [{shown}]"
  return f"a {type(obj).__name__}"


# torch.save's legacy (non-zip) files start with this number, pickled (torch.serialization.MAGIC_NUMBER).
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _NoGlobalsUnpickler(pickle.Unpickler):
  """Reads plain values only: refuses every class or function, so unpickling runs no code."""

  def find_class(self, module, name):
    raise pickle.UnpicklingError(f"{module}.{name} refused")


def _has_torch_save_layout(path: str) -> bool:
  """True for a zip archive holding a data.pkl (torch.save since 1.6) or a file opening with the
  legacy format's pickled magic number. The safe loader also fails on files that are no
  checkpoint at all (their bytes read as unknown pickle opcodes), and --trust_pickle is no
  advice for those."""
  try:
    with zipfile.ZipFile(path) as archive:
      return any(n == "data.pkl" or n.endswith("/data.pkl") for n in archive.namelist())
  except zipfile.BadZipFile:
    pass
  except OSError:
    return False
  try:
    with open(path, "rb") as f:
      first = _NoGlobalsUnpickler(f).load()
  except Exception:  # noqa: BLE001 - any failure means it does not open like a torch.save file
    return False
  return isinstance(first, int) and first == _TORCH_LEGACY_MAGIC


def _torch_load(path: str, trust_pickle: bool):
  torch = import_torch(f"reading {path}")
  kwargs = dict(map_location="cpu", weights_only=not trust_pickle)
  try:
    try:
      return torch.load(path, mmap=True, **kwargs)
    except RuntimeError as exc:
      if "mmap" not in str(exc):      # legacy (non-zip) serialization cannot be memory-mapped
        raise
      return torch.load(path, **kwargs)
  except Exception as exc:  # noqa: BLE001 - every loader failure becomes one clear error
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    weights_only_refused = "weights_only" in str(exc) or "Weights only load failed" in str(exc)
    if weights_only_refused and _has_torch_save_layout(path):
      raise CheckpointReadError(
          f"{path}: the file holds Python objects besides tensors, which the safe loader "
          f"(torch.load weights_only=True) refuses ({message}). If you trust the file, retry "
          "with --trust_pickle (API: trust_pickle=True); unpickling can run arbitrary code.") from exc
    if weights_only_refused:   # its first line is torch's advice to pass weights_only=False: not ours
      reason, message = "not a PyTorch checkpoint: it has neither torch.save's zip layout nor its legacy header", ""
    elif "central directory" in str(exc) or "zip archive" in str(exc) or isinstance(exc, EOFError):
      reason = "the file is truncated or is not a complete torch.save archive"
    else:
      reason = "torch.load cannot read it, so it is not a PyTorch checkpoint"
    detail = f" ({type(exc).__name__}: {message})" if message else ""
    raise CheckpointReadError(f"{path}: {reason}{detail}. Expected a "
                              "file written by torch.save, a TorchScript archive, a .safetensors "
                              "file or a Hugging Face CLIP directory.") from exc


def _tensor_dict(obj, path: str) -> tuple[dict, str | None, tuple]:
  """Finds the state_dict inside a loaded object -> (state_dict, payload key, other payload keys)."""
  torch = import_torch(f"reading {path}")

  def is_state_dict(d):
    return isinstance(d, Mapping) and len(d) > 0 and all(isinstance(v, torch.Tensor) for v in d.values())

  if is_state_dict(obj):
    return dict(obj), None, ()
  if isinstance(obj, Mapping):
    for key in ("state_dict", "model", "module", "model_state_dict", "state"):
      if key in obj and isinstance(obj[key], Mapping):
        inner = obj[key]
        bad = [k for k, v in inner.items() if not isinstance(v, torch.Tensor)]
        if bad:
          raise CheckpointReadError(
              f"{path}: payload['{key}'] is not a state_dict: {len(bad)} entries are not tensors "
              f"(e.g. {bad[0]!r} is a {type(inner[bad[0]]).__name__}).")
        if not inner:
          raise CheckpointReadError(f"{path}: payload['{key}'] is empty.")
        return dict(inner), key, tuple(sorted(str(k) for k in obj if k != key))
  raise CheckpointReadError(
      f"{path}: not a checkpoint this converter understands: it holds {_describe(obj)}; expected a "
      "state_dict (name -> tensor) or a payload with one under 'state_dict' or 'model'.")


def _lazy_torch_dict(state_dict: Mapping) -> dict[str, LazyTensor]:
  return {k: LazyTensor.of(v) for k, v in state_dict.items()}


def read_safetensors(path: str) -> dict[str, LazyTensor]:
  from safetensors import safe_open
  try:
    handle = safe_open(path, framework="np")
    keys = list(handle.keys())
  except Exception as exc:  # noqa: BLE001
    raise CheckpointReadError(f"{path}: not a readable .safetensors file ({type(exc).__name__}: {exc}).") from exc
  out = {}
  for key in keys:
    view = handle.get_slice(key)
    dtype = {"F16": "float16", "F32": "float32", "BF16": "bfloat16", "F64": "float64", "U8": "uint8",
             "I64": "int64", "I32": "int32", "BOOL": "bool"}.get(view.get_dtype(), view.get_dtype().lower())
    out[key] = LazyTensor(tuple(view.get_shape()), dtype, lambda key=key: handle.get_tensor(key))
  return out


def read_file(path: str, *, trust_pickle: bool = False) -> LoadedFile:
  """Any single checkpoint file -> LoadedFile (payload unwrapped, keys untouched)."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise CheckpointReadError(f"{path}: no such file.")
  if os.path.isdir(path):
    raise CheckpointReadError(f"{path}: is a directory, expected a checkpoint file.")
  if os.path.getsize(path) == 0:
    raise CheckpointReadError(f"{path}: the file is empty.")
  if path.endswith(".safetensors"):
    return LoadedFile(path, "safetensors", read_safetensors(path))
  if _is_torchscript_zip(path):
    torch = import_torch(f"reading {path}")
    try:
      module = torch.jit.load(path, map_location="cpu")
    except Exception as exc:  # noqa: BLE001
      raise CheckpointReadError(f"{path}: looks like a TorchScript archive but torch.jit.load failed "
                                f"({type(exc).__name__}: {exc}).") from exc
    state = module.state_dict()
    del module
    return LoadedFile(path, "torchscript", _lazy_torch_dict(state))
  obj = _torch_load(path, trust_pickle)
  state, payload_key, others = _tensor_dict(obj, path)
  return LoadedFile(path, "torch", _lazy_torch_dict(state), payload_key, others)


def strip_common_prefix(tensors: dict, prefixes=("module.", "model.")) -> tuple[dict, list[str]]:
  """Drops DDP's 'module.' / Lightning's 'model.' when EVERY key carries it (repeatedly)."""
  stripped = []
  for prefix in prefixes:
    if tensors and all(k.startswith(prefix) for k in tensors):
      tensors = {k[len(prefix):]: v for k, v in tensors.items()}
      stripped.append(prefix)
  return tensors, stripped


# --------------------------------------------------------------------------- the three roles

def read_policy(path: str, *, trust_pickle: bool = False) -> LoadedFile:
  """A GR-1 checkpoint (official snapshot, our export, GR-MG/Lightning/DDP variants)."""
  loaded = read_file(path, trust_pickle=trust_pickle)
  loaded.tensors, stripped = strip_common_prefix(loaded.tensors)
  if stripped:
    loaded.notes.append(f"stripped key prefix {''.join(stripped)!r}")
  return loaded


# Keys of a full MAE pre-training checkpoint (with its pixel decoder) that GR-1 never uses.
_MAE_UNUSED = ("decoder_", "mask_token", "head.", "fc_norm.")


def read_mae(path: str, *, trust_pickle: bool = False) -> LoadedFile:
  """MAE ViT encoder weights (mae_pretrain_vit_base.pth: payload['model'], timm naming) -> 'model_mae.*'."""
  loaded = read_file(path, trust_pickle=trust_pickle)
  tensors, stripped = strip_common_prefix(loaded.tensors, ("module.", "model.", "model_mae."))
  dropped = sorted(k for k in tensors if k.startswith(_MAE_UNUSED))
  if dropped:
    loaded.notes.append(f"dropped {len(dropped)} MAE keys GR-1 does not use (decoder/head: {dropped[0]}, ...)")
  loaded.tensors = {f"model_mae.{k}": v for k, v in tensors.items() if k not in dropped}
  if not any(k == "model_mae.cls_token" for k in loaded.tensors):
    raise CheckpointReadError(f"{path}: not an MAE ViT checkpoint: no 'cls_token' among its "
                              f"{len(tensors)} keys (first: {sorted(tensors)[:3]}).")
  return loaded


# Scalars the OpenAI TorchScript archives carry next to the weights (clip.build_model deletes them).
_OPENAI_CLIP_META = ("input_resolution", "context_length", "vocab_size")


def read_clip(path: str, *, trust_pickle: bool = False) -> LoadedFile:
  """OpenAI CLIP (TorchScript or state_dict), a GR-1 file with model_clip.*, or a HF dir -> 'model_clip.*'.

  The vision tower and logit_scale are kept under their OpenAI names (the import
  ignores them; `to-torch --clip` uses them to write a complete official file).
  """
  if os.path.isdir(path):
    from gr1_jax.conversion.hf_clip import read_hf_clip_dir
    loaded = read_hf_clip_dir(path)
  else:
    loaded = read_file(path, trust_pickle=trust_pickle)
    tensors, _ = strip_common_prefix(loaded.tensors, ("module.", "model.", "model_clip."))
    if "token_embedding.weight" not in tensors and "model_clip.token_embedding.weight" in tensors:
      # A whole GR-1 checkpoint (e.g. the original snapshot): take its model_clip.* sub-tree.
      tensors = {k[len("model_clip."):]: v for k, v in tensors.items() if k.startswith("model_clip.")}
      loaded.notes.append("took the model_clip.* sub-tree of a GR-1 checkpoint")
    loaded.tensors = {k: v for k, v in tensors.items() if k not in _OPENAI_CLIP_META}
  if "token_embedding.weight" not in loaded.tensors or "text_projection" not in loaded.tensors:
    raise CheckpointReadError(
        f"{path}: not an OpenAI CLIP checkpoint: token_embedding.weight / text_projection missing "
        f"among its {len(loaded.tensors)} keys (first: {sorted(loaded.tensors)[:3]}).")
  loaded.tensors = {f"model_clip.{k}": v for k, v in loaded.tensors.items()}
  return loaded
