"""Behavioural tests of MM-RoPE and the decoupled spatial/temporal attention layers."""

from __future__ import annotations

import inspect

import pytest
import torch

from models.dit.attention import AttentionConfig, SpatialAttention, TemporalAttention
from models.dit.rope import apply_rope, text_positions, text_start, visual_positions

T, H, W, L, C = 3, 4, 4, 5, 32
CFG = AttentionConfig(dim=C, heads=2, window=(2, 2))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _inputs(B: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.randn(B, T, H * W, C)
    text = torch.randn(B, L, C)
    return x, text, visual_positions(T, H, W), text_positions(L, text_start(T, H, W))


def test_positions_layout() -> None:
    pos = visual_positions(2, 3, 4, t0=5)
    assert pos.shape == (24, 3)
    assert pos[0].tolist() == [5, 0, 0] and pos[-1].tolist() == [6, 2, 3] and pos[1].tolist() == [5, 0, 1]
    tp = text_positions(3, text_start(2, 3, 4, t0=5))
    assert tp.tolist() == [[7, 7, 7], [8, 8, 8], [9, 9, 9]]


def _scores(q: torch.Tensor, k: torch.Tensor, pq: torch.Tensor, pk: torch.Tensor) -> torch.Tensor:
    return apply_rope(q, pq) @ apply_rope(k, pk).transpose(-1, -2)


@pytest.mark.parametrize("shift", [(3, 5, 7), (0, 0, 11), (20, 1, 0)])
def test_rope_visual_relative_invariance(shift: tuple[int, int, int]) -> None:
    q, k = torch.randn(1, 2, T * H * W, 16), torch.randn(1, 2, T * H * W, 16)
    pos = visual_positions(T, H, W)
    ref = _scores(q, k, pos, pos)
    moved = pos + torch.tensor(shift)
    torch.testing.assert_close(_scores(q, k, moved, moved), ref, atol=1e-5, rtol=0)
    # ...and the rotation really depends on position (not a no-op).
    assert not torch.allclose(apply_rope(q, moved), apply_rope(q, pos))


def test_rope_text_relative_invariance() -> None:
    q, k = torch.randn(2, 2, L, 16), torch.randn(2, 2, L, 16)
    p0, p1 = text_positions(L, 0), text_positions(L, 37)
    torch.testing.assert_close(_scores(q, k, p1, p1), _scores(q, k, p0, p0), atol=1e-5, rtol=0)


def test_rope_joint_shift_keeps_text_visual_scores() -> None:
    """Shifting text and video together by the same (c, c, c) keeps cross-modal scores."""
    pos = torch.cat([text_positions(L, text_start(T, H, W)), visual_positions(T, H, W)])
    q, k = torch.randn(1, 2, len(pos), 16), torch.randn(1, 2, len(pos), 16)
    torch.testing.assert_close(_scores(q, k, pos + 9, pos + 9), _scores(q, k, pos, pos), atol=1e-5, rtol=0)


def test_spatial_never_mixes_frames() -> None:
    layer = SpatialAttention(CFG)
    x, text, vp, tp = _inputs()
    out, _ = layer(x, text, vp, tp)
    assert out.shape == x.shape
    x2 = x.clone()
    x2[:, 1] += torch.randn_like(x2[:, 1]) * 3
    out2, _ = layer(x2, text, vp, tp)
    torch.testing.assert_close(out2[:, [0, 2]], out[:, [0, 2]], atol=1e-6, rtol=0)
    assert (out2[:, 1] - out[:, 1]).abs().max() > 1e-3


def test_spatial_sees_text_and_respects_text_mask() -> None:
    layer = SpatialAttention(CFG)
    x, text, vp, tp = _inputs()
    mask = torch.ones(2, L, dtype=torch.bool)
    mask[:, -2:] = False
    out, txt_out = layer(x, text, vp, tp, text_mask=mask)
    assert txt_out.shape == text.shape
    text2 = text.clone()
    text2[:, -2:] += 5.0  # padding tokens: invisible
    out2, _ = layer(x, text2, vp, tp, text_mask=mask)
    torch.testing.assert_close(out2, out, atol=1e-6, rtol=0)
    text2[:, 0] += 5.0  # a real token: every frame sees it
    out3, _ = layer(x, text2, vp, tp, text_mask=mask)
    assert ((out3 - out).abs().amax(dim=(2, 3)) > 1e-3).all()


def test_spatial_multi_shot_text_only_reaches_its_frames() -> None:
    layer = SpatialAttention(CFG)
    x, text, vp, tp = _inputs()
    shot_of_frame = torch.tensor([[0, 0, 1], [0, 1, 1]])
    text_shot = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]])
    out, txt_out = layer(x, text, vp, tp, shot_of_frame=shot_of_frame, text_shot=text_shot)
    text2 = text.clone()
    text2[text_shot == 0] += torch.randn_like(text2[text_shot == 0]) * 3  # perturb shot 0's caption
    out2, txt_out2 = layer(x, text2, vp, tp, shot_of_frame=shot_of_frame, text_shot=text_shot)
    in_a = shot_of_frame == 0  # [B, T]
    torch.testing.assert_close(out2[~in_a], out[~in_a], atol=1e-6, rtol=0)
    assert ((out2[in_a] - out[in_a]).abs().amax(dim=(1, 2)) > 1e-3).all()
    # The text stream of shot 1 reads only shot-1 frames and shot-1 text.
    torch.testing.assert_close(txt_out2[text_shot == 1], txt_out[text_shot == 1], atol=1e-6, rtol=0)
    # A frame perturbation of shot 1 leaves shot 0's text stream alone.
    x2 = x.clone()
    x2[~in_a] += 3.0
    _, txt_out3 = layer(x2, text, vp, tp, shot_of_frame=shot_of_frame, text_shot=text_shot)
    torch.testing.assert_close(txt_out3[text_shot == 0], txt_out[text_shot == 0], atol=1e-6, rtol=0)


