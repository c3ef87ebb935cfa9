"""training/inference/generate.py: checkpoint -> video tensor -> mp4, on a tiny random-weight "dit"
checkpoint."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from models.dit.model import DiT
from models.text_encoder import ByteEncoder
from models.vae.causal_vae import VAE
from training.config import StageConfig, tiny, to_dict
from training.inference.generate import generate, generate_to_file, load_image, resolve_settings, write_mp4
from training.loop.checkpoint import load_pipeline, save_checkpoint, save_dit_run

STEPS = 3
FAST = {"n_frames": 5, "size": (32, 64), "steps": STEPS}  # 2 latent frames, 4x8 latent grid


def _config():
    cfg = tiny()
    # The last stage gives the defaults; keep it small so default-size tests stay fast.
    cfg.stages[-1] = StageConfig("video-high", 0.3, n_frames=9, size=(32, 64), fps=12.0, global_batch=4)
    return cfg


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory holding one "dit" checkpoint (random weights, non-trivial latent stats)."""
    root = tmp_path_factory.mktemp("gen_run")
    cfg = _config()
    torch.manual_seed(0)
    dit = DiT(cfg.dit)
    with torch.no_grad():  # adaLN-zero gates and the final projection start at 0: wake them up
        for param in dit.parameters():
            if not param.any():
                param.normal_(0.0, 0.05)
    text = ByteEncoder(cfg.text.byte)
    vae = VAE(cfg.vae)
    c = cfg.vae.latent_channels
    stats = {"mean": 0.1 * torch.randn(c), "std": 0.5 + torch.rand(c)}
    save_dit_run(root, 7, cfg, dit, text, vae, stats)
    return root


@pytest.fixture(scope="module")
def pipeline(run_dir: Path):
    return load_pipeline(run_dir)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 100x60 gradient PNG with a bright centred square (center-cropped to each target aspect)."""
    y, x = np.mgrid[0:60, 0:100]
    arr = np.stack([x * 2.5, y * 4.0, 255 - x * 2.5], -1).astype(np.uint8)
    arr[20:40, 40:60] = 255
    path = tmp_path_factory.mktemp("img") / "first.png"
    Image.fromarray(arr).save(path)
    return path


def _probe(path: Path) -> tuple[int, int, int, float]:
    """(decoded frames, height, width, average fps) of an mp4."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n = sum(1 for _ in container.decode(stream))
        return n, stream.height, stream.width, float(stream.average_rate)


