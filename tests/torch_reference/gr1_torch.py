"""PyTorch reference implementation of GR-1 for parity tests.

Written from the behaviour of the official release (bytedance/GR-1, models/gr1.py and
friends, plus the sub-modules it imports: transformers-4.5.1 GPT-2, flamingo-pytorch
0.1.2 PerceiverResampler, OpenAI CLIP text tower, DINO/timm ViT) as documented in
``shared/reference/gr1.md``.  Only plain ``torch.nn`` building blocks are used.

The attribute names are chosen so that ``GR1Reference.state_dict()`` has exactly the
official key names and shapes (see gr1.md section 6):

* ``transformer.*``          GPT-2 trunk, Conv1D weights stored [in, out]
* ``perceiver_resampler.*``  Perceiver resampler (nn.Linear layout [out, in], no biases)
* ``model_mae.*``            MAE ViT-B/16 (timm/DINO naming), LayerNorm eps 1e-6
* ``model_clip.*``           CLIP text tower only (no ``visual.*``)
* GR-1 embeddings / heads / video decoder at the top level.

Everything computes in the dtype of the inputs/weights (float32 in the tests); the
official GPU run computes CLIP text in fp16, which is *not* emulated here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# value used by GPT-2 (transformers 4.5.1) both for the causal replacement and the
# additive key-padding term
GPT2_MASK_VALUE = -10000.0


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
@dataclass
class RefConfig:
    """All sizes of the reference; defaults are the official GR-1 (CALVIN) values."""

    # GPT-2 trunk
    hidden_size: int = 384
    n_layer: int = 12
    n_head: int = 12
    n_inner: Optional[int] = None  # None -> 4 * hidden_size (official passes 4*384)
    n_ctx: int = 1024  # only sizes the optional attn.bias buffer
    layer_norm_epsilon: float = 1e-5
    dropout: float = 0.1  # resid_pdrop and attn_pdrop
    embd_pdrop: float = 0.1  # GPT2Config default, dropout on inputs_embeds
    seq_len: int = 10

    # state / action
    state_dim: int = 7  # 6 arm + 1 gripper
    act_dim: int = 7

    # Perceiver resampler
    resampler_depth: int = 3
    resampler_dim_head: int = 128
    resampler_heads: int = 4
    resampler_num_latents: int = 9
    resampler_num_media_embeds: int = 1
    resampler_ff_mult: int = 4

    # images
    image_size: int = 224
    patch_size: int = 16

    # MAE ViT encoder
    mae_width: int = 768
    mae_depth: int = 12
    mae_heads: int = 12
    mae_mlp: int = 3072
    mae_eps: float = 1e-6

    # CLIP text tower
    clip_vocab_size: int = 49408
    clip_context_length: int = 77
    clip_width: int = 512
    clip_layers: int = 12
    clip_heads: int = 8
    clip_embed_dim: int = 512

    # MAE-style video decoder
    decoder_depth: int = 2
    decoder_heads: int = 16
    decoder_mlp: Optional[int] = None  # None -> 4 * hidden_size

    # switches
    use_state: bool = True
    use_hand_rgb: bool = True
    act_pred: bool = True
    fwd_pred: bool = True
    fwd_pred_hand: bool = True
    without_norm_pixel_loss: bool = False
    fwd_pred_next_n: int = 3  # used by the loss only

    # ---- derived sizes ----
    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.hidden_size

    @property
    def decoder_mlp_dim(self) -> int:
        return self.decoder_mlp if self.decoder_mlp is not None else 4 * self.hidden_size

    @property
    def img_feat_dim(self) -> int:
        return self.mae_width

    @property
    def patch_feat_dim(self) -> int:
        return self.mae_width

    @property
    def lang_feat_dim(self) -> int:
        return self.clip_embed_dim

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def n_patches(self) -> int:
        return self.grid * self.grid

    @property
    def patch_pixels(self) -> int:
        return self.patch_size * self.patch_size * 3


def token_layout(cfg: RefConfig) -> Dict[str, Tuple[int, int]]:
    """Per-timestep token slots as {name: (start, stop)} in the official order.

    lang, [state], patch latents, CLS, [hand latents, hand CLS], [ACT], [OBS], [OBS_HAND].
    Also contains 'n_tokens': (n, n).  Query groups are present exactly when the
    official code adds them (hand queries depend on fwd_pred and fwd_pred_hand only).
    """
    n_lat = cfg.resampler_num_latents
    out: Dict[str, Tuple[int, int]] = {}
    i = 0

    def add(name: str, n: int) -> None:
        nonlocal i
        out[name] = (i, i + n)
        i += n

    add("lang", 1)
    if cfg.use_state:
        add("state", 1)
    add("patch", n_lat)
    add("obs", 1)
    if cfg.use_hand_rgb:
        add("hand_patch", n_lat)
        add("hand_obs", 1)
    out["n_obs_tokens"] = (i, i)
    if cfg.act_pred:
        add("act_query", 1)
    if cfg.fwd_pred:
        add("obs_query", n_lat + 1)
        if cfg.fwd_pred_hand:
            add("obs_hand_query", n_lat + 1)
    out["n_tokens"] = (i, i)
    return out


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def sincos_2d_column_first(dim: int, grid: int) -> np.ndarray:
    """Fixed 2-D sin-cos table [grid*grid, dim] with the MAE layout.

    Patch k sits at row k // grid, column k % grid.  Channels [0, dim/2) encode the
    column, [dim/2, dim) the row; within each half: dim/4 sines then dim/4 cosines of
    pos * 10000^(-j / (dim/4)), j = 0..dim/4-1.  Computed in float64.
    """
    if dim % 4 != 0:
        raise ValueError("dim must be divisible by 4")
    quarter = dim // 4
    freqs = 1.0 / (10000.0 ** (np.arange(quarter, dtype=np.float64) / float(quarter)))
    k = np.arange(grid * grid)
    cols = (k % grid).astype(np.float64)
    rows = (k // grid).astype(np.float64)

    def one_axis(pos: np.ndarray) -> np.ndarray:
        ang = pos[:, None] * freqs[None, :]
        return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)

    return np.concatenate([one_axis(cols), one_axis(rows)], axis=1)


def _split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(..., T, n_head*d) -> (..., n_head, T, d), head-major channel split."""
    *lead, t, c = x.shape
    x = x.reshape(*lead, t, n_head, c // n_head)
    return x.transpose(-3, -2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(..., n_head, T, d) -> (..., T, n_head*d)."""
    x = x.transpose(-3, -2)
    *lead, t, h, d = x.shape
    return x.reshape(*lead, t, h * d)


# --------------------------------------------------------------------------------------
# GPT-2 trunk (transformers 4.5.1 semantics, wpe removed)
# --------------------------------------------------------------------------------------
class Conv1D(nn.Module):
    """Linear layer with weight stored [in, out]; y = x @ W + b."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.weight) + self.bias


class GPT2Attention(nn.Module):
    def __init__(self, cfg: RefConfig, buffers: bool):
        super().__init__()
        h = cfg.hidden_size
        assert h % cfg.n_head == 0
        self.n_head = cfg.n_head
        self.hidden = h
        self.has_buffers = buffers
        if buffers:
            n = cfg.n_ctx
            tri = torch.tril(torch.ones((n, n), dtype=torch.uint8)).view(1, 1, n, n)
            self.register_buffer("bias", tri, persistent=True)
            self.register_buffer("masked_bias", torch.tensor(GPT2_MASK_VALUE), persistent=True)
        self.c_attn = Conv1D(h, 3 * h)
        self.c_proj = Conv1D(h, h)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, additive_mask: Optional[torch.Tensor]) -> torch.Tensor:
        t = x.shape[-2]
        qkv = self.c_attn(x)
        q, k, v = qkv.split(self.hidden, dim=-1)
        q, k, v = (_split_heads(a, self.n_head) for a in (q, k, v))
        logits = torch.matmul(q, k.transpose(-1, -2))
        logits = logits / (float(v.shape[-1]) ** 0.5)
        if self.has_buffers:
            causal = self.bias[:, :, :t, :t].bool()
            fill = self.masked_bias.to(logits.dtype)
        else:
            causal = torch.ones((t, t), dtype=torch.bool, device=x.device).tril()
            fill = torch.tensor(GPT2_MASK_VALUE, dtype=logits.dtype, device=x.device)
        # causal: REPLACE future logits by -1e4
        logits = torch.where(causal, logits, fill)
        # key padding: ADD (1 - m) * -1e4
        if additive_mask is not None:
            logits = logits + additive_mask
        probs = torch.softmax(logits, dim=-1)
        probs = self.attn_dropout(probs)
        out = _merge_heads(torch.matmul(probs, v))
        return self.resid_dropout(self.c_proj(out))


class GPT2MLP(nn.Module):
    def __init__(self, cfg: RefConfig):
        super().__init__()
        self.c_fc = Conv1D(cfg.hidden_size, cfg.inner_dim)
        self.c_proj = Conv1D(cfg.inner_dim, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.relu(self.c_fc(x))))


