"""Behavioural tests of the DiT: shapes, adaLN-zero init, multi-shot text, I2V, T2I, overfit, FLOPs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.dit.blocks import SpatialBlock, TemporalBlock
from models.dit.model import DiT, DiTConfig, flops_per_step, sample, token_linear_params, velocity_fn
from models.dit.rope import text_positions, text_start, visual_positions
from training.loop.flow_matching import flow_matching_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread

C, L = 4, 6


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _randomize(model: nn.Module, std: float = 0.1) -> nn.Module:
    """Give the zero-initialised (adaLN-zero, final projection) weights random values, as after training."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, std)
    return model


def _text(B: int = 2) -> torch.Tensor:
    return torch.randn(B, L, DiTConfig.tiny().text_dim)


@pytest.mark.parametrize(
    ("patch", "thw"), [((1, 2, 2), (3, 8, 8)), ((1, 2, 2), (1, 8, 4)), ((2, 2, 2), (4, 4, 8))]
)
def test_output_shape_and_patchify_roundtrip(patch: tuple[int, int, int], thw: tuple[int, int, int]) -> None:
    model = _randomize(DiT(DiTConfig(**{**DiTConfig.tiny().__dict__, "patch": patch})))
    x = torch.randn(2, C, *thw)
    assert torch.equal(model.unpatchify(model.patchify(x), thw), x)
    v = model(x, torch.rand(2), _text(), text_mask=torch.tensor([[1] * L, [1] * 3 + [0] * 3]).bool())
    assert v.shape == x.shape and torch.isfinite(v).all()


def test_patchify_puts_one_patch_in_one_token() -> None:
    model = DiT(DiTConfig.tiny())
    x = torch.zeros(1, C, 2, 4, 4)
    x[0, :, 1, 2:4, 0:2] = 1.0  # frame 1, patch row 1, patch column 0
    tokens = model.patchify(x)  # [1, 2, 4, C*4]
    assert tokens.shape == (1, 2, 4, C * 4)
    nonzero = tokens.abs().sum(-1).nonzero().tolist()
    assert nonzero == [[0, 1, 2]] and (tokens[0, 1, 2] == 1).all()


def test_adaln_zero_init_output_zero_and_blocks_identity() -> None:
    cfg = DiTConfig.tiny()
    model = DiT(cfg)
    x, t, text = torch.randn(2, C, 2, 8, 8), torch.rand(2), _text()
    assert torch.equal(model(x, t, text), torch.zeros_like(x))

    T, H, W, D = 2, 4, 4, cfg.dim
    h, txt, temb = torch.randn(2, T, H * W, D), torch.randn(2, L, D), torch.randn(2, D)
    vis_pos, txt_pos = visual_positions(T, H, W), text_positions(L, text_start(T, H, W))
    blocks = [b for b in model.modules() if isinstance(b, SpatialBlock | TemporalBlock)]
    assert len(blocks) == 2 * cfg.depth
    for block in blocks:
        if isinstance(block, SpatialBlock):
            h2, txt2 = block(h, txt, temb, vis_pos, txt_pos)
            assert torch.equal(h2, h) and torch.equal(txt2, txt)
        else:
            assert torch.equal(block(h, temb, vis_pos, (H, W)), h)

    # Zero init must not block learning: the final projection gets a gradient at once.
    (model(x, t, text) - x).pow(2).sum().backward()
    assert model.final_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("temporal", [False, True])
def test_shot_text_conditions_only_its_own_frames_without_temporal_mixing(temporal: bool) -> None:
    cfg = DiTConfig(**{**DiTConfig.tiny().__dict__, "temporal": temporal})
    model = _randomize(DiT(cfg)).eval()
    B, T = 1, 4
    x, t = torch.randn(B, C, T, 8, 8), torch.rand(B)
    shot_of_frame = torch.tensor([[0, 0, 1, 1]])
    text_shot = torch.tensor([[0, 0, 0, 1, 1, 1]])
    text = _text(B)
    perturbed = text.clone()
    perturbed[:, :3] += torch.randn_like(perturbed[:, :3])  # shot 0's caption only
    with torch.no_grad():
        v = model(x, t, text, shot_of_frame=shot_of_frame, text_shot=text_shot)
        v2 = model(x, t, perturbed, shot_of_frame=shot_of_frame, text_shot=text_shot)
    change = (v2 - v).abs().amax(dim=(0, 1, 3, 4))  # per frame
    assert (change[:2] > 1e-3).all()  # shot 0 frames follow their caption
    if temporal:
        assert (change[2:] > 1e-5).all()  # temporal layers carry it into shot 1 ...
    else:
        assert (change[2:] < 1e-6).all()  # ... and only they do