def test_generate_to_file_writes_mp4(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub dir" / "視頻 ü.mp4"  # unicode name, parent created
    summary = generate_to_file(run_dir, "a red ball rolls", out, steps=STEPS)
    assert summary["path"] == str(out) and out.is_file()
    assert summary["frames"] == 9 and summary["size"] == [32, 64] and summary["fps"] == 12.0
    assert summary["seconds"] == pytest.approx(9 / 12) and summary["step"] == 7
    assert _probe(out) == (9, 32, 64, 12.0)
    assert not list(out.parent.glob("*.part"))


def test_generate_to_file_i2v_and_overrides(run_dir: Path, image_path: Path, tmp_path: Path) -> None:
    ckpt = next((run_dir / "checkpoints").glob("step_*.pt"))
    out = tmp_path / "clip"  # no .mp4 suffix: the container format is still mp4
    summary = generate_to_file(ckpt, "一只猫", out, image=image_path, fps=7.5, cfg_scale=1.0, **FAST)
    assert summary["frames"] == 5 and summary["image"] == str(image_path)
    assert _probe(out) == (5, 32, 64, 7.5)


def test_write_mp4_odd_size_and_fractional_fps(tmp_path: Path) -> None:
    video = torch.rand(3, 4, 17, 23) * 2 - 1
    path = write_mp4(video, tmp_path / "odd.mp4", fps=30000 / 1001)
    n, h, w, fps = _probe(path)
    assert (n, h, w) == (4, 18, 24) and fps == pytest.approx(29.97, abs=1e-3)
    with pytest.raises(ValueError, match=r"\[3, T, H, W\]"):
        write_mp4(torch.zeros(4, 2, 8, 8), tmp_path / "bad.mp4", fps=8)
    assert not (tmp_path / "bad.mp4").exists()


def test_seed_determinism(pipeline) -> None:
    a = generate(pipeline, "waves on a beach", seed=1, **FAST)
    b = generate(pipeline, "waves on a beach", seed=1, **FAST)
    c = generate(pipeline, "waves on a beach", seed=2, **FAST)
    assert a.shape == (3, 5, 32, 64) and a.dtype == torch.float32
    assert float(a.min()) >= -1.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3
    d = generate(pipeline, "a city at night", seed=1, **FAST)  # the prompt matters too
    assert (a - d).abs().max() > 1e-4


def test_heun_and_t2i(pipeline) -> None:
    v = generate(pipeline, "x", heun=True, **FAST)
    assert v.shape == (3, 5, 32, 64) and torch.isfinite(v).all()
    img = generate(pipeline, "x", n_frames=1, size=(32, 64), steps=2)
    assert img.shape == (3, 1, 32, 64)


def test_i2v_first_frame_is_vae_reconstruction(pipeline, image_path: Path) -> None:
    video = generate(pipeline, "the square moves", image=image_path, seed=3, **FAST)
    with torch.no_grad():
        pixels = load_image(image_path, (32, 64))[None, :, None]
        z = pipeline.latent_stats.normalize(pipeline.vae.encode(pixels).mean)
        recon = pipeline.vae.decode(pipeline.latent_stats.denormalize(z))[0, :, 0].clamp(-1, 1)
    torch.testing.assert_close(video[:, 0], recon, atol=1e-5, rtol=1e-5)
    # The conditioned frame is the image's, not the noise's: another seed keeps it, moves the rest.
    other = generate(pipeline, "the square moves", image=image_path, seed=4, **FAST)
    torch.testing.assert_close(other[:, 0], video[:, 0], atol=1e-5, rtol=1e-5)
    assert (other[:, 1:] - video[:, 1:]).abs().max() > 1e-3


def test_load_image_crops_to_aspect(image_path: Path) -> None:
    x = load_image(image_path, (32, 32))  # 100x60 -> center 60x60 -> 32x32
    assert x.shape == (3, 32, 32) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert float(x[:, 16, 16].min()) > 0.99  # the bright square stays centred
    assert float(x[0, 16, 0]) < float(x[0, 16, -1])  # red ramps left to right


def test_bad_settings(pipeline, image_path: Path) -> None:
    cfg = pipeline.config
    assert resolve_settings(cfg) == (9, (32, 64), 12.0)
    with pytest.raises(ValueError, match="n_frames must be 1 \\+ 4k"):
        generate(pipeline, "x", n_frames=8, size=(32, 64))
    with pytest.raises(ValueError, match=r"multiples of \(32, 32\)"):
        generate(pipeline, "x", n_frames=5, size=(48, 64))
    with pytest.raises(ValueError, match="size"):
        resolve_settings(cfg, size=(0, 64))
    with pytest.raises(ValueError, match="fps"):
        resolve_settings(cfg, fps=0)
    with pytest.raises(ValueError, match="steps"):
        generate(pipeline, "x", steps=0, **{k: v for k, v in FAST.items() if k != "steps"})
    with pytest.raises(ValueError, match="n_frames > 1"):
        generate(pipeline, "x", image=image_path, n_frames=1, size=(32, 64))
    with pytest.raises(FileNotFoundError, match="conditioning image"):
        generate(pipeline, "x", image=image_path.with_name("missing.png"), **FAST)


def test_bad_checkpoints(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        generate_to_file(tmp_path / "nope.pt", "x", tmp_path / "o.mp4")
    with pytest.raises(FileNotFoundError, match="no loadable checkpoint"):
        generate_to_file(tmp_path, "x", tmp_path / "o.mp4")
    cfg = _config()
    vae = VAE(cfg.vae)
    net = {"vae." + k: v for k, v in vae.state_dict().items()}
    vae_run = tmp_path / "vae_run"
    save_checkpoint(vae_run, 1, {"kind": "vae", "config": to_dict(cfg), "net": net, "ema": net})
    with pytest.raises(ValueError, match="'vae' checkpoint; generation needs a 'dit' one"):
        generate_to_file(vae_run, "x", tmp_path / "o.mp4")
    assert not (tmp_path / "o.mp4").exists()
