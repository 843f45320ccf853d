"""GR-1 model hyper-parameters as frozen (hashable, jit-static) dataclasses.

Defaults are the official configuration (gr1.md §1.1; the official repo's
logs/configs.json), so `GR1Config()` is the released model. Experiments build
it from the `model` field of their ml_collections config with `from_dict`,
which rejects unknown keys and inconsistent sizes by name.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
  """OpenAI CLIP ViT-B/32 text tower."""
  vocab_size: int = 49408
  context_length: int = 77
  width: int = 512
  layers: int = 12
  heads: int = 8
  embed_dim: int = 512          # text_projection output = GR-1's lang_feat_dim
  ln_eps: float = 1e-5


@dataclasses.dataclass(frozen=True)
class MAEConfig:
  """MAE ViT-B/16 image encoder (timm/DINO ViT)."""
  image_size: int = 224
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  heads: int = 12
  mlp_dim: int = 3072
  ln_eps: float = 1e-6


@dataclasses.dataclass(frozen=True)
class ResamplerConfig:
  """flamingo-pytorch PerceiverResampler as GR-1 builds it."""
  depth: int = 3
  dim_head: int = 128
  heads: int = 4
  num_latents: int = 9
  ff_mult: int = 4
  ln_eps: float = 1e-5


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """The MAE-style future-frame decoder (2 ViT blocks of 16 heads)."""
  depth: int = 2
  heads: int = 16
  mlp_ratio: int = 4
  ln_eps: float = 1e-5


@dataclasses.dataclass(frozen=True)
class GR1Config:
  """The whole policy: trunk sizes, token layout flags and sub-encoders."""
  hidden_size: int = 384
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 1536
  dropout: float = 0.1           # embedding, attention and residual dropout (GPT-2)
  ln_eps: float = 1e-5
  seq_len: int = 10              # window length = rows of the timestep table
  arm_dim: int = 6
  # Token layout (gr1.md §1.8). Official fine-tuning: all True.
  use_state: bool = True         # False in the pretraining layout
  use_hand_rgb: bool = True
  act_pred: bool = True
  fwd_pred: bool = True
  fwd_pred_hand: bool = True
  action_chunk: int = 1          # >1: GR1-Training's chunked [ACT] queries
  fwd_pred_next_n: int = 3       # target of the [OBS] queries at step t is frame t+3
  norm_pix_loss: bool = True     # per-patch standardised video targets
  dtype: str = "float32"         # compute dtype; parameters stay float32
  # Ablation baseline (not in the official model): both cameras' normalised frames are zeroed
  # before the encoders, in training and acting alike, so the policy sees language and state
  # only. The video targets are untouched. It tells what vision adds (docs/calvin_closed_loop.md).
  blind: bool = False
  clip: CLIPTextConfig = CLIPTextConfig()
  mae: MAEConfig = MAEConfig()
  resampler: ResamplerConfig = ResamplerConfig()
  decoder: DecoderConfig = DecoderConfig()

  def __post_init__(self):
    problems = []
    if self.hidden_size % self.num_heads:
      problems.append(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
    if self.hidden_size % self.decoder.heads:
      problems.append(f"hidden_size={self.hidden_size} is not divisible by decoder.heads={self.decoder.heads}")
    if self.mae.width % self.mae.heads:
      problems.append(f"mae.width={self.mae.width} is not divisible by mae.heads={self.mae.heads}")
    if self.clip.width % self.clip.heads:
      problems.append(f"clip.width={self.clip.width} is not divisible by clip.heads={self.clip.heads}")
    if self.mae.image_size % self.mae.patch_size:
      problems.append(f"mae.image_size={self.mae.image_size} is not a multiple of mae.patch_size={self.mae.patch_size}")
    if self.fwd_pred_hand and not (self.fwd_pred and self.use_hand_rgb):
      problems.append("fwd_pred_hand=True needs fwd_pred=True and use_hand_rgb=True")
    if not (self.act_pred or self.fwd_pred):
      problems.append("at least one of act_pred / fwd_pred must be True (the model would predict nothing)")
    if self.act_pred and not self.use_state:
      problems.append("act_pred=True needs use_state=True (the action is conditioned on the robot state)")
    if self.action_chunk < 1:
      problems.append(f"action_chunk={self.action_chunk} must be >= 1")
    if self.fwd_pred and not 0 < self.fwd_pred_next_n < self.seq_len:
      problems.append(f"fwd_pred_next_n={self.fwd_pred_next_n} must be in [1, seq_len={self.seq_len})")
    if self.dtype not in ("float32", "bfloat16"):
      problems.append(f"dtype={self.dtype!r} must be 'float32' or 'bfloat16'")
    if problems:
      raise ValueError("invalid model config: " + "; ".join(problems))

  @property
  def num_patches(self) -> int:
    return (self.mae.image_size // self.mae.patch_size) ** 2

  @property
  def patch_dim(self) -> int:
    return self.mae.patch_size ** 2 * 3

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "GR1Config":
    return _from_dict(cls, values, "model")

  def replace(self, **changes) -> "GR1Config":
    return dataclasses.replace(self, **changes)


def _from_dict(cls, values: Mapping[str, Any], where: str):
  fields = {f.name: f for f in dataclasses.fields(cls)}
  hints = typing.get_type_hints(cls)
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ValueError(f"unknown key(s) {', '.join(where + '.' + k for k in unknown)}; "
                     f"valid keys: {', '.join(sorted(fields))}")
  kwargs = {}
  for name, value in values.items():
    hint = hints[name]
    if dataclasses.is_dataclass(hint):
      if isinstance(value, hint):
        kwargs[name] = value
      elif isinstance(value, Mapping):
        kwargs[name] = _from_dict(hint, value, f"{where}.{name}")
      else:
        raise ValueError(f"{where}.{name} must be a mapping, got {type(value).__name__}")
    else:
      expected = {"int": int, "float": (int, float), "bool": bool, "str": str}[hint.__name__]
      if isinstance(value, bool) and hint is not bool or not isinstance(value, expected):
        raise ValueError(f"{where}.{name}={value!r} must be of type {hint.__name__}")
      kwargs[name] = float(value) if hint is float else value
  return cls(**kwargs)