def test_condition_channels_are_read() -> None:
    model = _randomize(DiT(DiTConfig.tiny()))
    x, t, text = torch.randn(1, C, 2, 8, 8), torch.rand(1), _text(1)
    mask = torch.tensor([[True, False]])
    with torch.no_grad():
        v1 = model(x, t, text, cond=torch.randn_like(x), cond_mask=mask)
        v2 = model(x, t, text, cond=torch.randn_like(x), cond_mask=mask)
        v_t2v = model(x, t, text)
    assert not torch.allclose(v1, v2) and not torch.allclose(v1, v_t2v)
    with pytest.raises(ValueError, match="cond_mask"):
        model(x, t, text, cond=x)


@pytest.mark.parametrize(("heun", "cfg_scale"), [(False, 1.0), (True, 1.0), (False, 4.0)])
def test_i2v_sample_returns_condition_frame_exactly(heun: bool, cfg_scale: float) -> None:
    model = _randomize(DiT(DiTConfig.tiny())).eval()
    B, T = 2, 3
    cond = torch.zeros(B, C, T, 8, 8)
    cond[:, :, 0] = torch.randn(B, C, 8, 8)  # the encoded image
    mask = torch.tensor([[True, False, False]] * B)
    noise = torch.randn(B, C, T, 8, 8)
    kwargs = {"text": _text(B), "cond": cond, "cond_mask": mask}
    out = sample(
        model, noise, kwargs, 4, heun=heun, cfg_scale=cfg_scale, uncond_kwargs={"text": _text(B) * 0}
    )
    assert torch.equal(out[:, :, 0], cond[:, :, 0])
    assert not torch.allclose(out[:, :, 1:], noise[:, :, 1:])  # the other frames were generated


def test_t2i_single_frame() -> None:
    model = _randomize(DiT(DiTConfig.tiny())).eval()
    noise = torch.randn(2, C, 1, 8, 8)
    out = sample(model, noise, {"text": _text()}, steps=3, cfg_scale=3.0, uncond_kwargs={"text": _text() * 0})
    assert out.shape == noise.shape and torch.isfinite(out).all()


def test_tiny_model_overfits_one_pair() -> None:
    model = DiT(DiTConfig.tiny())
    fn = velocity_fn(model)
    x0 = torch.randn(1, C, 2, 8, 8)
    cond = {"text": _text(1)}
    g = torch.Generator().manual_seed(0)
    eval_t = torch.linspace(0.1, 0.9, 8)
    eval_noise = torch.randn(8, *x0.shape[1:], generator=g)
    eval_cond = {"text": cond["text"].expand(8, -1, -1)}

    def eval_loss() -> float:
        with torch.no_grad():
            x0s = x0.expand(8, -1, -1, -1, -1)
            return flow_matching_loss(fn, x0s, eval_cond, t=eval_t, noise=eval_noise)[0].item()

    before = eval_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    batch = 4
    xb, cb = x0.expand(batch, -1, -1, -1, -1), {"text": cond["text"].expand(batch, -1, -1)}
    for _ in range(200):
        loss, _ = flow_matching_loss(fn, xb, cb, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < before / 5, (before, after)


def _token_linear_weights(model: DiT) -> tuple[int, int]:
    """Count token-wise Linear weights of a real model, split into visual and text streams."""
    visual = text = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or "mod." in name + "." or name.startswith("t_embed"):
            continue
        if name.startswith("text_proj") or ".attn.text." in name or ".txt_mlp." in name:
            text += module.weight.numel()
        else:
            visual += module.weight.numel()
    return visual, text


@pytest.mark.parametrize("changes", [{}, {"temporal": False}, {"cond": False, "patch": (2, 2, 2)}])
def test_flops_formula_matches_params(changes: dict) -> None:
    cfg = DiTConfig(**{**DiTConfig.tiny().__dict__, **changes})
    assert token_linear_params(cfg) == _token_linear_weights(DiT(cfg))
    p_vis, p_txt = token_linear_params(cfg)
    # Attention is a small fraction at this size: 6 * params * tokens is a lower bound within 2x.
    T, H, W = 4, 16, 16
    n = (T // cfg.patch[0]) * (H // 2) * (W // 2)
    dense = 6 * (p_vis * n + p_txt * L)
    assert dense < flops_per_step(cfg, T, H, W, L) < 2 * dense


def test_flops_monotone_in_tokens() -> None:
    cfg = DiTConfig.b1()
    base = flops_per_step(cfg, 8, 32, 32, 128)
    assert flops_per_step(cfg, 16, 32, 32, 128) > base
    assert flops_per_step(cfg, 8, 64, 32, 128) > base
    assert flops_per_step(cfg, 8, 32, 32, 256) > base


def test_b1_preset_is_about_one_billion_params() -> None:
    with torch.device("meta"):
        n = sum(p.numel() for p in DiT(DiTConfig.b1()).parameters())
    assert 0.9e9 < n < 1.2e9
