"""Weight interop with PyTorch: official files -> checkpoint directory -> official files.

Official-layout files are built with the independent torch reference
(tests/torch_reference) at the tiny config. Per-component parity lives in
test_parity_components.py; here the weights travel through the real files,
readers, config check, Orbax directory and exporter.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from gr1_jax.conversion import convert
from gr1_jax.conversion.official_state import CheckpointMismatchError
from gr1_jax.conversion.torch_files import CheckpointReadError
from gr1_jax.model_checkpoint import load_model, load_params, save_model_checkpoint
from tests.conftest import tiny_config
from tests.conversion_helpers import flax_forward, reference_forward, reference_model, torch_inputs
from tests.torch_reference.gr1_torch import CLIPText

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5
OUTPUTS = ("obs_preds", "obs_targets", "obs_hand_preds", "obs_hand_targets", "arm_action_preds",
           "gripper_action_preds")


@pytest.fixture(scope="module")
def cfg():
  return tiny_config()


def _save(path, state: dict, *, payload: bool = True, prefix: str = "", **extra) -> str:
  state = {prefix + k: v for k, v in state.items()}
  torch.save({"state_dict": state, **extra} if payload else state, path)
  return str(path)


def _load_back(path) -> dict:
  return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _assert_identical(expected: dict, got: dict):
  assert sorted(got) == sorted(expected), (sorted(set(got) ^ set(expected)))
  differing = [k for k in expected
               if got[k].dtype != expected[k].dtype or got[k].shape != expected[k].shape
               or not torch.equal(got[k], expected[k])]
  assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:5]}"


def _assert_nothing_written(tmp_path, name="ckpt"):
  assert not (tmp_path / name).exists()
  leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{name}.tmp")]
  assert not leftovers, leftovers


def _split_encoders(state: dict):
  policy = {k: v for k, v in state.items() if not k.startswith(("model_mae.", "model_clip."))}
  mae = {k[len("model_mae."):]: v for k, v in state.items() if k.startswith("model_mae.")}
  clip = {k[len("model_clip."):]: v for k, v in state.items() if k.startswith("model_clip.")}
  return policy, mae, clip


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("buffers,prefix,payload", [
    (True, "module.", True), (False, "", False), (True, "", False), (False, "model.", True)])
def test_round_trip_is_bit_identical(cfg, tmp_path, buffers, prefix, payload):
  state = reference_model(cfg, seed=1, gpt2_buffers=buffers).state_dict()
  src = _save(tmp_path / "policy.pt", state, payload=payload, prefix=prefix, epoch=3)
  result = convert.from_official(src, str(tmp_path / "ckpt"), config=cfg)
  assert any("GPT-2" in line and ("present" if buffers else "absent") in line for line in result.summary)
  convert.to_torch(str(tmp_path / "ckpt"), str(tmp_path / "back.pt"))
  _assert_identical(state, _load_back(tmp_path / "back.pt"))


def _fp16_openai_clip(clip: dict, cfg) -> dict:
  """The text tower as clip.load leaves it on GPU (matrices fp16, LayerNorms fp32) plus a stub vision tower."""
  out = {}
  for k, v in clip.items():
    half = any(part in k for part in ("attn.", "mlp.", "text_projection"))   # clip.convert_weights' choice
    out[k] = v.half() if half else v.clone()
  g = torch.Generator().manual_seed(5)
  out["visual.conv1.weight"] = torch.randn(8, 3, 16, 16, generator=g).half()
  out["visual.class_embedding"] = torch.randn(8, generator=g).half()
  out["visual.proj"] = torch.randn(8, cfg.clip.embed_dim, generator=g).half()
  out["visual.ln_post.weight"] = torch.ones(8)
  out["input_resolution"] = torch.tensor(cfg.mae.image_size)
  out["context_length"] = torch.tensor(cfg.clip.context_length)
  out["vocab_size"] = torch.tensor(cfg.clip.vocab_size)
  return out


def test_separate_encoder_files_fp16_clip_and_safetensors_round_trip(cfg, tmp_path):
  state = reference_model(cfg, seed=2).state_dict()
  policy, mae, clip = _split_encoders(state)
  src = _save(tmp_path / "policy.pt", policy)
  torch.save({"model": mae, "epoch": 799}, tmp_path / "mae.pth")             # MAE's payload layout
  clip16 = _fp16_openai_clip(clip, cfg)
  torch.save(clip16, tmp_path / "clip.pt")
  result = convert.from_official(src, str(tmp_path / "ckpt"), mae=str(tmp_path / "mae.pth"),
                                 clip=str(tmp_path / "clip.pt"), config=cfg)
  n16 = sum(1 for k, v in clip16.items() if v.dtype == torch.float16 and not k.startswith("visual."))
  assert any(f"{n16} float16" in line for line in result.summary), result.summary

  # Back with the recorded dtypes and, given the CLIP file again, its vision tower.
  convert.to_torch(str(tmp_path / "ckpt"), str(tmp_path / "back.pt"), clip=str(tmp_path / "clip.pt"))
  expected = {**policy, **{f"model_mae.{k}": v for k, v in mae.items()},
              **{f"model_clip.{k}": v for k, v in clip16.items()
                 if k not in ("input_resolution", "context_length", "vocab_size")}}
  _assert_identical(expected, _load_back(tmp_path / "back.pt"))

  # Flat safetensors, float32, no vision tower: readable by safetensors and convertible again.
  from safetensors.torch import load_file
  convert.to_torch(str(tmp_path / "ckpt"), str(tmp_path / "back.safetensors"), fmt="safetensors",
                   restore_dtypes=False)
  flat = load_file(str(tmp_path / "back.safetensors"))
  assert flat["model_clip.transformer.resblocks.0.attn.in_proj_weight"].dtype == torch.float32
  assert not any(k.startswith("model_clip.visual.") for k in flat)
  config2, params2 = convert.convert_official_checkpoint(str(tmp_path / "back.safetensors"), config=cfg)
  import jax
  ref_params = jax.tree.map(np.asarray, load_params(str(tmp_path / "ckpt"), cfg))
  same = jax.tree.map(np.array_equal, params2, ref_params)
  assert all(jax.tree.leaves(same)) and config2 == cfg


def test_vision_tower_reattached_from_the_original_gr1_file(cfg, tmp_path):
  state = dict(reference_model(cfg, seed=16).state_dict())
  g = torch.Generator().manual_seed(16)
  state["model_clip.visual.conv1.weight"] = torch.randn(8, 3, 16, 16, generator=g).half()
  state["model_clip.visual.proj"] = torch.randn(8, cfg.clip.embed_dim, generator=g)
  src = _save(tmp_path / "snapshot.pt", state)
  convert.from_official(src, str(tmp_path / "ckpt"), config=cfg)
  convert.to_torch(str(tmp_path / "ckpt"), str(tmp_path / "plain.pt"), gpt2_buffers="no")
  assert not any(k.startswith("model_clip.visual.") for k in _load_back(tmp_path / "plain.pt"))
  convert.to_torch(str(tmp_path / "ckpt"), str(tmp_path / "full.pt"), clip=src, gpt2_buffers="no")
  _assert_identical(state, _load_back(tmp_path / "full.pt"))


def test_action_chunk_queries_round_trip(cfg, tmp_path):
  state = reference_model(cfg, seed=3).state_dict()
  state["action_chunk_queries.weight"] = 0.1 * torch.randn(4, cfg.hidden_size)
  src = _save(tmp_path / "policy.pt", state)
  with pytest.raises(convert.ConversionError, match=r"action_chunk is 1 in the config but 4"):
    convert.from_official(src, str(tmp_path / "ckpt"), config=cfg)
  _assert_nothing_written(tmp_path)
  convert.from_official(src, str(tmp_path / "ckpt"), config=cfg.replace(action_chunk=4))
  convert.to_torch(str(tmp_path / "ckpt"), str(tmp_path / "back.pt"), gpt2_buffers="no")
  _assert_identical(state, _load_back(tmp_path / "back.pt"))


# ----------------------------------------------------------------------------- parity

def test_converted_checkpoint_matches_reference_forward(cfg, tmp_path):
  ref = reference_model(cfg, seed=4, gpt2_buffers=True)
  src = _save(tmp_path / "policy.pt", ref.state_dict())
  convert.from_official(src, str(tmp_path / "ckpt"), config=cfg)
  x = torch_inputs(cfg, batch=2, seed=1, padded_tail=3)
  expected = reference_forward(ref, x)
  got = flax_forward(load_model(str(tmp_path / "ckpt")), x)
  assert sorted(expected) == sorted(OUTPUTS)
  for key in OUTPUTS:
    assert got[key].shape == expected[key].shape, key
    np.testing.assert_allclose(got[key], expected[key], atol=TOL, rtol=0, err_msg=key)


def test_export_without_conversion_record_loads_strictly(cfg, tmp_path):
  """A checkpoint written here (trained, not imported) exports in the transformers-4.5.1 layout:
  float32, GPT-2 buffers uint8 [1,1,1024,1024] / -1e4, decoder_pos_embed and CLIP's logit_scale."""
  from gr1_jax.conversion.official_state import import_official
  source = reference_model(cfg, seed=14, gpt2_buffers=True)
  params = import_official({k: v.numpy() for k, v in source.state_dict().items()}, cfg)
  save_model_checkpoint(str(tmp_path / "ckpt"), params, cfg)             # no "conversion" entry
  convert.to_torch(str(tmp_path / "ckpt"), str(tmp_path / "gr1.pt"))
  back = _load_back(tmp_path / "gr1.pt")
  target = reference_model(cfg, seed=15, gpt2_buffers=True)
  target.load_state_dict(back, strict=True)
  expected = dict(source.state_dict())
  expected["model_clip.logit_scale"] = torch.tensor(np.log(100.0), dtype=torch.float32)
  _assert_identical(expected, back)


