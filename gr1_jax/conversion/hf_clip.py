"""Hugging Face CLIP directory -> OpenAI CLIP state_dict names (lazily, no torch needed).

A directory saved by `CLIPModel.save_pretrained` or
`CLIPTextModelWithProjection.save_pretrained` (config.json + model.safetensors,
possibly sharded with model.safetensors.index.json) is read with
`safetensors.numpy`. Names map as follows (N = layer index):

    text_model.embeddings.token_embedding.weight      token_embedding.weight
    text_model.embeddings.position_embedding.weight   positional_embedding
    text_model.encoder.layers.N.self_attn.{q,k,v}_proj  transformer.resblocks.N.attn.in_proj_{weight,bias}
                                                        (rows q | k | v, concatenated)
    ....self_attn.out_proj                             ....attn.out_proj
    ....layer_norm1 / layer_norm2                      ....ln_1 / ln_2
    ....mlp.fc1 / mlp.fc2                              ....mlp.c_fc / mlp.c_proj
    text_model.final_layer_norm                        ln_final
    text_projection.weight  (nn.Linear [out, in])      text_projection  ([in, out]: transposed)
    logit_scale                                        logit_scale

and, for CLIPModel, the vision tower to OpenAI's `visual.*` (class_embedding,
conv1, positional_embedding, ln_pre (HF: pre_layrnorm), transformer.resblocks,
ln_post, proj = visual_projection.weight transposed), which GR-1 does not use
but `to-torch --clip DIR` writes so the official class loads with strict=True.

Semantics checks: hidden_act must be quick_gelu (OpenAI CLIP's activation, the
one this model implements) and layer_norm_eps is returned for the size check.
Pooling: OpenAI (and this model) pools the text feature at argmax(token id),
i.e. the EOT token 49407, the largest id. Hugging Face configs written after
transformers PR #24773 pool at the first `eos_token_id` instead; the two agree
whenever eos_token_id is the largest id of the vocabulary (true for OpenAI's
vocabulary) or the legacy value 2 (which makes HF use argmax too). Other values
are reported as a note: the weights are the same, only HF's own forward differs.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from gr1_jax.conversion.torch_files import CheckpointReadError, LazyTensor, LoadedFile, read_safetensors


def _cat(parts):
  if isinstance(parts[0], np.ndarray):
    return np.concatenate(parts, axis=0)
  import torch
  return torch.cat(parts, dim=0)


def _concat_rows(tensors: list[LazyTensor]) -> LazyTensor:
  shape = (sum(t.shape[0] for t in tensors),) + tuple(tensors[0].shape[1:])
  return LazyTensor(shape, tensors[0].dtype, lambda: _cat([t.load() for t in tensors]))


def _transpose(t: LazyTensor) -> LazyTensor:
  return t.derive(lambda x: x.T, tuple(reversed(t.shape)))


def _read_weights(directory: str) -> dict[str, LazyTensor]:
  index = os.path.join(directory, "model.safetensors.index.json")
  single = os.path.join(directory, "model.safetensors")
  if os.path.exists(single):
    return read_safetensors(single)
  if os.path.exists(index):
    with open(index) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    out = {}
    for shard in shards:
      out.update(read_safetensors(os.path.join(directory, shard)))
    return out
  if os.path.exists(os.path.join(directory, "pytorch_model.bin")):
    from gr1_jax.conversion.torch_files import read_file
    return read_file(os.path.join(directory, "pytorch_model.bin")).tensors
  raise CheckpointReadError(f"{directory}: a Hugging Face CLIP directory needs model.safetensors "
                            "(or a sharded model.safetensors.index.json, or pytorch_model.bin); none found.")


def _text_config(directory: str) -> dict:
  path = os.path.join(directory, "config.json")
  if not os.path.exists(path):
    raise CheckpointReadError(f"{directory}: not a Hugging Face model directory (no config.json).")
  with open(path) as f:
    config = json.load(f)
  text = dict(config.get("text_config") or config)
  arch = config.get("architectures") or [config.get("model_type", "?")]
  text["_architecture"] = arch[0]
  return text


def _map_tower(hf: dict, src: str, dst: str, layers: int, out: dict):
  """One HF CLIP encoder stack -> OpenAI resblocks (shared by the text and vision towers)."""
  for i in range(layers):
    h, o = f"{src}.encoder.layers.{i}", f"{dst}transformer.resblocks.{i}"
    for kind in ("weight", "bias"):
      out[f"{o}.attn.in_proj_{kind}"] = _concat_rows(
          [hf.pop(f"{h}.self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")])
      out[f"{o}.attn.out_proj.{kind}"] = hf.pop(f"{h}.self_attn.out_proj.{kind}")
      out[f"{o}.ln_1.{kind}"] = hf.pop(f"{h}.layer_norm1.{kind}")
      out[f"{o}.ln_2.{kind}"] = hf.pop(f"{h}.layer_norm2.{kind}")
      out[f"{o}.mlp.c_fc.{kind}"] = hf.pop(f"{h}.mlp.fc1.{kind}")
      out[f"{o}.mlp.c_proj.{kind}"] = hf.pop(f"{h}.mlp.fc2.{kind}")


def _count_layers(hf: dict, src: str) -> int:
  pattern = re.compile(rf"^{re.escape(src)}\.encoder\.layers\.(\d+)\.")
  found = {int(m.group(1)) for k in hf if (m := pattern.match(k))}
  return max(found) + 1 if found else 0


def read_hf_clip_dir(directory: str) -> LoadedFile:
  """HF CLIPModel / CLIPTextModelWithProjection directory -> LoadedFile with OpenAI CLIP names."""
  text_config = _text_config(directory)
  hf = dict(_read_weights(directory))
  notes = []
  act = text_config.get("hidden_act", "quick_gelu")
  if act != "quick_gelu":
    raise CheckpointReadError(
        f"{directory}: text hidden_act is {act!r}; OpenAI CLIP (and GR-1's text encoder here) uses "
        "quick_gelu, so these weights would give different features.")
  if "text_projection.weight" not in hf:
    raise CheckpointReadError(
        f"{directory}: no text_projection.weight ({text_config['_architecture']}); GR-1 needs the projected "
        "text feature: save a CLIPModel or CLIPTextModelWithProjection, not a bare CLIPTextModel.")
  vocab = hf["text_model.embeddings.token_embedding.weight"].shape[0] \
      if "text_model.embeddings.token_embedding.weight" in hf else None
  eos = text_config.get("eos_token_id")
  if eos is not None and vocab is not None and eos not in (2, vocab - 1):
    notes.append(f"HF eos_token_id={eos} is not the largest id ({vocab - 1}): Hugging Face's own forward "
                 "pools at that id, GR-1 (OpenAI) pools at argmax(id); weights are unaffected")
  out: dict[str, LazyTensor] = {}
  try:
    out["token_embedding.weight"] = hf.pop("text_model.embeddings.token_embedding.weight")
    out["positional_embedding"] = hf.pop("text_model.embeddings.position_embedding.weight")
    _map_tower(hf, "text_model", "", _count_layers(hf, "text_model"), out)
    out["ln_final.weight"] = hf.pop("text_model.final_layer_norm.weight")
    out["ln_final.bias"] = hf.pop("text_model.final_layer_norm.bias")
    out["text_projection"] = _transpose(hf.pop("text_projection.weight"))
    if "logit_scale" in hf:
      out["logit_scale"] = hf.pop("logit_scale")
    if "vision_model.embeddings.class_embedding" in hf:
      v = "vision_model"
      out["visual.class_embedding"] = hf.pop(f"{v}.embeddings.class_embedding")
      out["visual.conv1.weight"] = hf.pop(f"{v}.embeddings.patch_embedding.weight")
      out["visual.positional_embedding"] = hf.pop(f"{v}.embeddings.position_embedding.weight")
      for kind in ("weight", "bias"):
        out[f"visual.ln_pre.{kind}"] = hf.pop(f"{v}.pre_layrnorm.{kind}")
        out[f"visual.ln_post.{kind}"] = hf.pop(f"{v}.post_layernorm.{kind}")
      _map_tower(hf, v, "visual.", _count_layers(hf, v), out)
      out["visual.proj"] = _transpose(hf.pop("visual_projection.weight"))
  except KeyError as exc:
    raise CheckpointReadError(f"{directory}: Hugging Face CLIP weights incomplete: {exc.args[0]} is missing.") from exc
  leftover = sorted(k for k in hf if not k.endswith("position_ids"))
  if leftover:
    raise CheckpointReadError(f"{directory}: {len(leftover)} Hugging Face keys have no OpenAI CLIP "
                              f"counterpart: {', '.join(leftover[:6])}{', ...' if len(leftover) > 6 else ''}.")
  return LoadedFile(directory, "huggingface", out, notes=notes, info={"hf_text_config": text_config})