class GPT2Block(nn.Module):
    def __init__(self, cfg: RefConfig, buffers: bool):
        super().__init__()
        h = cfg.hidden_size
        self.ln_1 = nn.LayerNorm(h, eps=cfg.layer_norm_epsilon)
        self.attn = GPT2Attention(cfg, buffers)
        self.ln_2 = nn.LayerNorm(h, eps=cfg.layer_norm_epsilon)
        self.mlp = GPT2MLP(cfg)

    def forward(self, x: torch.Tensor, additive_mask: Optional[torch.Tensor]) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), additive_mask)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT2Trunk(nn.Module):
    """GPT-2 without position table: inputs_embeds -> dropout -> blocks -> ln_f."""

    def __init__(self, cfg: RefConfig, gpt2_buffers: bool = False):
        super().__init__()
        h = cfg.hidden_size
        self.wte = nn.Embedding(1, h)  # present in the official state_dict, never used
        self.drop = nn.Dropout(cfg.embd_pdrop)
        self.h = nn.ModuleList([GPT2Block(cfg, gpt2_buffers) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(h, eps=cfg.layer_norm_epsilon)

    def forward(self, inputs_embeds: torch.Tensor,
                attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """inputs_embeds (B, T, H); attention_mask (B, T) with 1 = attendable key."""
        additive = None
        if attention_mask is not None:
            b = inputs_embeds.shape[0]
            m = attention_mask.reshape(b, -1)[:, None, None, :].to(inputs_embeds.dtype)
            additive = (1.0 - m) * GPT2_MASK_VALUE
        x = self.drop(inputs_embeds)
        for block in self.h:
            x = block(x, additive)
        return self.ln_f(x)


# --------------------------------------------------------------------------------------
# Perceiver resampler (flamingo-pytorch 0.1.2 semantics)
# --------------------------------------------------------------------------------------
class PerceiverAttentionRef(nn.Module):
    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        media = self.norm_media(media)
        latents = self.norm_latents(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([media, latents], dim=-2)).chunk(2, dim=-1)
        q, k, v = (_split_heads(a, self.heads) for a in (q, k, v))
        scores = torch.matmul(q * self.scale, k.transpose(-1, -2))
        probs = torch.softmax(scores, dim=-1)
        return self.to_out(_merge_heads(torch.matmul(probs, v)))


class PerceiverResamplerRef(nn.Module):
    def __init__(self, dim: int, depth: int, dim_head: int, heads: int,
                 num_latents: int, num_media_embeds: int = 1, ff_mult: int = 4):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.media_pos_emb = nn.Parameter(torch.randn(num_media_embeds, 1, dim))
        hidden = int(dim * ff_mult)
        self.layers = nn.ModuleList()
        for _ in range(depth):
            ff = nn.Sequential(
                nn.LayerNorm(dim),
                nn.Linear(dim, hidden, bias=False),
                nn.GELU(),
                nn.Linear(hidden, dim, bias=False),
            )
            self.layers.append(nn.ModuleList([PerceiverAttentionRef(dim, dim_head, heads), ff]))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (b, n, d) or (b, m, n, d) -> latents (b, m, num_latents, d)."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        b, m = x.shape[:2]
        x = x + self.media_pos_emb[:m]
        lat = self.latents.expand(b, m, *self.latents.shape)
        for attn, ff in self.layers:
            lat = lat + attn(x, lat)
            lat = lat + ff(lat)
        return self.norm(lat)


# --------------------------------------------------------------------------------------
# ViT block (MAE encoder and GR-1 video decoder), timm/DINO naming
# --------------------------------------------------------------------------------------
class ViTAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, b, heads, n, d)
        q, k, v = qkv[0], qkv[1], qkv[2]
        probs = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class ViTMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_hidden: int, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = ViTAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = ViTMlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)  # (N, width, gh, gw)
        return y.flatten(2).transpose(1, 2)  # row-major patch order


class MAEViT(nn.Module):
    """MAE ViT encoder; forward returns (CLS, patch tokens), both after ``norm``."""

    def __init__(self, cfg: RefConfig):
        super().__init__()
        w = cfg.mae_width
        self.image_size = cfg.image_size
        self.patch_embed = PatchEmbed(cfg.patch_size, w)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, w))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.n_patches + 1, w))
        self.blocks = nn.ModuleList(
            [ViTBlock(w, cfg.mae_heads, cfg.mae_mlp, cfg.mae_eps) for _ in range(cfg.mae_depth)])
        self.norm = nn.LayerNorm(w, eps=cfg.mae_eps)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        n, _, hh, ww = x.shape
        if hh != ww or hh != self.image_size:
            raise ValueError("reference MAE only supports the native square resolution "
                             "(position interpolation is a no-op there)")
        tok = self.patch_embed(x)
        tok = torch.cat([self.cls_token.expand(n, -1, -1), tok], dim=1)
        tok = tok + self.pos_embed
        for blk in self.blocks:
            tok = blk(tok)
        tok = self.norm(tok)
        return tok[:, 0], tok[:, 1:]