# ----------------------------------------------------------------------------- CLIP sources

def _clip_encoder(directory, cfg):
  """Only the CLIP text tower of a checkpoint directory (cheaper than building the whole model)."""
  from flax import nnx

  from gr1_jax.modules.clip_text import CLIPTextEncoder
  graphdef, state = nnx.split(nnx.eval_shape(lambda: CLIPTextEncoder(cfg.clip, rngs=nnx.Rngs(0))))
  nnx.replace_by_pure_dict(state, load_params(str(directory), cfg)["model_clip"])
  return nnx.merge(graphdef, state)


def _hf_clip_dir(cfg, path, kind: str, hidden_act: str = "quick_gelu") -> nn.Module:
  transformers = pytest.importorskip("transformers")
  text = dict(vocab_size=cfg.clip.vocab_size, hidden_size=cfg.clip.width, intermediate_size=4 * cfg.clip.width,
              num_hidden_layers=cfg.clip.layers, num_attention_heads=cfg.clip.heads,
              max_position_embeddings=cfg.clip.context_length, projection_dim=cfg.clip.embed_dim,
              hidden_act=hidden_act, bos_token_id=cfg.clip.vocab_size - 2, eos_token_id=cfg.clip.vocab_size - 1,
              pad_token_id=0)
  torch.manual_seed(0)
  if kind == "CLIPTextModelWithProjection":
    model = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**text))
  else:
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=16, projection_dim=cfg.clip.embed_dim, hidden_act="quick_gelu")
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision,
                                                           projection_dim=cfg.clip.embed_dim))
  with torch.no_grad():                                        # move LayerNorms etc. off their 1/0 init
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  model.eval().save_pretrained(str(path))
  return model


