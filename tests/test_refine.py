"""training/post/refine.py: the cascade super-resolution refiner, its training on tiny real shards, cascade
generation (``generate(..., refine=)``), timings and batch generation from a prompt file."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.dit.model import DiT
from models.text_encoder import ByteEncoder
from models.vae.causal_vae import VAE
from tests.train_shards import make_mp4, write_test_shards
from training.config import StageConfig, tiny, to_dict
from training.data import ShardDataset, decode_video
from training.inference.generate import generate, generate_to_file, write_mp4
from training.inference.generate_batch import generate_batch, read_prompts, slugify
from training.loop.checkpoint import latest_checkpoint, load_checkpoint, load_pipeline, save_checkpoint
from training.post.inputs import RunInputs
from training.post.refine import (
    RefinerDiT,
    RefinerTrainer,
    apply_overrides,
    downsample_pixels,
    load_refiner,
    refine_latent,
    refine_preset,
    upsample_latent,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread

HI = (64, 128)  # refiner output; the base runs at 32x64
FRAMES = 1
STEPS = 300
SETTINGS = ["num_workers=1", "eval_samples=2", "ckpt_every=1000", "log_every=1000", "lr=0.003",
            "ema_decay=0.9", "warmup_steps=5"]


def _base_config():
    cfg = tiny()
    cfg.stages[-1] = StageConfig("video-high", 0.3, n_frames=5, size=(32, 64), fps=12.0, global_batch=4)
    return cfg


def _stats(vae: VAE, shards: Path) -> dict[str, torch.Tensor]:
    """Per-channel mean/std of the VAE latents of the shards (what a VAE run stores)."""
    ds = ShardDataset(shards, n_frames=5, fps=12.0, size=HI)
    with torch.no_grad():
        z = torch.cat([vae.encode(ds.get(i)["video"][None]).mean for i in range(len(ds))])
    flat = z.transpose(0, 1).reshape(z.shape[1], -1)
    return {"mean": flat.mean(1), "std": flat.std(1)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Shards, a base "dit" run (random DiT, random VAE with real latent stats), a trained refiner."""
    root = tmp_path_factory.mktemp("refine")
    shards = write_test_shards(root, [("128x64", 30) for _ in range(8)])
    cfg = _base_config()
    torch.manual_seed(0)
    dit, text, vae = DiT(cfg.dit), ByteEncoder(cfg.text.byte), VAE(cfg.vae)
    net = {"dit." + k: v for k, v in dit.state_dict().items()}
    net |= {"text." + k: v for k, v in text.state_dict().items()}
    frozen = {"vae": vae.state_dict(), "latent_stats": _stats(vae, shards)}
    save_checkpoint(root / "base", 3, {"kind": "dit", "config": to_dict(cfg), "net": net, "ema": net,
                                       "frozen": frozen})
    rcfg = apply_overrides(refine_preset(cfg, size=HI, n_frames=FRAMES, lowres_noise=0.0),
                           [f"steps={STEPS}", *SETTINGS])
    trainer = RefinerTrainer(rcfg, RunInputs(root / "base", data=shards), root / "refiner", device="cpu")
    summary = trainer.train(progress=False)
    return {"root": root, "shards": shards, "base": root / "base", "refiner": root / "refiner",
            "summary": summary}


def test_refiner_starts_as_the_base() -> None:
    """Zero-initialised low-res columns: at init the refiner's output is the base DiT's, whatever lowres."""
    cfg = _base_config().dit
    torch.manual_seed(1)
    base = DiT(cfg)
    with torch.no_grad():
        for p in base.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    ref = RefinerDiT(cfg, extra_channels=cfg.in_channels, upsample="trilinear")
    ref.load_base(base.state_dict())
    extra = cfg.in_channels * cfg.patch_volume
    assert ref.patch_embed.weight.shape[1] == base.patch_embed.weight.shape[1] + extra
    x, t, text = torch.randn(2, cfg.in_channels, 2, 8, 16), torch.rand(2), torch.randn(2, 5, cfg.text_dim)
    with torch.no_grad():
        want = base(x, t, text)
        got = ref(x, t, text, lowres=torch.randn(2, cfg.in_channels, 2, 4, 8))
        got_same_grid = ref(x, t, text, lowres=torch.randn(2, cfg.in_channels, 2, 8, 16))
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_same_grid, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="lowres"):
        ref(x, t, text)


def test_resampling_helpers() -> None:
    z = torch.randn(1, 4, 2, 3, 5)
    up = upsample_latent(z, (2, 6, 10))
    assert up.shape == (1, 4, 2, 6, 10) and torch.equal(up[..., ::2, ::2], z)
    assert upsample_latent(z, (2, 6, 10), "trilinear").shape == (1, 4, 2, 6, 10)
    x = torch.arange(16.0).view(1, 1, 1, 4, 4).expand(1, 3, 2, 4, 4)
    assert downsample_pixels(x).shape == (1, 3, 2, 2, 2) and float(downsample_pixels(x)[0, 0, 0, 0, 0]) == 2.5


