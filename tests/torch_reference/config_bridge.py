"""GR1Config (Flax) -> RefConfig (torch reference) and weight transfer between the two."""
from __future__ import annotations

import numpy as np
import torch

from gr1_jax.conversion.official_keys import official_key_map
from gr1_jax.conversion.official_state import import_official
from gr1_jax.model_checkpoint import build_model
from gr1_jax.model_config import GR1Config
from tests.torch_reference.gr1_torch import GR1Reference, RefConfig, random_init_


def ref_config(cfg: GR1Config) -> RefConfig:
  return RefConfig(
      hidden_size=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
      n_inner=cfg.mlp_dim, seq_len=cfg.seq_len,
      resampler_depth=cfg.resampler.depth, resampler_dim_head=cfg.resampler.dim_head,
      resampler_heads=cfg.resampler.heads, resampler_num_latents=cfg.resampler.num_latents,
      resampler_ff_mult=cfg.resampler.ff_mult,
      image_size=cfg.mae.image_size, patch_size=cfg.mae.patch_size, mae_width=cfg.mae.width,
      mae_depth=cfg.mae.depth, mae_heads=cfg.mae.heads, mae_mlp=cfg.mae.mlp_dim,
      clip_vocab_size=cfg.clip.vocab_size, clip_context_length=cfg.clip.context_length,
      clip_width=cfg.clip.width, clip_layers=cfg.clip.layers, clip_heads=cfg.clip.heads,
      clip_embed_dim=cfg.clip.embed_dim,
      decoder_depth=cfg.decoder.depth, decoder_heads=cfg.decoder.heads,
      decoder_mlp=cfg.hidden_size * cfg.decoder.mlp_ratio,
      use_state=cfg.use_state, use_hand_rgb=cfg.use_hand_rgb, act_pred=cfg.act_pred,
      fwd_pred=cfg.fwd_pred, fwd_pred_hand=cfg.fwd_pred_hand,
      without_norm_pixel_loss=not cfg.norm_pix_loss, fwd_pred_next_n=cfg.fwd_pred_next_n)


def numpy_state_dict(module: torch.nn.Module) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def paired_models(cfg: GR1Config, seed: int = 0):
  """A randomly initialised torch reference and the Flax model holding the same weights."""
  ref = random_init_(GR1Reference(ref_config(cfg)), seed=seed).eval()
  # The reference, like the official class, builds every module whatever the layout;
  # keep the ones this layout uses (import_official rejects the others as unexpected).
  used = {e.torch_key for e in official_key_map(cfg)}
  state = {k: v for k, v in numpy_state_dict(ref).items() if k in used}
  flax_model = build_model(cfg, import_official(state, cfg))
  flax_model.eval()
  return ref, flax_model