@pytest.mark.parametrize("kind", ["CLIPTextModelWithProjection", "CLIPModel"])
def test_hugging_face_clip_directory_gives_the_same_text_features(cfg, tmp_path, kind):
  hf = _hf_clip_dir(cfg, tmp_path / "hf_clip", kind)
  policy, mae, _ = _split_encoders(reference_model(cfg, seed=5).state_dict())
  src = _save(tmp_path / "policy.pt", {**policy, **{f"model_mae.{k}": v for k, v in mae.items()}})
  convert.from_official(src, str(tmp_path / "ckpt"), clip=str(tmp_path / "hf_clip"), config=cfg)
  tokens = torch_inputs(cfg, batch=3, seed=3)["tokens"]
  with torch.no_grad():
    if kind == "CLIPModel":
      expected = hf.get_text_features(input_ids=tokens).pooler_output.numpy()
    else:
      expected = hf(input_ids=tokens).text_embeds.numpy()
  import jax.numpy as jnp
  got = np.asarray(_clip_encoder(tmp_path / "ckpt", cfg)(jnp.asarray(tokens.numpy())))
  np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)
  if kind == "CLIPModel":          # the vision tower comes back under OpenAI names
    convert.to_torch(str(tmp_path / "ckpt"), str(tmp_path / "back.pt"), clip=str(tmp_path / "hf_clip"))
    back = _load_back(tmp_path / "back.pt")
    assert torch.equal(back["model_clip.visual.proj"], hf.visual_projection.weight.detach().T)
    assert torch.equal(back["model_clip.visual.conv1.weight"],
                       hf.vision_model.embeddings.patch_embedding.weight.detach())
    assert "model_clip.visual.transformer.resblocks.0.attn.in_proj_weight" in back