def test_training_and_checkpoint(runs: dict[str, Path]) -> None:
    summary = runs["summary"]
    assert summary["kind"] == "refiner" and summary["steps"] == STEPS
    assert summary["eval"][-1]["eval_loss"] < 0.8 * summary["eval"][0]["eval_loss"]
    ckpt = load_checkpoint(latest_checkpoint(runs["refiner"]))
    assert ckpt["kind"] == "refiner" and ckpt["refiner"]["scale"] == 2
    assert Path(ckpt["refiner"]["base"]) == latest_checkpoint(runs["base"])
    assert ckpt["refiner"]["base_step"] == 3
    assert ckpt["config"]["stages"][0]["size"] == list(HI)


def _held_out(tmp: Path, n_frames: int) -> list[torch.Tensor]:
    """[1, 3, T, 64, 128] clips training never saw: the test pattern in hues between the training ones
    (0, 40, ..., 280), from 0.5 s on."""
    out = []
    for hue in (20, 100, 180, 260):
        mp4 = make_mp4(tmp / f"held_{hue}.mp4", "128x64", 30, hue)
        out.append(decode_video(mp4, n_frames, 12.0, HI, 0.5, np.random.default_rng(0))[None])
    return out


@pytest.fixture(scope="module")
def held_out_mse(runs: dict[str, Path]) -> dict[str, float]:
    """Mean squared error to the true normalised high-res latent of held-out clips: the refiner from the
    TRUE low-res latent (one sampler step from fixed noise = its conditional-mean estimate, the MSE-optimal
    output), and plain upsampling: of the latent (nearest, trilinear), of the decoded low-res latent
    (trilinear in pixel space, then encoded) and of the TRUE low-res pixels (then encoded: an upper bound
    on any decode-then-upsample baseline). ``px_*``: the same in pixel space against the true pixels (not
    asserted: the VAE here is random, its decoder output is noise whatever the latent)."""
    ref = load_refiner(runs["refiner"])
    vae, stats = ref.vae, ref.latent_stats
    names = ("refined", "latent_nearest", "latent_trilinear", "pixels", "decode_upsample", "px_refined",
             "px_decode_upsample")
    errors: dict[str, list[float]] = {k: [] for k in names}
    with torch.no_grad():
        for i, x_hi in enumerate(_held_out(runs["root"], FRAMES)):
            x_lo = downsample_pixels(x_hi)
            z_hi = stats.normalize(vae.encode(x_hi).mean)
            z_lo = stats.normalize(vae.encode(x_lo).mean)
            thw = tuple(z_hi.shape[2:])
            z = refine_latent(ref, z_lo, "", thw, steps=1, cfg_scale=1.0, seed=100 + i)
            size = tuple(x_hi.shape[2:])
            up = F.interpolate(x_lo, size=size, mode="trilinear", align_corners=False)
            dec_up = F.interpolate(vae.decode(stats.denormalize(z_lo)), size=size, mode="trilinear",
                                   align_corners=False)
            for name, guess in (("refined", z), ("latent_nearest", upsample_latent(z_lo, thw, "nearest")),
                                ("latent_trilinear", upsample_latent(z_lo, thw, "trilinear")),
                                ("pixels", stats.normalize(vae.encode(up).mean)),
                                ("decode_upsample", stats.normalize(vae.encode(dec_up).mean))):
                errors[name].append(float(((guess - z_hi) ** 2).mean()))
            # pixel space: the refined latent decoded vs the upsampled decode of the low-res latent
            errors["px_refined"].append(float(((vae.decode(stats.denormalize(z)) - x_hi) ** 2).mean()))
            errors["px_decode_upsample"].append(float(((dec_up - x_hi) ** 2).mean()))
    mse = {k: sum(v) / len(v) for k, v in errors.items()}
    print("held-out latent MSE", mse)
    return mse


def test_refiner_beats_plain_upsampling(held_out_mse: dict[str, float]) -> None:
    mse = held_out_mse
    best = min(mse["latent_nearest"], mse["latent_trilinear"], mse["decode_upsample"])
    assert mse["refined"] < 0.9 * best, mse


@pytest.mark.xfail(reason="known limitation: after STEPS CPU steps from a random base and a random VAE "
                   "the refiner (MSE ~1.0; ~0.8 after 1500 steps) does not beat encoding the "
                   "trilinear-upsampled TRUE low-res pixels (~0.6), which see more than the low-res latent",
                   strict=False)
def test_refiner_beats_upsampled_true_pixels(held_out_mse: dict[str, float]) -> None:
    mse = held_out_mse
    assert mse["refined"] < mse["pixels"], mse


