"""Shot detection on committed real footage (Sintel trailer excerpts, CC-BY; tests/data/real/README.md).

Exact cut frames (+-1), the cut to black and fade-in as one transition, and no cut while a
large foreground object sweeps across the frame or the camera pans slowly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.decode import decode_video, load_tiny
from pipelines.stages.shot_split import detect_transitions

REAL = Path(__file__).resolve().parent / "data" / "real"


@pytest.fixture(scope="module")
def model() -> object:
    from pipelines.transnet import TransNet

    return TransNet(threads=2)


def tiny(name: str, tmp: Path) -> np.ndarray:
    return np.asarray(load_tiny(decode_video(str(REAL / name), str(tmp / name)).frames))


@pytest.mark.parametrize("detector", ["transnetv2", "transnetv2-full"])
def test_real_cuts_fade_and_a_sweeping_foreground(model: object, detector: str, tmp_path: Path) -> None:
    frames = tiny("sintel_cuts.mp4", tmp_path)
    assert len(frames) == 192
    trs, _ = detect_transitions(frames, detector, model, fps=24.0)
    cuts = [t.start for t in trs if t.kind == "cut"]
    gradual = [(t.start, t.end, t.kind) for t in trs if t.kind != "cut"]
    assert len(cuts) == 3, trs
    assert all(abs(c - want) <= 1 for c, want in zip(cuts, [31, 81, 118], strict=True)), trs
    # the cut to black at 132 and the fade-in after the black frames are one fade
    assert len(gradual) == 1, trs
    start, end, kind = gradual[0]
    assert kind == "fade" and abs(start - 132) <= 1 and 150 <= end <= 170, trs
    # frames 172-191: a dragon's wing sweeps across the frame, no new shot
    assert not [t for t in trs if t.start >= 166], trs


@pytest.mark.parametrize("detector", ["transnetv2", "transnetv2-full"])
def test_a_pan_over_dunes_has_no_cut_and_its_dissolve_into_the_title_card_no_cut(
    model: object, detector: str, tmp_path: Path
) -> None:
    frames = tiny("sintel_title.mp4", tmp_path)
    assert len(frames) == 108
    # frames 0-59: one slow pan over the dunes (source frames 880-939)
    trs, _ = detect_transitions(frames[:60], detector, model, fps=24.0)
    assert trs == []
    # from 60 (source 940) the dunes dissolve into the logo card: gradual, never a cut
    trs, _ = detect_transitions(frames, detector, model, fps=24.0)
    assert all(t.kind != "cut" and t.start >= 55 for t in trs), trs
