"""TransNetV2 on CUDA gives the same transitions as on CPU (the CPU path is what CI runs)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.gpu


def _cut_video(n_scenes: int = 6, shot: int = 40, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Tiny frames [N, 27, 48, 3]: colour-block scenes with a moving square, joined by hard cuts."""
    rng = np.random.default_rng(seed)
    frames, cuts = [], []
    for s in range(n_scenes):
        base = np.kron(rng.integers(0, 255, (3, 4, 3)), np.ones((9, 12, 1))).astype(np.uint8)
        for t in range(shot):
            f = base.copy()
            f[10:18, t % 40 : t % 40 + 8] = 255
            frames.append(f)
        cuts.append(s * shot)
    return np.stack(frames), cuts[1:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_predictions_match_cpu() -> None:
    from pipelines import shot_detect as sd
    from pipelines.stages.shot_split import detect_transitions
    from pipelines.transnet import TransNet

    frames, cuts = _cut_video()
    cpu, gpu = TransNet(device="cpu"), TransNet(device="cuda")
    p_cpu, p_gpu = cpu.predict(frames), gpu.predict(frames)
    assert np.abs(p_cpu.single - p_gpu.single).max() < 1e-2
    t_cpu, _ = detect_transitions(frames, "transnetv2", cpu)
    t_gpu, _ = detect_transitions(frames, "transnetv2", gpu)
    assert [(t.start, t.kind) for t in t_gpu] == [(t.start, t.kind) for t in t_cpu]
    assert [t.start for t in t_gpu if t.kind == "cut"] == cuts
    assert isinstance(t_gpu[0], sd.Transition)
