"""The one table that maps official GR-1 state_dict keys to this model's parameters.

Every official tensor corresponds to exactly one Flax parameter through one of
five layout rules:

  copy       same shape, same order
  linear     torch nn.Linear weight [out, in]  <->  Dense kernel [in, out] (transpose)
  conv1d     GPT-2 Conv1D weight, already [in, out]  <->  kernel as-is
  patch_conv Conv2d weight [W, 3, p, p] (OIHW)  <->  patch-matmul kernel [(row, col, ch), W]
  reshape    same values, singleton axes differ (mask_token, media_pos_emb)

`official_key_map(config)` lists the entries for a model config (only the
modules that config builds); import and export are both driven by it, so a
round trip official -> Flax -> official is the identity on every tensor.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from gr1_jax.model_config import GR1Config


@dataclasses.dataclass(frozen=True)
class KeyMap:
  torch_key: str
  flax_path: tuple
  rule: str
  torch_shape: tuple | None = None   # only for `reshape`: the official tensor's shape


def _ln(entries, torch_prefix, flax_prefix):
  entries.append(KeyMap(f"{torch_prefix}.weight", flax_prefix + ("scale",), "copy"))
  entries.append(KeyMap(f"{torch_prefix}.bias", flax_prefix + ("bias",), "copy"))


def _dense(entries, torch_prefix, flax_prefix, rule="linear", bias=True):
  entries.append(KeyMap(f"{torch_prefix}.weight", flax_prefix + ("kernel",), rule))
  if bias:
    entries.append(KeyMap(f"{torch_prefix}.bias", flax_prefix + ("bias",), "copy"))


def _vit_block(entries, t, f):
  """timm/DINO ViT block naming (MAE encoder and GR-1's decoder blocks)."""
  _ln(entries, f"{t}.norm1", f + ("ln_1",))
  _dense(entries, f"{t}.attn.qkv", f + ("attn", "qkv"))
  _dense(entries, f"{t}.attn.proj", f + ("attn", "out"))
  _ln(entries, f"{t}.norm2", f + ("ln_2",))
  _dense(entries, f"{t}.mlp.fc1", f + ("mlp", "fc_in"))
  _dense(entries, f"{t}.mlp.fc2", f + ("mlp", "fc_out"))


def clip_text_key_map(config: GR1Config, prefix: str = "model_clip") -> list[KeyMap]:
  """OpenAI CLIP text-tower naming."""
  e: list[KeyMap] = []
  f = ("model_clip",)
  e.append(KeyMap(f"{prefix}.token_embedding.weight", f + ("token_embedding", "embedding"), "copy"))
  e.append(KeyMap(f"{prefix}.positional_embedding", f + ("positional_embedding",), "copy"))
  e.append(KeyMap(f"{prefix}.text_projection", f + ("text_projection",), "copy"))
  _ln(e, f"{prefix}.ln_final", f + ("ln_final",))
  for i in range(config.clip.layers):
    t, b = f"{prefix}.transformer.resblocks.{i}", f + ("blocks", i)
    _ln(e, f"{t}.ln_1", b + ("ln_1",))
    e.append(KeyMap(f"{t}.attn.in_proj_weight", b + ("attn", "qkv", "kernel"), "linear"))
    e.append(KeyMap(f"{t}.attn.in_proj_bias", b + ("attn", "qkv", "bias"), "copy"))
    _dense(e, f"{t}.attn.out_proj", b + ("attn", "out"))
    _ln(e, f"{t}.ln_2", b + ("ln_2",))
    _dense(e, f"{t}.mlp.c_fc", b + ("mlp", "fc_in"))
    _dense(e, f"{t}.mlp.c_proj", b + ("mlp", "fc_out"))
  return e


def mae_key_map(config: GR1Config, prefix: str = "model_mae") -> list[KeyMap]:
  """timm/DINO ViT naming, as in mae_pretrain_vit_base.pth['model']."""
  e: list[KeyMap] = []
  f = ("model_mae",)
  e.append(KeyMap(f"{prefix}.cls_token", f + ("cls_token",), "copy"))
  e.append(KeyMap(f"{prefix}.pos_embed", f + ("pos_embed",), "copy"))
  e.append(KeyMap(f"{prefix}.patch_embed.proj.weight", f + ("patch_embed", "kernel"), "patch_conv"))
  e.append(KeyMap(f"{prefix}.patch_embed.proj.bias", f + ("patch_embed", "bias"), "copy"))
  for i in range(config.mae.depth):
    _vit_block(e, f"{prefix}.blocks.{i}", f + ("blocks", i))
  _ln(e, f"{prefix}.norm", f + ("norm",))
  return e


def policy_key_map(config: GR1Config) -> list[KeyMap]:
  """GR-1's own parameters (everything but the frozen encoders)."""
  d = config.hidden_size
  e: list[KeyMap] = []
  # GPT-2 trunk (Conv1D weights are [in, out]).
  e.append(KeyMap("transformer.wte.weight", ("transformer", "wte"), "copy"))
  for i in range(config.num_layers):
    t, f = f"transformer.h.{i}", ("transformer", "h", i)
    _ln(e, f"{t}.ln_1", f + ("ln_1",))
    _dense(e, f"{t}.attn.c_attn", f + ("attn", "qkv"), "conv1d")
    _dense(e, f"{t}.attn.c_proj", f + ("attn", "out"), "conv1d")
    _ln(e, f"{t}.ln_2", f + ("ln_2",))
    _dense(e, f"{t}.mlp.c_fc", f + ("mlp", "fc_in"), "conv1d")
    _dense(e, f"{t}.mlp.c_proj", f + ("mlp", "fc_out"), "conv1d")
  _ln(e, "transformer.ln_f", ("transformer", "ln_f"))
  # Perceiver resampler (flamingo-pytorch naming, bias-free linears).
  r = ("perceiver_resampler",)
  e.append(KeyMap("perceiver_resampler.latents", r + ("latents",), "copy"))
  e.append(KeyMap("perceiver_resampler.media_pos_emb", r + ("media_pos_emb",), "reshape",
                  (1, 1, config.mae.width)))
  for i in range(config.resampler.depth):
    t, f = f"perceiver_resampler.layers.{i}", r + ("layers", i)
    _ln(e, f"{t}.0.norm_media", f + ("attn", "norm_media"))
    _ln(e, f"{t}.0.norm_latents", f + ("attn", "norm_latents"))
    for name in ("to_q", "to_kv", "to_out"):
      _dense(e, f"{t}.0.{name}", f + ("attn", name), bias=False)
    _ln(e, f"{t}.1.0", f + ("ff", "norm"))
    _dense(e, f"{t}.1.1", f + ("ff", "fc_in"), bias=False)
    _dense(e, f"{t}.1.3", f + ("ff", "fc_out"), bias=False)
  _ln(e, "perceiver_resampler.norm", r + ("norm",))
  # Token embeddings.
  names = ["embed_lang", "embed_img", "embed_patch"]
  if config.use_hand_rgb:
    names += ["embed_hand_img", "embed_hand_patch"]
  if config.use_state:
    names += ["embed_arm_state", "embed_gripper_state", "embed_state"]
  for name in names:
    _dense(e, name, (name,))
  e.append(KeyMap("embed_timestep.weight", ("embed_timestep",), "copy"))
  _ln(e, "embed_ln", ("embed_ln",))
  # Heads.
  if config.act_pred:
    e.append(KeyMap("action_queries.weight", ("action_queries",), "copy"))
    if config.action_chunk > 1:
      e.append(KeyMap("action_chunk_queries.weight", ("action_chunk_queries",), "copy"))
    for i in range(2):
      _dense(e, f"pred_act_mlps.{i}", ("action_head", "pred_act_mlps", i))
    _dense(e, "pred_arm_act", ("action_head", "pred_arm_act"))
    _dense(e, "pred_gripper_act", ("action_head", "pred_gripper_act"))
  if config.fwd_pred:
    e.append(KeyMap("obs_queries.weight", ("obs_queries",), "copy"))
    if config.fwd_pred_hand:
      e.append(KeyMap("obs_hand_queries.weight", ("obs_hand_queries",), "copy"))
    e.append(KeyMap("mask_token", ("decoder", "mask_token"), "reshape", (1, 1, 1, d)))
    _dense(e, "decoder_embed", ("decoder", "decoder_embed"))
    for i in range(config.decoder.depth):
      _vit_block(e, f"decoder_blocks.{i}", ("decoder", "decoder_blocks", i))
    _ln(e, "decoder_norm", ("decoder", "decoder_norm"))
    _dense(e, "decoder_pred", ("decoder", "decoder_pred"))
  return e


def official_key_map(config: GR1Config) -> list[KeyMap]:
  return policy_key_map(config) + mae_key_map(config) + clip_text_key_map(config)


def torch_to_flax(value: np.ndarray, rule: str, flax_shape: tuple) -> np.ndarray:
  if rule in ("copy", "conv1d"):
    out = value
  elif rule == "linear":
    out = value.T
  elif rule == "patch_conv":
    out = value.transpose(2, 3, 1, 0).reshape(-1, value.shape[0])
  elif rule == "reshape":
    out = value.reshape(flax_shape)
  else:
    raise ValueError(f"unknown layout rule {rule!r}")
  if out.shape != tuple(flax_shape):
    raise ValueError(f"shape {value.shape} maps to {out.shape}, expected {tuple(flax_shape)}")
  return np.ascontiguousarray(out)


def flax_to_torch(value: np.ndarray, entry: KeyMap, patch_size: int) -> np.ndarray:
  rule = entry.rule
  if rule in ("copy", "conv1d"):
    out = value
  elif rule == "linear":
    out = value.T
  elif rule == "patch_conv":
    width = value.shape[1]
    out = value.reshape(patch_size, patch_size, 3, width).transpose(3, 2, 0, 1)
  elif rule == "reshape":
    out = value.reshape(entry.torch_shape)
  else:
    raise ValueError(f"unknown layout rule {rule!r}")
  return np.ascontiguousarray(out)
