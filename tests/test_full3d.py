"""Full 3D attention blocks (models/dit/full3d.py) and the attention benchmark's harness (no timings)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bench import attention as bench_attention
from models.dit.attention import AttentionConfig
from models.dit.blocks import Modulation, SpatialBlock, TemporalBlock
from models.dit.full3d import (
    DecoupledStack,
    Full3DBlock,
    Full3DStack,
    Full3DVisualBlock,
    full3d_dit,
    n_params,
)
from models.dit.model import DiT, DiTConfig
from models.dit.rope import text_positions, text_start, visual_positions

T, H, W, L, C = 4, 4, 4, 5, 32
CFG = AttentionConfig(dim=C, heads=2, window=(2, 2))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _live(module: nn.Module) -> nn.Module:
    """Give every adaLN modulation random weights, so no block is the adaLN-zero identity."""
    for m in module.modules():
        if isinstance(m, Modulation):
            nn.init.normal_(m.proj.weight, std=0.5)
    return module.eval()


def _inputs(B: int = 2) -> dict:
    return {
        "x": torch.randn(B, T, H * W, C),
        "text": torch.randn(B, L, C),
        "temb": torch.randn(B, C),
        "vis_pos": visual_positions(T, H, W),
        "txt_pos": text_positions(L, text_start(T, H, W)),
    }


def _frame0_perturbed(inp: dict) -> dict:
    x = inp["x"].clone()
    x[:, 0] += torch.randn_like(x[:, 0])
    return {**inp, "x": x}


def test_full3d_block_mixes_frames_unlike_spatial() -> None:
    spatial = _live(SpatialBlock(CFG, 4.0))
    full = Full3DBlock(CFG, 4.0)
    full.load_state_dict(spatial.state_dict())
    inp = _inputs()
    moved = _frame0_perturbed(inp)
    s0, s1 = spatial(**inp)[0], spatial(**moved)[0]
    f0, f1 = full(**inp)[0], full(**moved)[0]
    torch.testing.assert_close(s1[:, 3], s0[:, 3], atol=0, rtol=0)  # spatial: frames independent
    assert (f1[:, 3] - f0[:, 3]).abs().max() > 1e-3  # full 3D: frame 0 reaches frame 3
    assert f0.shape == (2, T, H * W, C)


def test_full3d_visual_block_mixes_across_windows_unlike_temporal() -> None:
    temporal = _live(TemporalBlock(CFG, 4.0))
    full = Full3DVisualBlock(CFG, 4.0)
    full.load_state_dict(temporal.state_dict())
    inp = _inputs()
    x = inp["x"].clone()
    x[:, 0, 0] += torch.randn(C)  # token (t=0, h=0, w=0): window (0, 0)
    args = (inp["temb"], inp["vis_pos"], (H, W))
    far = (H - 1) * W + (W - 1)  # token (h=3, w=3) of frame 3: another window
    t0, t1 = temporal(inp["x"], *args), temporal(x, *args)
    f0, f1 = full(inp["x"], *args), full(x, *args)
    torch.testing.assert_close(t1[:, 3, far], t0[:, 3, far], atol=0, rtol=0)
    assert (f1[:, 3, far] - f0[:, 3, far]).abs().max() > 1e-4


def test_single_frame_full3d_equals_spatial() -> None:
    """With T = 1 the full-3D block is exactly the spatial block (the reshape changes nothing else)."""
    spatial = _live(SpatialBlock(CFG, 4.0))
    full = Full3DBlock(CFG, 4.0)
    full.load_state_dict(spatial.state_dict())
    x, text, temb = torch.randn(2, 1, H * W, C), torch.randn(2, L, C), torch.randn(2, C)
    mask = torch.tensor([[True] * L, [True] * (L - 2) + [False] * 2])
    args = (x, text, temb, visual_positions(1, H, W), text_positions(L, text_start(1, H, W)), mask)
    for a, b in zip(full(*args), spatial(*args), strict=True):
        torch.testing.assert_close(a, b)


def test_parameter_counts_equal_and_state_dicts_interchangeable() -> None:
    dec, f3d = DecoupledStack(CFG, depth=2), Full3DStack(CFG, depth=2)
    assert n_params(dec) == n_params(f3d) > 0
    f3d.load_state_dict(dec.state_dict())  # strict: same names and shapes
    cfg = DiTConfig.tiny()
    assert n_params(full3d_dit(cfg)) == n_params(DiT(cfg))
    assert full3d_dit(cfg).state_dict().keys() == DiT(cfg).state_dict().keys()


def test_rope_positions_follow_the_flattened_tokens() -> None:
    """Shifting every position by one 3-vector changes nothing; reordering the frames' times does."""
    stack = _live(Full3DStack(CFG, depth=1)).double()
    inp = {k: (v.double() if v.is_floating_point() else v) for k, v in _inputs().items()}
    inp["hw"] = (H, W)
    ref_x, ref_t = stack(**inp)
    shift = torch.tensor([3, 5, 7])
    out_x, out_t = stack(**{**inp, "vis_pos": inp["vis_pos"] + shift, "txt_pos": inp["txt_pos"] + shift})
    torch.testing.assert_close(out_x, ref_x, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out_t, ref_t, atol=1e-9, rtol=1e-9)
    # Every token keeps its own (t, h, w): reversing time of the positions alone changes the output.
    rev = inp["vis_pos"].clone()
    rev[:, 0] = T - 1 - rev[:, 0]
    assert (stack(**{**inp, "vis_pos": rev})[0] - ref_x).abs().max() > 1e-6