def test_hugging_face_clip_with_another_activation_is_refused(cfg, tmp_path):
  _hf_clip_dir(cfg, tmp_path / "hf_clip", "CLIPTextModelWithProjection", hidden_act="gelu")
  src = _save(tmp_path / "policy.pt", reference_model(cfg, seed=5).state_dict())
  with pytest.raises(CheckpointReadError, match=r"hf_clip.*hidden_act is 'gelu'.*quick_gelu"):
    convert.from_official(src, str(tmp_path / "ckpt"), clip=str(tmp_path / "hf_clip"), config=cfg)
  _assert_nothing_written(tmp_path)


class _OpenAIStyleCLIP(nn.Module):
  """OpenAI CLIP's attribute names (text tower, a stub vision tower, the archive's scalar buffers)."""

  def __init__(self, text: CLIPText, cfg):
    super().__init__()
    for name in ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection",
                 "logit_scale"):
      setattr(self, name, getattr(text, name))
    self.visual = nn.Module()
    self.visual.conv1 = nn.Conv2d(3, 8, 16, 16, bias=False)
    self.visual.class_embedding = nn.Parameter(torch.randn(8))
    self.register_buffer("input_resolution", torch.tensor(cfg.mae.image_size))
    self.register_buffer("context_length", torch.tensor(cfg.clip.context_length))
    self.register_buffer("vocab_size", torch.tensor(cfg.clip.vocab_size))

  def forward(self, tokens):
    return CLIPText.encode_text(self, tokens)