def test_temporal_mixes_only_within_window() -> None:
    layer = TemporalAttention(CFG)
    x, _, vp, _ = _inputs()
    out = layer(x, vp, (H, W))
    assert out.shape == x.shape
    t0, hh, ww = 1, 2, 1  # token in window (1, 0) of frame 1
    x2 = x.clone()
    x2[:, t0, hh * W + ww] += 3.0
    changed = (layer(x2, vp, (H, W)) - out).abs().amax(dim=(0, 3)) > 1e-6  # [T, H*W]
    hs, ws = torch.arange(H * W) // W, torch.arange(H * W) % W
    same_window = (hs // 2 == hh // 2) & (ws // 2 == ww // 2)  # [H*W]
    assert changed[:, ~same_window].sum() == 0
    assert changed[:, same_window].all()  # every frame, every token of the window


def test_temporal_has_no_text() -> None:
    params = inspect.signature(TemporalAttention.forward).parameters
    assert not any("text" in p or "txt" in p for p in params)
    # No text weights either, so its output cannot depend on text.
    assert not any("text" in n for n, _ in TemporalAttention(CFG).named_parameters())


def test_temporal_rejects_indivisible_grid() -> None:
    layer = TemporalAttention(CFG)
    x = torch.randn(1, T, 3 * 4, C)
    with pytest.raises(ValueError):
        layer(x, visual_positions(T, 3, 4), (3, 4))


def _capture_qk(layer: torch.nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    for name, mod in layer.named_modules():
        if name.endswith(("q_norm", "k_norm")):
            mod.register_forward_hook(lambda _m, _i, o: seen.append(o.detach()))
    return seen


@pytest.mark.parametrize("cls", [SpatialAttention, TemporalAttention])
def test_qk_norm_bounds_logits_under_huge_inputs(cls: type[torch.nn.Module]) -> None:
    layer = cls(CFG)
    seen = _capture_qk(layer)
    x, text, vp, tp = _inputs()
    x, text = x * 1e6, text * 1e6
    out = layer(x, text, vp, tp)[0] if cls is SpatialAttention else layer(x, vp, (H, W))
    assert torch.isfinite(out).all()
    head_dim = C // CFG.heads
    assert len(seen) == (4 if cls is SpatialAttention else 2)
    for z in seen:  # unit RMS per head (RMSNorm weight starts at 1)
        rms = z.pow(2).mean(-1).sqrt()
        torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-3, rtol=0)
    # So every pre-softmax logit q.k/sqrt(d) is bounded by sqrt(d), whatever the input scale:
    # the softmax cannot saturate to one-hot beyond exp(2*sqrt(d)) contrast.
    q, k = seen[0], seen[1]
    logits = q @ k.transpose(-1, -2) / head_dim**0.5
    assert logits.abs().max() <= head_dim**0.5 + 1e-3


def test_spatial_unmasked_path_equals_an_all_visible_mask() -> None:
    """Without a text mask or shots no attention mask is built (flash-eligible); the result must be
    what an all-True mask gives, for the visual and the text outputs alike."""
    attn = SpatialAttention(CFG).eval()
    x, text, vp, tp = _inputs()
    with torch.no_grad():
        dv0, dt0 = attn(x, text, vp, tp)
        dv1, dt1 = attn(x, text, vp, tp, text_mask=torch.ones(2, L, dtype=torch.bool))
    torch.testing.assert_close(dv0, dv1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dt0, dt1, rtol=1e-5, atol=1e-6)


def test_qk_norm_follows_the_input_dtype() -> None:
    """The QK-norm keeps a float32 weight but normalises bf16 input in bf16 (the fused kernel),
    agreeing with the float32 result to bf16 precision."""
    from models.dit.attention import QKNorm

    norm = QKNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 16) * 3
    out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16 and norm.weight.dtype == torch.float32
    torch.testing.assert_close(out.float(), torch.nn.functional.rms_norm(x, (16,), norm.weight, 1e-6),
                               rtol=2e-2, atol=2e-2)
