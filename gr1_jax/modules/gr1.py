"""The GR-1 policy: frozen CLIP text + MAE encoders, Perceiver Resampler, GPT-2 trunk, heads.

Data flow for a window of L steps (shapes for the official config):

    tokens (B,77) --CLIP--> (B,512) --/(|x|+1e-6)--> embed_lang ------------------> lang  (B,L,D)*
    rgb (B,L,224,224,3) --MAE--> cls (768), patches (196,768) --resampler--> 9 latents
        cls -> embed_img ----------------------------------------------------------> cls   (B,L,D)*
        latents -> embed_patch ---------------------------------------------------> patch (B,L,9,D)*
    hand_rgb: the same MAE and resampler, embed_hand_img / embed_hand_patch ------> hand_* *
    arm (B,L,6) -> embed_arm_state ; gripper one-hot (B,L,2) -> embed_gripper_state
        concat -> embed_state -----------------------------------------------------> state (B,L,D)*
    (* = + embed_timestep[t]; the [ACT]/[OBS] query tokens get no timestep embedding)

    per step [lang, state, patch x9, cls, hand_patch x9, hand_cls, ACT, OBS x10, OBS_HAND x10]
    -> flatten timestep-major -> embed_ln -> GPT-2 trunk under attention_mask()
    -> ACT outputs -> ActionHead -> arm (B,L,K,6), gripper logits (B,L,K)
    -> OBS outputs -> VideoDecoder -> obs_preds (B,L,196,768) (target: frame t + 3, see losses)

The forward is split into encode_language / encode_frames / predict so the
closed-loop policy can cache per-frame features; __call__ chains them.
call_segments does the same for training with frame reuse (data_pipelines/frame_reuse.py):
per-frame features of B segments of seq_len + W - 1 frames, computed once per frame, then
gathered into the B*W windows that predict runs on.
Frozen encoders sit under `model_clip` and `model_mae`: `TRAINABLE` selects
everything else, and their outputs are stop_gradient'ed.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from data_pipelines import frame_reuse
from gr1_jax.model_config import GR1Config
from gr1_jax.modules import partitioning as part
from gr1_jax.modules.action_head import ActionHead
from gr1_jax.modules.attention_mask import attention_mask
from gr1_jax.modules.clip_text import CLIPTextEncoder
from gr1_jax.modules.gpt2_trunk import GPT2Trunk
from gr1_jax.modules.mae_vit import MAEEncoder, patchify
from gr1_jax.modules.perceiver_resampler import PerceiverResampler
from gr1_jax.modules.token_layout import TokenLayout
from gr1_jax.modules.video_decoder import VideoDecoder

FROZEN = nnx.All(nnx.Param, nnx.Any(nnx.PathContains("model_clip"), nnx.PathContains("model_mae")))
TRAINABLE = nnx.All(nnx.Param, nnx.Not(FROZEN))


def normalized_patch_targets(images, patch_size: int, norm_pix: bool):
  """(..., H, W, 3) normalised images -> (..., P, p*p*3) targets.

  With norm_pix, each patch is standardised by its own mean and UNBIASED std,
  with 1e-6 added to the std (not to the variance), exactly as GR-1 does.
  """
  x = patchify(images.astype(jnp.float32), patch_size)
  if not norm_pix:
    return x
  mean = x.mean(-1, keepdims=True)
  std = jnp.sqrt(((x - mean) ** 2).sum(-1, keepdims=True) / (x.shape[-1] - 1))
  return (x - mean) / (std + 1e-6)


class GR1(nnx.Module):

  def __init__(self, config: GR1Config, *, rngs: nnx.Rngs):
    self.config = config
    self.layout = TokenLayout.from_config(config)
    dtype = jnp.dtype(config.dtype)
    d, width = config.hidden_size, config.mae.width
    n = config.resampler.num_latents

    def embed(in_features, in_axis=part.NONE):
      return part.linear(in_features, d, (in_axis, part.EMBED), rngs=rngs, dtype=dtype)

    def table(rows):
      return part.param(rngs, part.normal_002, (rows, d), (part.NONE, part.EMBED))

    self.model_clip = CLIPTextEncoder(config.clip, rngs=rngs, dtype=dtype)
    self.model_mae = MAEEncoder(config.mae, rngs=rngs, dtype=dtype)
    self.perceiver_resampler = PerceiverResampler(width, config.resampler, rngs=rngs, dtype=dtype)
    self.transformer = GPT2Trunk(config, rngs=rngs, dtype=dtype)
    self.embed_lang = embed(config.clip.embed_dim)
    self.embed_img = embed(width, part.EMBED)
    self.embed_patch = embed(width, part.EMBED)
    if config.use_hand_rgb:
      self.embed_hand_img = embed(width, part.EMBED)
      self.embed_hand_patch = embed(width, part.EMBED)
    if config.use_state:
      self.embed_arm_state = embed(config.arm_dim)
      self.embed_gripper_state = embed(2)
      self.embed_state = embed(2 * d, part.EMBED)
    self.embed_timestep = table(config.seq_len)
    self.embed_ln = part.layer_norm(d, config.ln_eps, rngs=rngs, dtype=dtype)
    if config.act_pred:
      self.action_queries = table(1)
      if config.action_chunk > 1:
        # GR1-Training's chunk offsets start at zero so chunk k=0 equals the plain [ACT] query.
        self.action_chunk_queries = part.param(rngs, part.zeros, (config.action_chunk, d),
                                               (part.NONE, part.EMBED))
      self.action_head = ActionHead(d, config.arm_dim, rngs=rngs, dtype=dtype)
    if config.fwd_pred:
      self.obs_queries = table(n + 1)
      if config.fwd_pred_hand:
        self.obs_hand_queries = table(n + 1)
      self.decoder = VideoDecoder(config, rngs=rngs, dtype=dtype)

  # --- stage 1: per-instruction and per-frame features (cacheable) -------------------------

  def encode_language(self, tokens):
    """tokens (B, 77) int -> (B, D) projected language feature."""
    feats = jax.lax.stop_gradient(self.model_clip(tokens).astype(jnp.float32))
    feats = feats / (jnp.linalg.norm(feats, axis=-1, keepdims=True) + 1e-6)
    return self.embed_lang(feats)

  def _encode_camera(self, images, embed_cls, embed_patch):
    lead = images.shape[:-3]
    cls, patches = self.model_mae(images.reshape((-1,) + images.shape[-3:]))
    cls, patches = jax.lax.stop_gradient((cls, patches))
    latents = self.perceiver_resampler(patches)
    return (embed_cls(cls).reshape(lead + (-1,)),
            embed_patch(latents).reshape(lead + latents.shape[1:2] + (-1,)))

  def encode_frames(self, rgb, hand_rgb=None):
    """Normalised frames (..., 224, 224, 3) -> dict of per-frame token features (..., [n,] D)."""
    dtype = jnp.dtype(self.config.dtype)
    if self.config.blind:  # the no-vision baseline: every pixel at the normalised mean
      rgb = jnp.zeros_like(rgb)
      hand_rgb = None if hand_rgb is None else jnp.zeros_like(hand_rgb)
    feats = {}
    feats["cls"], feats["patch"] = self._encode_camera(rgb.astype(dtype), self.embed_img, self.embed_patch)
    if self.config.use_hand_rgb:
      if hand_rgb is None:
        raise ValueError("this model has use_hand_rgb=True but no hand (wrist) images were given")
      feats["hand_cls"], feats["hand_patch"] = self._encode_camera(
          hand_rgb.astype(dtype), self.embed_hand_img, self.embed_hand_patch)
    return feats

  # --- stage 2: the trunk over a window and the heads ---------------------------------------

  def _check_window(self, steps: int) -> None:
    if steps != self.config.seq_len:
      raise ValueError(f"window has {steps} steps; GR-1 adds its whole timestep table, so it needs "
                       f"exactly seq_len={self.config.seq_len}")

  def embed_state_tokens(self, arm_state, gripper_state):
    dtype = jnp.dtype(self.config.dtype)
    arm = self.embed_arm_state(arm_state.astype(dtype))
    grip = self.embed_gripper_state(gripper_state.astype(dtype))
    return self.embed_state(jnp.concatenate([arm, grip], axis=-1))

  def predict(self, lang, frame_feats, step_mask, arm_state=None, gripper_state=None, *, decode_steps=None):
    """lang (B, D); frame_feats from encode_frames over (B, L); step_mask (B, L) -> outputs dict.

    decode_steps = n: the video decoder runs on the first n steps only, so obs_preds /
    obs_hand_preds are (B, n, P, C). Training passes L - fwd_pred_next_n: the predictions of
    the last next_n steps have no target frame inside the window and never enter the loss,
    and the decoder mixes patches only within one step and has no dropout (video_decoder.py),
    so the kept steps are unchanged.
    """
    cfg, layout = self.config, self.layout
    b, l = step_mask.shape
    self._check_window(l)
    dtype = jnp.dtype(cfg.dtype)
    time = self.embed_timestep[...].astype(dtype)                          # (L, D)
    d = time.shape[-1]

    def obs(x):                                                            # (B, L, k, D) + time
      return x.astype(dtype) + time[None, :, None, :]

    def query(vectors):                                                    # (k, D) -> (B, L, k, D)
      return jnp.broadcast_to(vectors.astype(dtype), (b, l) + vectors.shape)

    groups = {"lang": obs(jnp.broadcast_to(lang[:, None, None, :], (b, l, 1, d))),
              "patch": obs(frame_feats["patch"]), "cls": obs(frame_feats["cls"][:, :, None])}
    if cfg.use_state:
      if arm_state is None or gripper_state is None:
        raise ValueError("this model has use_state=True: arm_state and gripper_state are required")
      groups["state"] = obs(self.embed_state_tokens(arm_state, gripper_state)[:, :, None])
    if cfg.use_hand_rgb:
      groups["hand_patch"] = obs(frame_feats["hand_patch"])
      groups["hand_cls"] = obs(frame_feats["hand_cls"][:, :, None])
    if cfg.act_pred:
      act = self.action_queries[...]
      if cfg.action_chunk > 1:
        act = act + self.action_chunk_queries[...]
      groups["act"] = query(act)
    if cfg.fwd_pred:
      groups["obs_query"] = query(self.obs_queries[...])
      if cfg.fwd_pred_hand:
        groups["obs_hand_query"] = query(self.obs_hand_queries[...])

    x = jnp.concatenate([groups[g.name] for g in layout.groups], axis=2)   # (B, L, n_tok, D)
    x = self.embed_ln(x.reshape(b, l * layout.tokens_per_step, d))
    x = self.transformer(x, attention_mask(layout, step_mask))
    x = x.reshape(b, l, layout.tokens_per_step, d)

    out = {}
    if cfg.act_pred:
      arm, grip = self.action_head(x[:, :, layout.span("act")])
      out["arm_action_preds"] = arm.astype(jnp.float32)                   # (B, L, K, arm_dim)
      out["gripper_action_preds"] = grip.astype(jnp.float32)              # (B, L, K) logits
    if cfg.fwd_pred:
      decoded = x[:, :decode_steps]
      out["obs_preds"] = self.decoder(decoded[:, :, layout.span("obs_query")]).astype(jnp.float32)
      if cfg.fwd_pred_hand:
        out["obs_hand_preds"] = self.decoder(decoded[:, :, layout.span("obs_hand_query")]).astype(jnp.float32)
    return out

  def __call__(self, rgb, tokens, step_mask, *, hand_rgb=None, arm_state=None, gripper_state=None,
               decode_steps=None):
    """The official forward. rgb/hand_rgb: (B, L, H, W, 3) ImageNet-normalised at image_size.

    Returns arm_action_preds (B, L, K, 6), gripper_action_preds (B, L, K) logits,
    obs_preds / obs_hand_preds (B, L, P, p*p*3) and their same-step targets
    obs_targets / obs_hand_targets (the t -> t+3 pairing happens in the loss).
    decode_steps: see predict (the targets keep all L steps).
    """
    cfg = self.config
    self._check_window(step_mask.shape[-1])  # before running the encoders
    out = self.predict(self.encode_language(tokens), self.encode_frames(rgb, hand_rgb), step_mask,
                       arm_state, gripper_state, decode_steps=decode_steps)
    if cfg.fwd_pred:
      p = cfg.mae.patch_size
      out["obs_targets"] = normalized_patch_targets(rgb, p, cfg.norm_pix_loss)
      if cfg.fwd_pred_hand:
        out["obs_hand_targets"] = normalized_patch_targets(hand_rgb, p, cfg.norm_pix_loss)
    return out

  def call_segments(self, rgb, tokens, step_mask, num_windows: int, *, hand_rgb=None, arm_state=None,
                    gripper_state=None, decode_steps=None):
    """__call__ over the W windows of each of B segments (frame reuse, data_pipelines/frame_reuse.py).

    Inputs as for __call__ with S = seq_len + W - 1 steps per segment instead of seq_len;
    returns __call__'s outputs for the B*W windows, row b*W + w = steps w .. w+seq_len-1 of
    segment b. The per-frame work (frozen MAE, Perceiver Resampler, token embeddings, video
    targets) runs once per segment frame and the language once per segment; gradients reach
    the resampler and embeddings through the gather, summed over the windows sharing a frame,
    as in the per-window path (no dropout before the trunk, so every copy is the same value).
    """
    cfg = self.config
    seq, w = cfg.seq_len, num_windows
    steps = frame_reuse.segment_length(seq, w)
    if step_mask.shape[-1] != steps:
      raise ValueError(f"segments have {step_mask.shape[-1]} steps; seq_len={seq} and {w} windows per "
                       f"segment need {steps}")
    unfold = lambda x: None if x is None else frame_reuse.unfold(x, seq, w)
    feats = {k: unfold(v) for k, v in self.encode_frames(rgb, hand_rgb).items()}
    lang = frame_reuse.repeat_windows(self.encode_language(tokens), w)
    out = self.predict(lang, feats, unfold(step_mask), unfold(arm_state), unfold(gripper_state),
                       decode_steps=decode_steps)
    if cfg.fwd_pred:
      p = cfg.mae.patch_size
      out["obs_targets"] = unfold(normalized_patch_targets(rgb, p, cfg.norm_pix_loss))
      if cfg.fwd_pred_hand:
        out["obs_hand_targets"] = unfold(normalized_patch_targets(hand_rgb, p, cfg.norm_pix_loss))
    return out
