"""training/post/thin_decoder.py: a half-width VAE decoder retrained against a frozen VAE on tiny real
shards."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from models.dit.model import DiT
from models.text_encoder import ByteEncoder
from models.vae.causal_vae import VAE
from tests.train_shards import write_test_shards
from training.config import StageConfig, TrainConfig, tiny, to_dict
from training.inference.generate import generate
from training.loop.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_pipeline,
    save_checkpoint,
    save_dit_run,
)
from training.post.inputs import RunInputs
from training.post.thin_decoder import (
    ThinDecoderTrainer,
    as_thin_decoder,
    init_from_full,
    load_thin_decoder,
    thin_decoder_config,
    thin_vae_config,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread

SETTINGS = ["vae_lr=0.005", "num_workers=1", "eval_samples=2", "warmup_steps=2", "ckpt_every=1000",
            "log_every=1000"]
STEPS = 40


def _save_dit(run: Path, cfg: TrainConfig, vae: VAE) -> None:
    """A "dit" run with random DiT and text weights over ``vae`` (identity latent statistics)."""
    save_dit_run(run, 1, cfg, DiT(cfg.dit), ByteEncoder(cfg.text.byte), vae)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Shards, a "vae" run (random weights) and a "dit" run sharing that VAE."""
    root = tmp_path_factory.mktemp("thin")
    shards = write_test_shards(root, [("128x64", 30) for _ in range(6)])
    cfg = tiny()
    cfg.vae_stage = StageConfig("vae", n_frames=5, size=(32, 64), global_batch=2)
    cfg.stages[-1] = StageConfig("video-high", 0.3, n_frames=5, size=(32, 64), fps=12.0, global_batch=2)
    torch.manual_seed(0)
    vae = VAE(cfg.vae)
    net = {"vae." + k: v for k, v in vae.state_dict().items()}
    c = cfg.vae.latent_channels
    stats = {"mean": torch.zeros(c), "std": torch.ones(c)}
    save_checkpoint(root / "vae", 1, {"kind": "vae", "config": to_dict(cfg), "net": net, "ema": net,
                                      "latent_stats": stats})
    _save_dit(root / "dit", cfg, vae)
    cfg_thin = thin_decoder_config(root / "vae", STEPS, SETTINGS)
    trainer = ThinDecoderTrainer(cfg_thin, RunInputs(root / "vae", data=shards), root / "thin", device="cpu")
    summary = trainer.train(progress=False)
    return {"root": root, "vae": root / "vae", "dit": root / "dit", "thin": root / "thin", "summary": summary}


