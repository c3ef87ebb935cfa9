"""Aesthetic scoring: the real math on tiny real torch modules, loading weights from files, and
the fail-fast paths when weights are missing. No CLIP weights can be downloaded here, so the
ViT-L/14 itself is not run; an open_clip round trip runs when open_clip imports."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from curation.schema import Clip
from models.aesthetic import (
    AestheticWeightsMissing,
    aesthetic_head,
    aesthetic_unavailable_reason,
    keyframe_indices,
    load_aesthetic_head,
    load_clip_image_encoder,
    preprocess,
    score_frames,
)
from pipelines.clip_frames import clip_sparse
from pipelines.decode import decode_video
from pipelines.stages.aesthetic_scorer import AestheticScorer
from pipelines.tasks import ClipTask

torch = pytest.importorskip("torch")
nn = torch.nn

DIM = 32
WIDTHS = (16, 8, 8, 4)
MEAN, STD = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])


def seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """A module built under a fixed seed, without touching the global torch RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build().eval()


@pytest.fixture(scope="module")
def encoder() -> nn.Module:
    """A small real image encoder: float [n, 3, 224, 224] -> [n, DIM]."""
    return seeded(lambda: nn.Sequential(
        nn.Conv2d(3, 8, 7, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, DIM),
    ), 0)  # fmt: skip


@pytest.fixture(scope="module")
def head() -> nn.Module:
    return seeded(lambda: aesthetic_head(DIM, WIDTHS), 1)


def frames(seed: int, n: int = 3, h: int = 144, w: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------- the math


def test_preprocess_is_clip_normalisation_and_a_centre_crop() -> None:
    square = frames(0, n=1, h=224, w=224)  # already 224: resizing is the identity
    expected = (square[0] / 255.0 - MEAN) / STD
    np.testing.assert_allclose(preprocess(square)[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)

    wide = frames(1, n=1)  # 256x144 -> 398x224, the central 224 columns are kept
    other = wide.copy()
    other[:, :, :50] = 0  # differences well outside the crop (plus the bicubic kernel's reach)
    other[:, :, 206:] = 255
    a, b = preprocess(wide), preprocess(other)
    assert a.shape == (1, 3, 224, 224) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)


def test_preprocess_and_score_do_not_depend_on_the_input_dtype(encoder: nn.Module, head: nn.Module) -> None:
    u8 = frames(2)
    as_float = u8.astype(np.float32) / 255.0
    torch.testing.assert_close(preprocess(u8), preprocess(as_float), atol=1e-6, rtol=0)
    score_u8, score_float = score_frames(u8, encoder, head)[0], score_frames(as_float, encoder, head)[0]
    assert score_u8 == pytest.approx(score_float, abs=1e-5)


def test_score_is_the_head_on_unit_embeddings_averaged_over_frames(
    encoder: nn.Module, head: nn.Module
) -> None:
    x = frames(3)
    score, embedding = score_frames(x, encoder, head)
    with torch.no_grad():
        raw = encoder(preprocess(x))
        unit = raw / raw.norm(dim=1, keepdim=True)
        per_frame = head(unit)[:, 0]
        mean_unit = unit.mean(dim=0)
    assert score == pytest.approx(float(per_frame.mean()), abs=1e-5)
    np.testing.assert_allclose(embedding, (mean_unit / mean_unit.norm()).numpy(), atol=1e-6)
    assert embedding.shape == (DIM,) and embedding.dtype == np.float32
    assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)


def test_different_frames_change_score_and_embedding(encoder: nn.Module, head: nn.Module) -> None:
    x = frames(4)
    brighter = np.clip(x.astype(np.int16) + 80, 0, 255).astype(np.uint8)
    (s1, e1), (s2, e2) = score_frames(x, encoder, head), score_frames(brighter, encoder, head)
    (s3, e3) = score_frames(frames(5), encoder, head)
    assert abs(s1 - s2) > 1e-4 and abs(s1 - s3) > 1e-4
    assert float(e1 @ e2) < 1 - 1e-6 and float(e1 @ e3) < 1 - 1e-6
    assert score_frames(x, encoder, head) == (s1, pytest.approx(e1))  # deterministic (dropout off)


def test_keyframes_are_first_middle_last() -> None:
    assert keyframe_indices(0) == [] and keyframe_indices(1) == [0] and keyframe_indices(2) == [0, 1]
    assert keyframe_indices(9) == [0, 4, 8]


# ----------------------------------------------------------------- weights from files


def test_head_matches_the_published_laion_state_dict_layout() -> None:
    shapes = {k: tuple(v.shape) for k, v in aesthetic_head().state_dict().items()}
    assert shapes == {
        "layers.0.weight": (1024, 768), "layers.0.bias": (1024,),
        "layers.2.weight": (128, 1024), "layers.2.bias": (128,),
        "layers.4.weight": (64, 128), "layers.4.bias": (64,),
        "layers.6.weight": (16, 64), "layers.6.bias": (16,),
        "layers.7.weight": (1, 16), "layers.7.bias": (1,),
    }  # fmt: skip


