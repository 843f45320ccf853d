"""Sanity tests of the PyTorch GR-1 reference itself (tests/torch_reference).

The expected key list below is written out from shared/reference/gr1.md section 6
(dumped from the official class), independently of the reference's module code.
Full-size models are only built on the meta device (no allocation).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.torch_reference import (GR1Reference, RefConfig, count_params, official_losses_numpy,
                                   random_init_, sincos_2d_column_first)
from tests.torch_reference.gr1_torch import token_layout


# ----------------------------------------------------------------------------- helpers
def tiny_cfg(**kw) -> RefConfig:
    base = dict(hidden_size=32, n_layer=2, n_head=4, seq_len=4, resampler_depth=1,
                resampler_dim_head=8, resampler_heads=2, resampler_num_latents=3,
                image_size=16, patch_size=8, mae_width=24, mae_depth=1, mae_heads=2, mae_mlp=48,
                clip_vocab_size=64, clip_context_length=12, clip_width=16, clip_layers=1,
                clip_heads=2, clip_embed_dim=20, decoder_depth=1, decoder_heads=4)
    base.update(kw)
    return RefConfig(**base)


def make_inputs(cfg, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    L, S = cfg.seq_len, cfg.image_size
    rgb = torch.randn(batch, L, 3, S, S, generator=g)
    hand = torch.randn(batch, L, 3, S, S, generator=g)
    arm = torch.randn(batch, L, 6, generator=g)
    grip = F.one_hot(torch.randint(0, 2, (batch, L), generator=g), 2).float()
    lang = torch.randint(1, cfg.clip_vocab_size - 1, (batch, cfg.clip_context_length), generator=g)
    lang[:, 4] = cfg.clip_vocab_size - 1  # EOT = largest id
    lang[:, 5:] = 0
    mask = torch.ones(batch, L, dtype=torch.long)
    return rgb, hand, {"arm": arm, "gripper": grip}, lang, mask


def tiny_model(seed=0, **kw):
    cfg = tiny_cfg(**kw)
    torch.manual_seed(seed)
    return random_init_(GR1Reference(cfg), seed).eval()


def expected_official_keys(buffers: bool):
    """gr1.md section 6.1 / 6.2, official sizes."""
    k = {"transformer.wte.weight": (1, 384)}
    for n in range(12):
        p = f"transformer.h.{n}."
        k.update({p + "ln_1.weight": (384,), p + "ln_1.bias": (384,),
                  p + "attn.c_attn.weight": (384, 1152), p + "attn.c_attn.bias": (1152,),
                  p + "attn.c_proj.weight": (384, 384), p + "attn.c_proj.bias": (384,),
                  p + "ln_2.weight": (384,), p + "ln_2.bias": (384,),
                  p + "mlp.c_fc.weight": (384, 1536), p + "mlp.c_fc.bias": (1536,),
                  p + "mlp.c_proj.weight": (1536, 384), p + "mlp.c_proj.bias": (384,)})
        if buffers:
            k[p + "attn.bias"] = (1, 1, 1024, 1024)
            k[p + "attn.masked_bias"] = ()
    k.update({"transformer.ln_f.weight": (384,), "transformer.ln_f.bias": (384,)})
    r = "perceiver_resampler."
    k.update({r + "latents": (9, 768), r + "media_pos_emb": (1, 1, 768),
              r + "norm.weight": (768,), r + "norm.bias": (768,)})
    for n in range(3):
        p = f"{r}layers.{n}."
        k.update({p + "0.norm_media.weight": (768,), p + "0.norm_media.bias": (768,),
                  p + "0.norm_latents.weight": (768,), p + "0.norm_latents.bias": (768,),
                  p + "0.to_q.weight": (512, 768), p + "0.to_kv.weight": (1024, 768),
                  p + "0.to_out.weight": (768, 512),
                  p + "1.0.weight": (768,), p + "1.0.bias": (768,),
                  p + "1.1.weight": (3072, 768), p + "1.3.weight": (768, 3072)})
    lin = {"embed_arm_state": (384, 6), "embed_gripper_state": (384, 2),
           "embed_state": (384, 768), "embed_lang": (384, 512), "embed_img": (384, 768),
           "embed_patch": (384, 768), "embed_hand_img": (384, 768),
           "embed_hand_patch": (384, 768), "pred_act_mlps.0": (192, 384),
           "pred_act_mlps.1": (192, 192), "pred_arm_act": (6, 192), "pred_gripper_act": (1, 192),
           "decoder_embed": (384, 384), "decoder_pred": (768, 384)}
    for name, shp in lin.items():
        k[name + ".weight"] = shp
        k[name + ".bias"] = (shp[0],)
    k.update({"embed_timestep.weight": (10, 384), "embed_ln.weight": (384,),
              "embed_ln.bias": (384,), "action_queries.weight": (1, 384),
              "obs_queries.weight": (10, 384), "obs_hand_queries.weight": (10, 384),
              "mask_token": (1, 1, 1, 384), "decoder_pos_embed": (1, 196, 384),
              "decoder_norm.weight": (384,), "decoder_norm.bias": (384,)})
    for n in range(2):
        p = f"decoder_blocks.{n}."
        k.update({p + "norm1.weight": (384,), p + "norm1.bias": (384,),
                  p + "attn.qkv.weight": (1152, 384), p + "attn.qkv.bias": (1152,),
                  p + "attn.proj.weight": (384, 384), p + "attn.proj.bias": (384,),
                  p + "norm2.weight": (384,), p + "norm2.bias": (384,),
                  p + "mlp.fc1.weight": (1536, 384), p + "mlp.fc1.bias": (1536,),
                  p + "mlp.fc2.weight": (384, 1536), p + "mlp.fc2.bias": (384,)})
    top = dict(k)
    m = "model_mae."
    k.update({m + "cls_token": (1, 1, 768), m + "pos_embed": (1, 197, 768),
              m + "patch_embed.proj.weight": (768, 3, 16, 16), m + "patch_embed.proj.bias": (768,),
              m + "norm.weight": (768,), m + "norm.bias": (768,)})
    for n in range(12):
        p = f"{m}blocks.{n}."
        k.update({p + "norm1.weight": (768,), p + "norm1.bias": (768,),
                  p + "attn.qkv.weight": (2304, 768), p + "attn.qkv.bias": (2304,),
                  p + "attn.proj.weight": (768, 768), p + "attn.proj.bias": (768,),
                  p + "norm2.weight": (768,), p + "norm2.bias": (768,),
                  p + "mlp.fc1.weight": (3072, 768), p + "mlp.fc1.bias": (3072,),
                  p + "mlp.fc2.weight": (768, 3072), p + "mlp.fc2.bias": (768,)})
    c = "model_clip."
    k.update({c + "token_embedding.weight": (49408, 512), c + "positional_embedding": (77, 512),
              c + "ln_final.weight": (512,), c + "ln_final.bias": (512,),
              c + "text_projection": (512, 512), c + "logit_scale": ()})
    for n in range(12):
        p = f"{c}transformer.resblocks.{n}."
        k.update({p + "attn.in_proj_weight": (1536, 512), p + "attn.in_proj_bias": (1536,),
                  p + "attn.out_proj.weight": (512, 512), p + "attn.out_proj.bias": (512,),
                  p + "ln_1.weight": (512,), p + "ln_1.bias": (512,),
                  p + "mlp.c_fc.weight": (2048, 512), p + "mlp.c_fc.bias": (2048,),
                  p + "mlp.c_proj.weight": (512, 2048), p + "mlp.c_proj.bias": (512,),
                  p + "ln_2.weight": (512,), p + "ln_2.bias": (512,)})
    return top, k


@pytest.fixture(scope="module")
def meta_models():
    with torch.device("meta"):
        return GR1Reference(RefConfig()), GR1Reference(RefConfig(), gpt2_buffers=True)


# ----------------------------------------------------------------------------- layout
@pytest.mark.parametrize("buffers", [False, True])
def test_official_state_dict_keys_and_shapes(meta_models, buffers):
    model = meta_models[1 if buffers else 0]
    top, full = expected_official_keys(buffers)
    sd = model.state_dict()
    got = {k: tuple(v.shape) for k, v in sd.items()}
    assert set(got) == set(full), sorted(set(got) ^ set(full))[:20]
    assert got == full
    n_top = sum(1 for k in got if not k.startswith(("model_mae.", "model_clip.")))
    assert n_top == (270 if buffers else 246) == len(top)
    assert sum(1 for k in got if k.startswith("model_mae.")) == 150
    if buffers:
        assert sd["transformer.h.3.attn.bias"].dtype == torch.uint8
        assert sd["transformer.h.3.attn.masked_bias"].dtype == torch.float32
    assert all(v.dtype == torch.float32 for k, v in sd.items() if not k.endswith(".attn.bias"))


def test_gpt2_buffer_values():
    cfg = tiny_cfg(n_ctx=8)
    m = GR1Reference(cfg, gpt2_buffers=True)
    b = m.state_dict()["transformer.h.1.attn.bias"]
    assert torch.equal(b, torch.tril(torch.ones(8, 8, dtype=torch.uint8))[None, None])
    assert m.state_dict()["transformer.h.1.attn.masked_bias"].item() == -1e4
    assert not any(k.endswith((".attn.bias", ".attn.masked_bias")) for k in GR1Reference(cfg).state_dict())


def test_parameter_counts(meta_models):
    model = meta_models[0]
    assert count_params(model, trainable_only=True) == 45_988_039
    assert count_params(model, prefix="transformer.") == 21_294_720
    assert count_params(model, prefix="perceiver_resampler.") == 18_897_408
    assert count_params(model, prefix="model_mae.") == 85_798_656
    assert count_params(model, prefix="model_clip.") == 63_428_097
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n in frozen if n.startswith(("model_mae.", "model_clip."))} | {"decoder_pos_embed"}
    assert "decoder_pos_embed" in frozen


def test_token_layout_official():
    lay = token_layout(RefConfig())
    assert lay["n_tokens"][0] == 43 and lay["n_obs_tokens"][0] == 22
    assert lay["state"] == (1, 2) and lay["patch"] == (2, 11) and lay["obs"] == (11, 12)
    assert lay["hand_patch"] == (12, 21) and lay["act_query"] == (22, 23)
    assert lay["obs_query"] == (23, 33) and lay["obs_hand_query"] == (33, 43)
    assert token_layout(RefConfig(fwd_pred=False, fwd_pred_hand=False))["n_tokens"][0] == 23
    pre = RefConfig(use_state=False, use_hand_rgb=False, act_pred=False, fwd_pred_hand=False)
    assert token_layout(pre)["n_tokens"][0] == 21


def test_decoder_pos_embed_column_first():
    tab = sincos_2d_column_first(384, 14)
    assert tab.shape == (196, 384)
    # patch 1 = (row 0, col 1): first half encodes the column
    assert tab[1, 0] == pytest.approx(math.sin(1.0)) and tab[1, 96] == pytest.approx(math.cos(1.0))
    assert tab[1, 192] == 0.0 and tab[1, 288] == 1.0
    # patch 14 = (row 1, col 0)
    assert tab[14, 0] == 0.0 and tab[14, 192] == pytest.approx(math.sin(1.0))
    assert tab[14, 193] == pytest.approx(math.sin(10000 ** (-1 / 96)))
    m = GR1Reference(tiny_cfg(image_size=32, patch_size=8))
    ref = sincos_2d_column_first(32, 4).astype(np.float32)
    assert np.array_equal(m.decoder_pos_embed[0].numpy(), ref)
    assert not m.decoder_pos_embed.requires_grad


def test_random_init_deterministic_and_nontrivial():
    a = random_init_(GR1Reference(tiny_cfg()), 3).state_dict()
    b = random_init_(GR1Reference(tiny_cfg()), 3).state_dict()
    c = random_init_(GR1Reference(tiny_cfg()), 4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["embed_ln.bias"], c["embed_ln.bias"])
    for k, v in a.items():
        if k != "decoder_pos_embed":
            assert v.numel() == 1 or v.float().std() > 0, k
    assert (a["embed_ln.weight"] - 1).abs().max() > 0.01


# ----------------------------------------------------------------------------- forward
def test_forward_shapes_and_targets():
    m = tiny_model()
    cfg = m.cfg
    x = make_inputs(cfg)
    with torch.no_grad():
        out = m(*x)
    L, n_p = cfg.seq_len, cfg.n_patches
    assert out["obs_preds"].shape == out["obs_hand_preds"].shape == (2, L, n_p, 192)
    assert out["arm_action_preds"].shape == (2, L, 6)
    assert out["gripper_action_preds"].shape == (2, L, 1)
    # target patch k = (row k // grid, col k % grid), values ordered (pixel row, pixel col, channel)
    rgb = x[0]
    raw = rgb[0, 1, :, 8:16, 0:8].permute(1, 2, 0).reshape(-1)  # row 1, col 0 -> k = 2
    want = (raw - raw.mean()) / (raw.std(unbiased=True) + 1e-6)
    assert torch.allclose(out["obs_targets"][0, 1, 2], want, atol=1e-6)
    m2 = tiny_model(without_norm_pixel_loss=True)
    with torch.no_grad():
        assert torch.equal(m2(*x)["obs_targets"][0, 1, 2], raw)
    m3 = tiny_model(fwd_pred=False, fwd_pred_hand=False)
    with torch.no_grad():
        o3 = m3(*x)
    assert o3["obs_preds"] is None and o3["obs_targets"] is None and o3["obs_hand_preds"] is None


def test_padded_steps_do_not_affect_any_prediction():
    """Padded steps' observation keys are masked; queries are read-outs, so no output
    (not even the garbage outputs at padded steps) may depend on padded content."""
    m = tiny_model()
    rgb, hand, state, lang, mask = make_inputs(m.cfg)
    rgb2, hand2 = rgb.clone(), hand.clone()
    rgb2[:, 2:] = torch.randn_like(rgb2[:, 2:]) * 3
    hand2[:, 2:] = 0.0
    st2 = {"arm": state["arm"].clone(), "gripper": state["gripper"].clone()}
    st2["arm"][:, 2:] = 7.0
    keys = ("obs_preds", "obs_hand_preds", "arm_action_preds", "gripper_action_preds")
    with torch.no_grad():
        # sensitivity: with every step valid the perturbation reaches steps >= 2
        a = m(rgb, hand, state, lang, mask)
        b = m(rgb2, hand2, st2, lang, mask)
        for k in keys:
            assert torch.equal(a[k][:, :2], b[k][:, :2]), k
            assert not torch.allclose(a[k][:, 2:], b[k][:, 2:]), k
        mask[:, 2:] = 0
        a = m(rgb, hand, state, lang, mask)
        b = m(rgb2, hand2, st2, lang, mask)
    for k in keys:
        assert torch.equal(a[k], b[k]), k
    assert not torch.allclose(a["obs_targets"][:, 2:], b["obs_targets"][:, 2:])


def test_causality_future_steps_invisible():
    m = tiny_model()
    rgb, hand, state, lang, mask = make_inputs(m.cfg)
    with torch.no_grad():
        a = m(rgb, hand, state, lang, mask)
        rgb2 = rgb.clone()
        rgb2[:, 2] += 1.0
        b = m(rgb2, hand, state, lang, mask)
    for k in ("obs_preds", "arm_action_preds"):
        assert torch.allclose(a[k][:, :2], b[k][:, :2], atol=1e-6, rtol=0), k
        assert not torch.allclose(a[k][:, 2:], b[k][:, 2:], atol=1e-4), k


def test_query_tokens_are_never_attended():
    m = tiny_model()
    cfg = m.cfg
    x = make_inputs(m.cfg)
    with torch.no_grad():
        tokens, key_mask, info = m.embed_inputs(*x)
        n = info["n_tokens"]
        lay = token_layout(cfg)
        q_start = lay["n_obs_tokens"][0]
        is_query = torch.zeros(cfg.seq_len, n, dtype=torch.bool)
        is_query[:, q_start:] = True
        assert torch.equal(key_mask.bool(), (~is_query).reshape(1, -1).expand(2, -1))
        base = m.trunk(tokens, key_mask)
        # The perturbation is a random direction, not a constant: every block starts with a
        # per-token LayerNorm, which removes a constant added to all channels (the change
        # would then be float rounding, ~1e-6). A unit-variance direction moves the
        # normalised token by O(1) (tokens here have std ~1), so "changes" means > 1e-2,
        # four orders above rounding and ~100x below what is measured (0.1-2).
        direction = torch.randn(tokens.shape[-1], generator=torch.Generator().manual_seed(0))
        for pos in (lay["act_query"][0], lay["obs_query"][0] + 4, n + lay["obs_hand_query"][0]):
            t2 = tokens.clone()
            t2[:, pos] += direction
            out = m.trunk(t2, key_mask)
            others = torch.ones(tokens.shape[1], dtype=torch.bool)
            others[pos] = False
            assert torch.equal(out[:, others], base[:, others])
            assert (out[:, pos] - base[:, pos]).abs().max() > 1e-2   # its own input reaches it
        # an observation token of step 0 is seen by everything after it
        t3 = tokens.clone()
        t3[:, 0] += direction
        out = m.trunk(t3, key_mask)
        assert (out[:, -1] - base[:, -1]).abs().max() > 1e-2


def test_act_only_model_matches_full_model_actions():
    full = tiny_model()
    act = GR1Reference(tiny_cfg(fwd_pred=False, fwd_pred_hand=False)).eval()
    act.load_state_dict(full.state_dict())
    x = make_inputs(full.cfg)
    with torch.no_grad():
        a, b = full(*x), act(*x)
    assert torch.allclose(a["arm_action_preds"], b["arm_action_preds"], atol=1e-5, rtol=0)
    assert torch.allclose(a["gripper_action_preds"], b["gripper_action_preds"], atol=1e-5, rtol=0)


def test_use_state_false_drops_state_token_only():
    m = tiny_model(use_state=False)
    x = make_inputs(m.cfg)
    with torch.no_grad():
        tokens, _, info = m.embed_inputs(*x)
        assert info["n_tokens"] == token_layout(m.cfg)["n_tokens"][0] == 1 + 3 + 1 + 3 + 1 + 1 + 4 + 4
        out = m(*x)
        st = {"arm": x[2]["arm"] + 1.0, "gripper": x[2]["gripper"]}
        out2 = m(x[0], x[1], st, x[3], x[4])
    assert torch.equal(out["arm_action_preds"], out2["arm_action_preds"])
    assert "embed_state.weight" in m.state_dict()


def test_encode_text_eot_pooling_and_causality():
    m = tiny_model()
    lang = make_inputs(m.cfg)[3]
    with torch.no_grad():
        a = m.encode_text(lang)
        lang2 = lang.clone()
        lang2[:, 6] = 3  # after EOT: invisible to the EOT position (causal)
        b = m.encode_text(lang2)
        lang3 = lang.clone()
        lang3[:, 1] = 7  # before EOT: visible
        c = m.encode_text(lang3)
    assert a.shape == (2, m.cfg.clip_embed_dim)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_train_mode_dropout_is_active():
    m = tiny_model().train()
    x = make_inputs(m.cfg)
    torch.manual_seed(0)
    a = m(*x)["arm_action_preds"]
    torch.manual_seed(1)
    b = m(*x)["arm_action_preds"]
    assert not torch.allclose(a, b)


# ----------------------------------------------------------------------------- losses
def test_losses_numpy_against_torch():
    g = torch.Generator().manual_seed(0)
    B, L, N, D = 3, 6, 5, 12
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    out = {"obs_preds": torch.randn(B, L, N, D, generator=g),
           "obs_targets": torch.randn(B, L, N, D, generator=g),
           "obs_hand_preds": None, "obs_hand_targets": None,
           "arm_action_preds": 2 * torch.randn(B, L, 6, generator=g),
           "gripper_action_preds": 3 * torch.randn(B, L, 1, generator=g)}
    arm_t = torch.randn(B, L, 6, generator=g)
    grip_t = torch.randint(0, 2, (B, L), generator=g).float()
    got = official_losses_numpy(out, arm_t, grip_t, mask, fwd_pred_next_n=3)
    v = mask.bool()
    # video: pairs (t, t+3) with a valid target, i.e. frames t = 0..2 of sample 0, t=0 of sample 1
    pairs = [(b, t) for b in range(B) for t in range(L - 3) if mask[b, t + 3]]
    assert pairs == [(0, 0), (0, 1), (0, 2), (1, 0)]
    want_v = torch.stack([((out["obs_preds"][b, t] - out["obs_targets"][b, t + 3]) ** 2).mean()
                          for b, t in pairs]).mean()
    assert got["loss_video"] == pytest.approx(want_v.item(), rel=1e-6)
    assert got["loss_video_hand"] is None
    want_arm = F.smooth_l1_loss(out["arm_action_preds"][v], arm_t[v], beta=1.0)
    assert got["loss_arm"] == pytest.approx(want_arm.item(), rel=1e-6)
    want_g = F.binary_cross_entropy_with_logits(out["gripper_action_preds"][..., 0][v], grip_t[v])
    assert got["loss_gripper"] == pytest.approx(want_g.item(), rel=1e-6)
    # all-padded batch -> zeros, not NaN
    z = official_losses_numpy(out, arm_t, grip_t, torch.zeros(B, L), fwd_pred_next_n=3)
    assert z["loss_video"] == 0.0 and z["loss_arm"] == 0.0 and z["loss_gripper"] == 0.0