def test_thin_config_halves_channels() -> None:
    cfg = tiny().vae
    thin = thin_vae_config(cfg)
    assert thin.channels == tuple(c // 2 for c in cfg.channels)
    assert (thin.latent_channels, thin.downsample) == (cfg.latent_channels, cfg.downsample)


def test_training_lowers_reconstruction_error(runs: dict[str, Path]) -> None:
    summary = runs["summary"]
    assert summary["kind"] == "thin_decoder" and summary["steps"] == STEPS
    start, end = summary["eval"][0], summary["eval"][-1]
    assert (start["when"], end["when"]) == ("start", "end")
    assert end["eval_l1"] < 0.9 * start["eval_l1"]
    assert end["eval_l1_full"] < start["eval_l1_full"]
    # distilled on perturbed latents too: agreement with the full decoder off the posterior means
    assert end["eval_l1_perturbed"] < start["eval_l1_perturbed"]
    rows = [json.loads(line) for line in (runs["thin"] / "log.jsonl").read_text().splitlines()]
    assert len(rows) == STEPS
    assert sum(r["l1"] for r in rows[-5:]) < sum(r["l1"] for r in rows[:5])
    assert all(r["l1_perturbed"] > 0 for r in rows)


def test_output_shape_matches_full_decoder(runs: dict[str, Path]) -> None:
    decoder, vae_cfg = load_thin_decoder(runs["thin"])
    vae = VAE(vae_cfg)
    n_thin = sum(p.numel() for p in decoder.parameters())
    n_full = sum(p.numel() for p in vae.decoder.parameters())
    assert n_thin < 0.5 * n_full
    for thw in [(1, 4, 8), (3, 4, 4), (2, 8, 16)]:
        z = torch.randn(2, vae_cfg.latent_channels, *thw)
        with torch.no_grad():
            assert decoder(z).shape == vae.decode(z).shape
    assert decoder.source.endswith(".pt")


def test_generate_with_thin_decoder(runs: dict[str, Path]) -> None:
    pipeline = load_pipeline(runs["dit"])
    kw = {"n_frames": 5, "size": (32, 64), "steps": 2, "seed": 1}
    timings: dict = {}
    full = generate(pipeline, "a clip", **kw)
    thin = generate(pipeline, "a clip", thin_decoder=runs["thin"], timings=timings, **kw)
    assert thin.shape == full.shape == (3, 5, 32, 64)
    assert torch.isfinite(thin).all() and (thin - full).abs().max() > 0  # another decoder decoded it
    assert timings["dit_passes"] == 2 * 2 and timings["vae_decode_s"] > 0  # 2 steps x (cond + CFG negative)
    other = tiny().vae
    other.latent_channels = 8
    with pytest.raises(ValueError, match="trained for a VAE"):
        as_thin_decoder(runs["thin"], other)
    with pytest.raises(ValueError, match="'thin_decoder' one"):
        load_thin_decoder(runs["vae"])


def test_slice_init_copies_leading_channels() -> None:
    """At width 1 the sliced decoder is the full decoder; at width 0.5 each tensor is the leading
    block of the full one (input dims rescaled by 2), and it decodes to the same shape."""
    torch.manual_seed(0)
    vae = VAE(tiny().vae).eval()
    with torch.no_grad():
        for p in vae.decoder.parameters():
            p.normal_(0, 0.2)
    same = VAE(thin_vae_config(vae.cfg, 1.0)).decoder.eval()
    init_from_full(same, vae.decoder)
    z = torch.randn(1, vae.cfg.latent_channels, 2, 4, 8)
    with torch.no_grad():
        torch.testing.assert_close(same(z), vae.decoder(z))
    half = VAE(thin_vae_config(vae.cfg, 0.5)).decoder
    init_from_full(half, vae.decoder)
    full_w, half_w = vae.decoder.state_dict(), half.state_dict()
    name = next(k for k, v in half_w.items() if v.dim() >= 2 and v.shape[1] < full_w[k].shape[1])
    k_out, k_in = half_w[name].shape[:2]
    torch.testing.assert_close(half_w[name], full_w[name][:k_out, :k_in] * (full_w[name].shape[1] / k_in))
    with torch.no_grad():
        assert half(z).shape == vae.decoder(z).shape


def test_distils_on_the_generators_latents(runs: dict[str, Path]) -> None:
    """With ``generator=`` a "dit" run sharing the VAE samples latents for the batch captions each step;
    the thin decoder's error to the full decoder on such latents falls, and the checkpoint records it."""
    cfg = thin_decoder_config(runs["vae"], 12, [*SETTINGS, "post.thin_decoder.generator_steps=2",
                                                "post.thin_decoder.guidance=2.0"])
    out = runs["root"] / "thin_gen"
    trainer = ThinDecoderTrainer(cfg, RunInputs(runs["vae"], data=runs["root"] / "shards",
                                                generator=runs["dit"]),
                                 out, device="cpu")
    summary = trainer.train(progress=False)
    start, end = summary["eval"][0], summary["eval"][-1]
    assert end["eval_l1_generated"] < start["eval_l1_generated"], (start, end)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["l1_generated"] > 0 for r in rows)
    thin = load_checkpoint(latest_checkpoint(out))["thin"]
    assert thin["generator"] == str(runs["dit"]) and thin["generator_steps"] == 2
    # a generator over another VAE is refused
    other = tiny()
    other.vae.latent_channels = 8
    other.dit = dataclasses.replace(other.dit, in_channels=8)
    _save_dit(runs["root"] / "dit8", other, VAE(other.vae))
    with pytest.raises(ValueError, match="uses VAE"):
        ThinDecoderTrainer(cfg, RunInputs(runs["vae"], data=runs["root"] / "shards",
                                          generator=runs["root"] / "dit8"),
                           runs["root"] / "thin_bad", device="cpu")