# --------------------------------------------------------------------------------------
# CLIP text tower (OpenAI naming)
# --------------------------------------------------------------------------------------
class CLIPSelfAttention(nn.Module):
    """Self-attention with nn.MultiheadAttention's parameter names, written by hand."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.width = width
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.split(self.width, dim=-1)
        q, k, v = (_split_heads(a, self.heads) for a in (q, k, v))
        d = q.shape[-1]
        scores = torch.matmul(q * (d ** -0.5), k.transpose(-1, -2)) + additive_mask
        probs = torch.softmax(scores, dim=-1)
        return self.out_proj(_merge_heads(torch.matmul(probs, v)))


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class CLIPMlp(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class CLIPResBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = CLIPSelfAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = CLIPMlp(width)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), additive_mask)
        x = x + self.mlp(self.ln_2(x))
        return x


class CLIPTextTransformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList([CLIPResBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        for blk in self.resblocks:
            x = blk(x, additive_mask)
        return x


class CLIPText(nn.Module):
    """Text side of OpenAI CLIP; ``encode_text`` = EOT(argmax id)-pooled, projected."""

    def __init__(self, cfg: RefConfig):
        super().__init__()
        w = cfg.clip_width
        self.context_length = cfg.clip_context_length
        self.transformer = CLIPTextTransformer(w, cfg.clip_layers, cfg.clip_heads)
        self.token_embedding = nn.Embedding(cfg.clip_vocab_size, w)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.clip_context_length, w))
        self.ln_final = nn.LayerNorm(w)
        self.text_projection = nn.Parameter(torch.zeros(w, cfg.clip_embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        t = text.shape[-1]
        x = self.token_embedding(text) + self.positional_embedding[:t]
        causal = torch.full((t, t), float("-inf"), dtype=x.dtype, device=x.device).triu(1)
        x = self.transformer(x, causal)
        x = self.ln_final(x)
        eot = text.argmax(dim=-1)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]
        return pooled @ self.text_projection

    forward = encode_text


# --------------------------------------------------------------------------------------
# GR-1
# --------------------------------------------------------------------------------------
class GR1Reference(nn.Module):
    def __init__(self, cfg: Optional[RefConfig] = None, gpt2_buffers: bool = False):
        super().__init__()
        cfg = cfg if cfg is not None else RefConfig()
        self.cfg = cfg
        h = cfg.hidden_size

        self.transformer = GPT2Trunk(cfg, gpt2_buffers)
        self.perceiver_resampler = PerceiverResamplerRef(
            dim=cfg.patch_feat_dim, depth=cfg.resampler_depth, dim_head=cfg.resampler_dim_head,
            heads=cfg.resampler_heads, num_latents=cfg.resampler_num_latents,
            num_media_embeds=cfg.resampler_num_media_embeds, ff_mult=cfg.resampler_ff_mult)

        self.model_clip = CLIPText(cfg)
        self.model_mae = MAEViT(cfg)
        for p in self.model_clip.parameters():
            p.requires_grad = False
        for p in self.model_mae.parameters():
            p.requires_grad = False

        # state
        self.embed_arm_state = nn.Linear(cfg.state_dim - 1, h)
        self.embed_gripper_state = nn.Linear(2, h)
        self.embed_state = nn.Linear(2 * h, h)
        # relative timestep
        self.embed_timestep = nn.Embedding(cfg.seq_len, h)
        # language / images
        self.embed_lang = nn.Linear(cfg.lang_feat_dim, h)
        self.embed_hand_img = nn.Linear(cfg.img_feat_dim, h)
        self.embed_img = nn.Linear(cfg.img_feat_dim, h)
        self.embed_hand_patch = nn.Linear(cfg.patch_feat_dim, h)
        self.embed_patch = nn.Linear(cfg.patch_feat_dim, h)
        self.embed_ln = nn.LayerNorm(h)
        # queries
        n_q = cfg.resampler_num_latents + 1
        self.action_queries = nn.Embedding(1, h)
        self.obs_queries = nn.Embedding(n_q, h)
        self.obs_hand_queries = nn.Embedding(n_q, h)
        # action head (affine: no activation anywhere)
        self.pred_act_mlps = nn.ModuleList([nn.Linear(h, h // 2), nn.Linear(h // 2, h // 2)])
        self.pred_arm_act = nn.Linear(h // 2, cfg.act_dim - 1)
        self.pred_gripper_act = nn.Linear(h // 2, 1)
        # video decoder
        self.decoder_embed = nn.Linear(h, h, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, h))
        self.decoder_blocks = nn.ModuleList(
            [ViTBlock(h, cfg.decoder_heads, cfg.decoder_mlp_dim, 1e-5)
             for _ in range(cfg.decoder_depth)])
        self.decoder_norm = nn.LayerNorm(h)
        self.decoder_pred = nn.Linear(h, cfg.patch_pixels, bias=True)
        pos = torch.empty(1, cfg.n_patches, h)
        if pos.device.type != "meta":
            with torch.no_grad():
                pos.copy_(torch.from_numpy(sincos_2d_column_first(h, cfg.grid)).float()[None])
        self.decoder_pos_embed = nn.Parameter(pos, requires_grad=False)

    # ---------------------------------------------------------------- components
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """CLIP encode_text output (B, clip_embed_dim), before GR-1's normalisation."""
        return self.model_clip.encode_text(tokens)

    def encode_image(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """MAE forward: images (N, 3, H, W) -> (CLS (N, W), patches (N, n_patches, W))."""
        return self.model_mae(images)

    def resample(self, patches: torch.Tensor) -> torch.Tensor:
        """Perceiver resampler: (N, n, D) or (N, 1, n, D) -> (N, 1, num_latents, D)."""
        return self.perceiver_resampler(patches)

    def trunk(self, inputs_embeds: torch.Tensor,
              attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """GPT-2 trunk over flattened tokens: (B, T, H), (B, T) -> (B, T, H) after ln_f."""
        return self.transformer(inputs_embeds, attention_mask)

    def decode(self, query_outputs: torch.Tensor) -> torch.Tensor:
        """Video decoder: trunk outputs at the [OBS] slots (B, L, n_lat+1, H) -> (B, L, n_patches, p*p*3)."""
        b, l, nq, h = query_outputs.shape
        n_p = self.cfg.n_patches
        mask_tokens = self.mask_token.expand(b, l, n_p, h) + self.decoder_pos_embed[:, None]
        x = torch.cat([self.decoder_embed(query_outputs), mask_tokens], dim=2)
        x = x.reshape(b * l, nq + n_p, h)
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x.reshape(b, l, nq + n_p, -1)[:, :, nq:]

    def action_head(self, act_outputs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, L, H) [ACT] outputs -> (arm (B, L, act_dim-1), gripper logit (B, L, 1))."""
        x = act_outputs
        for lin in self.pred_act_mlps:
            x = lin(x)
        return self.pred_arm_act(x), self.pred_gripper_act(x)

    def patchify_targets(self, images: torch.Tensor) -> torch.Tensor:
        """(B, L, 3, H, W) -> (B, L, n_patches, p*p*3), value order (pixel row, pixel col, channel);
        per-patch standardised with unbiased std + 1e-6 unless without_norm_pixel_loss."""
        b, l, c, hh, ww = images.shape
        p = self.cfg.patch_size
        x = images.reshape(b, l, c, hh // p, p, ww // p, p)
        x = x.permute(0, 1, 3, 5, 4, 6, 2).reshape(b, l, (hh // p) * (ww // p), p * p * c)
        if not self.cfg.without_norm_pixel_loss:
            mu = x.mean(dim=-1, keepdim=True)
            sd = x.var(dim=-1, unbiased=True, keepdim=True).sqrt()
            x = (x - mu) / (sd + 1e-6)
        return x

    def embed_inputs(self, rgb, hand_rgb, state, language, attention_mask):
        """Build the flattened, embed_ln-normalised token sequence and its key mask.

        Returns (tokens (B, L*n_tokens, H), key_mask (B, L*n_tokens), extras) where
        extras holds the MAE features needed by forward.
        """
        cfg = self.cfg
        b, l, c, hh, ww = rgb.shape
        h = cfg.hidden_size
        n_lat = cfg.resampler_num_latents
        if l != cfg.seq_len:
            raise ValueError(f"window length must equal seq_len={cfg.seq_len}, got {l}")
        time_emb = self.embed_timestep.weight  # (L, H)

        lang = self.encode_text(language)
        lang = lang / (lang.norm(dim=1, keepdim=True) + 1e-6)
        lang = self.embed_lang(lang.float())  # (B, H)
        lang_tok = (lang[:, None, :] + time_emb)[:, :, None]  # (B, L, 1, H)

        groups = [lang_tok]
        if cfg.use_state:
            arm = self.embed_arm_state(state["arm"].reshape(b, l, cfg.state_dim - 1))
            grip = self.embed_gripper_state(state["gripper"])
            st = self.embed_state(torch.cat([arm, grip], dim=2)) + time_emb
            groups.append(st[:, :, None])

        cls, patches = self.encode_image(rgb.reshape(b * l, c, hh, ww))
        lat = self.resample(patches).reshape(b, l, n_lat, cfg.patch_feat_dim)
        groups.append(self.embed_patch(lat.float()) + time_emb[:, None, :])
        groups.append((self.embed_img(cls.float()).reshape(b, l, h) + time_emb)[:, :, None])
        if cfg.use_hand_rgb:
            hcls, hpatches = self.encode_image(hand_rgb.reshape(b * l, c, hh, ww))
            hlat = self.resample(hpatches).reshape(b, l, n_lat, cfg.patch_feat_dim)
            groups.append(self.embed_hand_patch(hlat.float()) + time_emb[:, None, :])
            groups.append((self.embed_hand_img(hcls.float()).reshape(b, l, h) + time_emb)[:, :, None])
        n_obs = sum(g.shape[2] for g in groups)

        n_query = 0
        if cfg.act_pred:
            groups.append(self.action_queries.weight.reshape(1, 1, 1, h).expand(b, l, 1, h))
            n_query += 1
        if cfg.fwd_pred:
            groups.append(self.obs_queries.weight[None, None].expand(b, l, n_lat + 1, h))
            n_query += n_lat + 1
            if cfg.fwd_pred_hand:
                groups.append(self.obs_hand_queries.weight[None, None].expand(b, l, n_lat + 1, h))
                n_query += n_lat + 1
        n_tok = n_obs + n_query
        tokens = self.embed_ln(torch.cat(groups, dim=2).reshape(b, l * n_tok, h))

        m = attention_mask.reshape(b, l, 1).to(torch.long)
        key_mask = torch.cat([m.expand(b, l, n_obs),
                              torch.zeros((b, l, n_query), dtype=torch.long, device=m.device)],
                             dim=2).reshape(b, l * n_tok)
        return tokens, key_mask, {"n_tokens": n_tok}

    # ---------------------------------------------------------------- forward
    def forward(self, rgb, hand_rgb, state, language, attention_mask):
        cfg = self.cfg
        b, l = rgb.shape[:2]
        out = {k: None for k in ("obs_preds", "obs_targets", "obs_hand_preds",
                                 "obs_hand_targets", "arm_action_preds", "gripper_action_preds")}
        if cfg.fwd_pred:
            out["obs_targets"] = self.patchify_targets(rgb)
            if cfg.fwd_pred_hand:
                out["obs_hand_targets"] = self.patchify_targets(hand_rgb)

        tokens, key_mask, info = self.embed_inputs(rgb, hand_rgb, state, language, attention_mask)
        x = self.trunk(tokens, key_mask).reshape(b, l, info["n_tokens"], cfg.hidden_size)
        lay = token_layout(cfg)
        if cfg.act_pred:
            i0 = lay["act_query"][0]
            out["arm_action_preds"], out["gripper_action_preds"] = self.action_head(x[:, :, i0])
        if cfg.fwd_pred:
            s, e = lay["obs_query"]
            out["obs_preds"] = self.decode(x[:, :, s:e])
            if cfg.fwd_pred_hand:
                s, e = lay["obs_hand_query"]
                out["obs_hand_preds"] = self.decode(x[:, :, s:e])
        return out


# --------------------------------------------------------------------------------------
# deterministic random initialisation and counting
# --------------------------------------------------------------------------------------
_NORM_TYPES = (nn.LayerNorm,)


@torch.no_grad()
def random_init_(model: nn.Module, seed: int = 0, randomize_fixed: bool = False) -> nn.Module:
    """Fill every parameter with deterministic random values of a sensible scale.

    * LayerNorm weight: 1 + 0.1 * N(0,1); LayerNorm bias: 0.05 * N(0,1)
    * other biases (1-D params named ``bias``/``in_proj_bias``): 0.02 * N(0,1)
    * matrices (Linear, Conv1D, Conv2d, in_proj_weight, text_projection):
      N(0, 1/fan_in) where fan_in is the contracted dimension
    * embedding tables, tokens, latents, position tables, mask token: 0.1 * N(0,1)
    * logit_scale: log(1/0.07) (unused by GR-1)
    * decoder_pos_embed keeps its fixed sin-cos values unless randomize_fixed=True.
    Buffers (attn.bias / attn.masked_bias) are never touched.  Values are drawn on the
    CPU from ``torch.Generator().manual_seed(seed)`` in ``named_parameters()`` order, so
    they depend only on the config and the seed.
    """
    gen = torch.Generator().manual_seed(seed)
    norm_params = set()
    for mod in model.modules():
        if isinstance(mod, _NORM_TYPES):
            for p in mod.parameters(recurse=False):
                norm_params.add(id(p))

    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("decoder_pos_embed") and not randomize_fixed:
            continue
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if id(p) in norm_params:
            val = 1.0 + 0.1 * noise if leaf == "weight" else 0.05 * noise
        elif leaf == "logit_scale":
            val = torch.full(p.shape, math.log(1 / 0.07))
        elif leaf in ("bias", "in_proj_bias"):
            val = 0.02 * noise
        elif name.endswith("text_projection"):
            val = noise / math.sqrt(p.shape[0])
        elif isinstance(_owner(model, name), Conv1D):
            val = noise / math.sqrt(p.shape[0])  # [in, out]
        elif isinstance(_owner(model, name), nn.Conv2d):
            val = noise / math.sqrt(p[0].numel())
        elif isinstance(_owner(model, name), nn.Linear) or leaf == "in_proj_weight":
            val = noise / math.sqrt(p.shape[1])  # [out, in]
        else:  # embeddings, cls/pos/latents/mask tokens
            val = 0.1 * noise
        p.copy_(val.to(p.dtype))
    return model


def _owner(model: nn.Module, param_name: str) -> nn.Module:
    mod_name = param_name.rsplit(".", 1)[0] if "." in param_name else ""
    return model.get_submodule(mod_name) if mod_name else model


def count_params(model: nn.Module, trainable_only: bool = False, prefix: str = "") -> int:
    """Number of parameter elements (works on the meta device)."""
    return sum(p.numel() for n, p in model.named_parameters()
               if n.startswith(prefix) and (p.requires_grad or not trainable_only))