def test_full3d_dit_forward_and_multishot_rejected() -> None:
    cfg = DiTConfig.tiny()
    model = _live(full3d_dit(cfg))
    x, t, text = torch.randn(1, 4, 2, 8, 8), torch.rand(1), torch.randn(1, 3, cfg.text_dim)
    assert model(x, t, text).shape == x.shape
    with pytest.raises(NotImplementedError):
        model(x, t, text, shot_of_frame=torch.zeros(1, 2, dtype=torch.long),
              text_shot=torch.zeros(1, 3, dtype=torch.long))


def test_stack_flops_full3d_equals_decoupled_when_one_frame_one_window() -> None:
    a = bench_attention.stack_flops(64, 2, 4.0, (4, 4), 1, 16, 8, full3d=True)
    b = bench_attention.stack_flops(64, 2, 4.0, (4, 4), 1, 16, 8, full3d=False)
    assert a == b > 0
    big = [bench_attention.stack_flops(64, 2, 4.0, (4, 4), 16, 256, 8, f) for f in (True, False)]
    assert big[0] > 2 * big[1]


def test_bench_run_tiny_rows_well_formed() -> None:
    r = bench_attention.run(sizes=[(2, 2, 2), (2, 4, 4)], dim=32, heads=2, depth=1, repeats=1,
                            text_len=4, window=(2, 2))
    assert r["params"]["equal"] and r["params"]["decoupled"] > 0
    assert [row["tokens"] for row in r["rows"]] == [8, 32]
    for row in r["rows"]:
        assert row["ms_decoupled"] > 0 and row["ms_full3d"] > 0 and row["ratio"] > 0
        assert row["params_decoupled"] == row["params_full3d"]
        assert row["gflops_decoupled"] >= 0 and row["flops_ratio"] > 0
    assert r["largest"] == r["rows"][-1]
    json.dumps(r)


def test_bench_run_skips_sizes_over_the_step_limit(capsys: pytest.CaptureFixture[str]) -> None:
    r = bench_attention.run(sizes=[(2, 2, 2), (4, 4, 4)], dim=32, heads=2, depth=1, repeats=1,
                            text_len=4, window=(2, 2), max_step_s=1e-9)
    first, second = r["rows"]
    assert first["ms_full3d"] > 0 and second["ms_full3d"] is None and second["ratio"] is None
    assert "max_step_s" in second["skipped_full3d"] and "max_step_s" in second["skipped_decoupled"]
    assert r["largest"] == first
    bench_attention.print_report(r)
    assert "skipped" in capsys.readouterr().out