def test_cascade_generation_and_timings(runs: dict[str, Path], tmp_path: Path) -> None:
    pipeline = load_pipeline(runs["base"])
    refiner = load_refiner(runs["refiner"])
    timings: dict = {}
    video = generate(pipeline, "clip 1", refine=refiner, n_frames=5, steps=2, refine_steps=3, seed=4,
                     timings=timings)
    assert video.shape == (3, 5, *HI) and torch.isfinite(video).all()
    assert float(video.min()) >= -1 and float(video.max()) <= 1
    assert timings["dit_passes"] == 2 * 2 and timings["refiner_passes"] == 3 * 2  # x2: CFG
    assert all(timings[k] > 0 for k in ("text_s", "dit_s", "refiner_s", "vae_decode_s"))
    again = generate(pipeline, "clip 1", refine=refiner, n_frames=5, steps=2, refine_steps=3, seed=4)
    assert torch.equal(video, again)

    out = tmp_path / "級聯.mp4"
    info = generate_to_file(runs["base"], "clip 2", out, refine=runs["refiner"], n_frames=5, steps=2,
                            cfg_scale=1.0)
    assert info["size"] == list(HI) and info["refine"] == str(latest_checkpoint(runs["refiner"]))
    assert info["timings"]["dit_passes"] == 2 and info["timings"]["refiner_passes"] == 2
    assert {"load_s", "write_s", "text_s", "vae_decode_s"} <= set(info["timings"])
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.height, stream.width) == HI and sum(1 for _ in container.decode(stream)) == 5
    plain = generate_to_file(runs["base"], "clip 2", tmp_path / "plain.mp4", n_frames=5, steps=2)
    assert plain["refine"] is None and plain["timings"]["refiner_passes"] == 0
    with pytest.raises(ValueError, match="'refiner' one"):
        generate(pipeline, "x", refine=runs["base"], n_frames=5, steps=1)


def _prompt_sensitive_base(root: Path) -> Path:
    """A "dit" run whose random DiT has its zero-initialised gates woken up (the prompt matters)."""
    cfg = _base_config()
    torch.manual_seed(5)
    dit, text, vae = DiT(cfg.dit), ByteEncoder(cfg.text.byte), VAE(cfg.vae)
    with torch.no_grad():
        for p in dit.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    net = {"dit." + k: v for k, v in dit.state_dict().items()}
    net |= {"text." + k: v for k, v in text.state_dict().items()}
    c = cfg.vae.latent_channels
    frozen = {"vae": vae.state_dict(), "latent_stats": {"mean": torch.zeros(c), "std": torch.ones(c)}}
    payload = {"kind": "dit", "config": to_dict(cfg), "net": net, "ema": net, "frozen": frozen}
    save_checkpoint(root, 1, payload)
    return root


def test_generate_batch_from_prompt_file(tmp_path: Path) -> None:
    base = _prompt_sensitive_base(tmp_path / "base")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\ufeff# a comment\n\na red ball rolls!\n   \n  # indented comment\n一只猫 在 跳舞\n"
                       "Ünïcödé / slashes: ok?\n", encoding="utf-8")
    assert read_prompts(prompts) == ["a red ball rolls!", "一只猫 在 跳舞", "Ünïcödé / slashes: ok?"]
    assert slugify("?!") == "prompt" and slugify("A  B/c") == "a-b-c"
    rows = generate_batch(base, prompts, tmp_path / "out", n_frames=1, size=(32, 64), steps=1, seed=2)
    names = [Path(r["path"]).name for r in rows]
    assert names == ["001-a-red-ball-rolls.mp4", "002-一只猫-在-跳舞.mp4", "003-ünïcödé-slashes-ok.mp4"]
    assert all((tmp_path / "out" / n).is_file() for n in names)
    index = [json.loads(line) for line in (tmp_path / "out" / "index.jsonl").read_text("utf-8").splitlines()]
    assert [r["prompt"] for r in index] == read_prompts(prompts)
    alone = generate(load_pipeline(base), "一只猫 在 跳舞", n_frames=1, size=(32, 64), steps=1,
                     seed=2)
    # the batch video is the prompt's own video: its position in the file does not matter
    ref = write_mp4(alone, tmp_path / "alone.mp4", fps=rows[1]["fps"])
    frames = []
    for path in (rows[1]["path"], ref, rows[0]["path"]):
        with av.open(str(path)) as container:
            frames.append(next(container.decode(video=0)).to_ndarray(format="rgb24").astype(np.float64))
    assert np.abs(frames[0] - frames[1]).mean() < 0.5 < np.abs(frames[0] - frames[2]).mean()
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no prompts"):
        generate_batch(base, empty, tmp_path / "none")


def test_cli_parses_commands() -> None:
    import argparse

    from vidloom.cli_infer import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="cmd"))
    a = parser.parse_args(["refine", "--base", "b", "--data", "d", "--out", "o", "--steps", "5",
                           "--set", "lr=0.01", "--size", "64x128"])
    assert (a.base, a.steps, a.overrides, a.size, a.upsample) == ("b", 5, ["lr=0.01"], (64, 128), "trilinear")
    t = parser.parse_args(["thin-decoder", "--vae", "v", "--data", "d", "--out", "o", "--steps", "3"])
    assert (t.vae, t.steps, t.width) == ("v", 3, 0.5)