def test_head_loads_from_a_saved_state_dict(tmp_path: Path, head: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(5, DIM, generator=gen), dim=1)
    for i, saved in enumerate([head.state_dict(), {"state_dict": head.state_dict()}]):
        path = tmp_path / f"head{i}.pth"
        torch.save(saved, path)
        loaded = load_aesthetic_head(str(path), DIM, WIDTHS)
        with torch.no_grad():
            torch.testing.assert_close(loaded(emb), head(emb))
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_aesthetic_head(str(tmp_path / "head0.pth"))  # a 768-d head cannot take these weights


def test_missing_weights_fail_fast_with_what_to_set(tmp_path: Path) -> None:
    reason = aesthetic_unavailable_reason(None, None)
    assert reason is not None
    for key in (
        "scores.aesthetic.clip_weights", "scores.aesthetic.mlp_weights", "ViT-L-14",
        "sac+logos+ava1-l14-linearMSE.pth"
    ):
        assert key in reason
    mlp = tmp_path / "mlp.pth"
    mlp.write_bytes(b"")
    assert "nope.bin" in (aesthetic_unavailable_reason(str(tmp_path / "nope.bin"), str(mlp)) or "")
    with pytest.raises(AestheticWeightsMissing, match="clip_weights"):
        AestheticScorer().setup()
    with pytest.raises(AestheticWeightsMissing, match="nope.bin"):
        AestheticScorer(clip_weights=str(tmp_path / "nope.bin"), mlp_weights=str(mlp)).setup()
    with pytest.raises(AestheticWeightsMissing):
        load_clip_image_encoder(str(tmp_path / "nope.bin"))
    with pytest.raises(AestheticWeightsMissing):
        load_aesthetic_head(str(tmp_path / "nope.pth"))


@pytest.fixture
def open_clip_module() -> Iterator[object]:
    try:
        import open_clip
    except Exception as e:  # not installed, or torchvision built for another torch
        pytest.skip(f"open_clip unavailable: {type(e).__name__}: {e}")
    yield open_clip


def test_open_clip_checkpoint_round_trip(tmp_path: Path, open_clip_module: object) -> None:
    """A tiny open_clip ViT saved as a state dict loads back through the loader, same outputs."""
    open_clip = open_clip_module
    name = "vidloom-tiny-vit"
    config = {
        "embed_dim": DIM,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 224, "layers": 1, "width": 64, "head_width": 32, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    }
    (tmp_path / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(str(tmp_path / f"{name}.json"))  # type: ignore[attr-defined]
    model = seeded(lambda: open_clip.create_model(name), 2)  # type: ignore[attr-defined,no-any-return]
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    visual = load_clip_image_encoder(str(tmp_path / "tiny.pt"), name)
    x = preprocess(frames(6))
    with torch.no_grad():
        torch.testing.assert_close(visual(x), model.encode_image(x))


# ----------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(path, frames dir) of a 4 s 320x180 25 fps testsrc2 mp4, decoded once."""
    d = tmp_path_factory.mktemp("aesthetic")
    path = d / "src.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x180:rate=25:duration=4", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(path)], check=True, capture_output=True)  # fmt: skip
    return str(path), decode_video(str(path), str(d / "frames")).frames.dir


def test_stage_scores_keyframes_of_every_clip(
    encoder: nn.Module, head: nn.Module, decoded: tuple[str, str]
) -> None:
    stage = AestheticScorer()
    stage._encoder, stage._head = encoder, head
    stage.setup()  # models already there: nothing to load
    clip = Clip("c0", "v0", 0, 0, 75, 0.0, 3.0, 320, 180, 25.0, status="rejected")
    task = stage.process(ClipTask(clip=clip, src_path=decoded[0], frames_dir=decoded[1]))
    sparse, _ = clip_sparse(task)
    assert len(sparse) == 6  # 2 fps over 3 s: keyframes 0, 3, 5
    expected, _ = score_frames(sparse[[0, 3, 5]], encoder, head)
    assert task.clip.scores.aesthetic == pytest.approx(expected, abs=1e-4)
    assert task.clip.status == "rejected" and task.error is None

    failed = ClipTask(clip=Clip("c1", "v0", 0, 0, 75, 0.0, 3.0, 320, 180, 25.0), src_path=decoded[0],
                      frames_dir=decoded[1], error="extract: boom")  # fmt: skip
    assert stage.process(failed).clip.scores.aesthetic is None
    done = ClipTask(clip=Clip("c2", "v0", 0, 0, 75, 0.0, 3.0, 320, 180, 25.0), src_path=decoded[0],
                    frames_dir=decoded[1], todo=("hash",))  # fmt: skip
    assert stage.process(done).clip.scores.aesthetic is None  # already scored in an earlier run