def test_openai_torchscript_clip_archive(cfg, tmp_path):
  ref = reference_model(cfg, seed=6)
  tokens = torch_inputs(cfg, batch=3, seed=4)["tokens"]
  scripted = torch.jit.trace(_OpenAIStyleCLIP(ref.model_clip, cfg).eval(), tokens).half()  # fp16, like the download
  torch.jit.save(scripted, str(tmp_path / "ViT-tiny.pt"))
  policy, mae, _ = _split_encoders(ref.state_dict())
  src = _save(tmp_path / "policy.pt", {**policy, **{f"model_mae.{k}": v for k, v in mae.items()}})
  result = convert.from_official(src, str(tmp_path / "ckpt"), clip=str(tmp_path / "ViT-tiny.pt"), config=cfg)
  assert any("torchscript" in line for line in result.summary)

  # Expected features: the reference text tower holding the same (fp16-rounded) weights in fp32.
  rounded = {k: v.float() for k, v in scripted.state_dict().items() if not k.startswith("visual.")
             and k not in ("input_resolution", "context_length", "vocab_size")}
  text = CLIPText(ref.cfg).eval()
  text.load_state_dict(rounded, strict=True)
  with torch.no_grad():
    expected = text.encode_text(tokens).numpy()
  import jax.numpy as jnp
  got = np.asarray(_clip_encoder(tmp_path / "ckpt", cfg)(jnp.asarray(tokens.numpy())))
  np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)

  convert.to_torch(str(tmp_path / "ckpt"), str(tmp_path / "back.pt"), clip=str(tmp_path / "ViT-tiny.pt"))
  back = _load_back(tmp_path / "back.pt")
  for k, v in scripted.state_dict().items():
    if k not in ("input_resolution", "context_length", "vocab_size"):
      assert back[f"model_clip.{k}"].dtype == torch.float16 and torch.equal(back[f"model_clip.{k}"], v), k


# ----------------------------------------------------------------------------- config handling

def test_act_only_config_drops_unused_modules(cfg, tmp_path):
  src = _save(tmp_path / "policy.pt", reference_model(cfg, seed=7).state_dict())
  act_only = tiny_config("tiny").replace(fwd_pred=False, fwd_pred_hand=False)
  result = convert.convert_official(src, config=act_only)
  assert "decoder" not in result.params and "obs_queries" not in result.params
  assert any(line.startswith("dropped") and "switches off" in line for line in result.summary)


def test_missing_encoders_name_the_flag(cfg, tmp_path):
  policy, _, _ = _split_encoders(reference_model(cfg, seed=8).state_dict())
  src = _save(tmp_path / "policy.pt", policy)
  with pytest.raises(convert.ConversionError, match=r"policy\.pt has no model_mae\.\* weights: pass --mae.*--clip"):
    convert.from_official(src, str(tmp_path / "ckpt"), config=cfg)
  _assert_nothing_written(tmp_path)


# ----------------------------------------------------------------------------- bad input

def test_not_a_checkpoint(cfg, tmp_path):
  src = tmp_path / "notes.pt"
  src.write_text("this is not a checkpoint\n" * 20)
  with pytest.raises(CheckpointReadError) as err:
    convert.from_official(str(src), str(tmp_path / "ckpt"), config=cfg)
  message = str(err.value)
  assert str(src) in message and "not a PyTorch checkpoint" in message and "\n" not in message
  _assert_nothing_written(tmp_path)


def test_truncated_file(cfg, tmp_path):
  src = _save(tmp_path / "policy.pt", reference_model(cfg, seed=9).state_dict())
  data = open(src, "rb").read()
  with open(src, "wb") as f:
    f.write(data[: len(data) // 2])
  with pytest.raises(CheckpointReadError) as err:
    convert.from_official(src, str(tmp_path / "ckpt"), config=cfg)
  assert src in str(err.value) and "truncated" in str(err.value) and "\n" not in str(err.value)
  _assert_nothing_written(tmp_path)


def test_payload_with_python_objects_needs_trust(cfg, tmp_path):
  src = _save(tmp_path / "policy.pt", reference_model(cfg, seed=9).state_dict(), args=argparse.Namespace(lr=1e-3))
  with pytest.raises(CheckpointReadError, match=r"policy\.pt.*--trust_pickle"):
    convert.convert_official(src, config=cfg)
  assert convert.convert_official(src, config=cfg, trust_pickle=True).params
  # The same in torch's legacy (non-zip) format: still a checkpoint, still the advice.
  legacy = tmp_path / "legacy.pt"
  torch.save({"state_dict": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=1e-3)}, legacy,
             _use_new_zipfile_serialization=False)
  with pytest.raises(CheckpointReadError, match=r"legacy\.pt.*--trust_pickle"):
    convert.convert_official(str(legacy), config=cfg)


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes_are_not_a_checkpoint(cfg, tmp_path, seed):
  """Random bytes read as unknown pickle opcodes, which the safe loader also refuses; that
  is no reason to suggest --trust_pickle (unsafe unpickling) for a file that is no checkpoint."""
  src = tmp_path / "random.pt"
  src.write_bytes(np.random.default_rng(seed).bytes(4096))
  with pytest.raises(CheckpointReadError) as err:
    convert.from_official(str(src), str(tmp_path / "ckpt"), config=cfg)
  message = str(err.value)
  assert str(src) in message and "not a PyTorch checkpoint" in message, message
  assert "trust_pickle" not in message and "Python objects" not in message and "\n" not in message
  assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("override,expected", [
    (dict(seq_len=8), r"seq_len is 8 in the config but 10 in policy\.pt \(embed_timestep\.weight \[10, 32\]\)"
                      r".*--config\.seq_len=10"),
    (None, r"hidden_size is 384 in the config but 32 in policy\.pt.*mae\.width is 768 in the config but 32 in "
           r"policy\.pt.*--config\.hidden_size=32"),
])
def test_wrong_config_is_reported_with_file_and_fix(cfg, tmp_path, override, expected):
  src = _save(tmp_path / "policy.pt", reference_model(cfg, seed=10).state_dict())
  config = cfg.replace(**override) if override else None          # None: the official config
  with pytest.raises(convert.ConversionError, match=expected) as err:
    convert.from_official(src, str(tmp_path / "ckpt"), config=config)
  assert str(tmp_path / "policy.pt") in str(err.value) and "\n" not in str(err.value)
  _assert_nothing_written(tmp_path)


def test_gr1_training_position_table_is_refused(cfg, tmp_path):
  state = reference_model(cfg, seed=11).state_dict()
  state["transformer.wpe.weight"] = torch.zeros(1024, cfg.hidden_size)
  src = _save(tmp_path / "policy.pt", state)
  with pytest.raises(CheckpointMismatchError, match=r"transformer\.wpe\.weight.*GR1-Training"):
    convert.from_official(src, str(tmp_path / "ckpt"), config=cfg)
  _assert_nothing_written(tmp_path)


def test_existing_output_is_not_replaced_without_overwrite(cfg, tmp_path):
  src = _save(tmp_path / "policy.pt", reference_model(cfg, seed=12).state_dict())
  (tmp_path / "ckpt").mkdir()
  with pytest.raises(FileExistsError, match="--overwrite"):
    convert.from_official(src, str(tmp_path / "ckpt"), config=cfg)


# ----------------------------------------------------------------------------- CLI

def _cli(*args):
  return subprocess.run([sys.executable, "-m", "experiments.convert", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=600)


def test_cli_both_ways_and_error(cfg, tmp_path):
  state = reference_model(cfg, seed=13, gpt2_buffers=True).state_dict()
  src = _save(tmp_path / "policy.pt", state)
  tiny = "experiments/configs/gr1_model.py:tiny"
  bad = _cli("from-official", f"--policy={src}", f"--out={tmp_path / 'ckpt'}", f"--config={tiny}",
             "--config.hidden_size=64")
  assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1, bad.stderr
  assert src in bad.stderr and "hidden_size is 64 in the config but 32" in bad.stderr
  _assert_nothing_written(tmp_path)
  ok = _cli("from-official", f"--policy={src}", f"--out={tmp_path / 'ckpt'}", f"--config={tiny}")
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert "parameters:" in ok.stdout and "wrote" in ok.stdout
  ok = _cli("to-torch", f"--checkpoint={tmp_path / 'ckpt'}", f"--out={tmp_path / 'back.pt'}")
  assert ok.returncode == 0, ok.stderr[-3000:]
  _assert_identical(state, _load_back(tmp_path / "back.pt"))
