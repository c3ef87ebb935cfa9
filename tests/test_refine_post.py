"""training/post/refine_post.py: refiner SFT and refiner RLHF (ReFL) on a tiny base + tiny trained refiner."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from models.dit.model import DiT
from models.text_encoder import ByteEncoder
from models.vae.causal_vae import VAE
from tests.test_refine import _stats
from tests.train_shards import write_test_shards
from training.config import StageConfig, tiny, to_dict
from training.loop.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from training.post.inputs import RunInputs
from training.post.refine import RefinerTrainer, apply_overrides, load_refiner, refine_preset
from training.post.refine_post import RefinerRLHFTrainer, RefinerSFTTrainer, refiner_rlhf, refiner_sft
from training.post.rlhf import rlhf_config
from training.post.sft import sft_config

HI = (64, 128)
SETTINGS = ["num_workers=0", "eval_samples=2", "ckpt_every=1000", "log_every=1000", "ema_decay=0.9",
            "warmup_steps=2"]
PROMPTS = ["a red car", "a cat on a sofa", "waves at night", "a city street", "snow on trees", "a dog runs"]
HELDOUT = ["a bright beach", "a dark forest"]
STEPS_RL, LR_RL = 20, 3e-3


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Shards, a base "dit" run (random DiT with adaLN-zero woken up, random VAE), a refiner (20 steps)."""
    root = tmp_path_factory.mktemp("refine_post")
    shards = write_test_shards(root, [("128x64", 30) for _ in range(6)])
    cfg = tiny()
    cfg.stages[-1] = StageConfig("video-high", 0.3, n_frames=5, size=(32, 64), fps=12.0, global_batch=4)
    torch.manual_seed(0)
    dit, text, vae = DiT(cfg.dit), ByteEncoder(cfg.text.byte), VAE(cfg.vae)
    with torch.no_grad():
        for p in dit.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    net = {"dit." + k: v for k, v in dit.state_dict().items()}
    net |= {"text." + k: v for k, v in text.state_dict().items()}
    frozen = {"vae": vae.state_dict(), "latent_stats": _stats(vae, shards)}
    save_checkpoint(root / "base", 3, {"kind": "dit", "config": to_dict(cfg), "net": net, "ema": net,
                                       "frozen": frozen})
    rcfg = apply_overrides(refine_preset(cfg, size=HI, n_frames=1), ["steps=20", "lr=0.003", *SETTINGS])
    RefinerTrainer(rcfg, RunInputs(root / "base", data=shards), root / "refiner",
                   device="cpu").train(progress=False)
    return {"root": root, "shards": shards, "base": root / "base", "refiner": root / "refiner"}


def test_refiner_sft_starts_from_ema_and_lowers_loss(runs: dict[str, Path], tmp_path: Path) -> None:
    src = load_checkpoint(latest_checkpoint(runs["refiner"]))
    cfg = sft_config(load_refiner(runs["refiner"]).config, steps=12, overrides=["lr=0.002", *SETTINGS])
    assert cfg.stages[0].name == "sft" and cfg.stages[0].size == HI
    trainer = RefinerSFTTrainer(cfg, RunInputs(runs["refiner"], data=runs["shards"]), tmp_path / "sft",
                                device="cpu")
    for name, state in (("net", trainer.net.state_dict()), ("ema", trainer.ema.state_dict())):
        assert state.keys() == src["ema"].keys(), name
        assert all(torch.equal(state[k], src["ema"][k]) for k in state), name
    assert not all(torch.equal(src["net"][k], src["ema"][k]) for k in src["ema"])  # EMA, not the raw net
    summary = trainer.train(progress=False)
    before, after = summary["eval"][0]["eval_loss"], summary["eval"][-1]["eval_loss"]
    print(f"refiner SFT eval_loss {before:.4f} -> {after:.4f}")
    assert after < before
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "sft"))
    assert ckpt["kind"] == "refiner" and ckpt["refine_sft"]["refiner_step"] == src["step"]
    assert ckpt["refiner"]["base"] == src["refiner"]["base"]
    assert load_refiner(tmp_path / "sft").step == 12


def test_refiner_sft_function_and_cli(runs: dict[str, Path], tmp_path: Path) -> None:
    from vidloom.cli_refine_post import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["refine-sft", "--refiner", str(runs["refiner"]), "--data", str(runs["shards"]),
                              "--out", str(tmp_path / "cli"), "--steps", "2", "--quiet",
                              *[f"--set={s}" for s in SETTINGS]])
    assert args.fn(args) == 0
    assert load_checkpoint(latest_checkpoint(tmp_path / "cli"))["kind"] == "refiner"
    with pytest.raises(ValueError, match="another"):
        refiner_sft(runs["refiner"], data=runs["root"], out=tmp_path / "cli")
    with pytest.raises(ValueError, match="'refiner'"):
        refiner_sft(runs["base"], data=runs["shards"], out=tmp_path / "other")


def test_refiner_rlhf_raises_reward_on_heldout_prompts(runs: dict[str, Path], tmp_path: Path) -> None:
    cfg = rlhf_config(latest_checkpoint(runs["refiner"]), steps=STEPS_RL, global_batch=2, lr=LR_RL,
                      overrides={"seed": 0, "log_every": 1000, "post": {
                          "rlhf": {"rewards": {"aesthetic_proxy": 1.0}, "beta": 0.01, "sample_steps": 3,
                                   "grad_steps": 2}, "refine_rlhf": {"base_steps": 3}}})
    trainer = RefinerRLHFTrainer(cfg, RunInputs(runs["refiner"], prompts=PROMPTS, eval_prompts=HELDOUT),
                                 tmp_path / "rlhf", device="cpu")
    src = load_checkpoint(latest_checkpoint(runs["refiner"]))
    assert all(torch.equal(v, src["ema"][k]) for k, v in trainer.reference.state_dict().items())
    before = trainer.score(HELDOUT)["composite"]
    # the base's low-res latents are fixed by the seed and do not depend on the refiner
    lo = trainer.base_lowres(HELDOUT[:1], torch.randn(1, *trainer.shapes()[1]))
    hi_shape, lo_shape = trainer.shapes()
    assert tuple(lo.shape[1:]) == lo_shape and not lo.requires_grad
    assert lo_shape[-2:] == (hi_shape[-2] // 2, hi_shape[-1] // 2)
    summary = trainer.train(progress=False)
    after = trainer.score(HELDOUT)["composite"]
    rows = [row["eval/composite"] for row in (summary["eval"][0], summary["eval"][-1])]
    print(f"refiner RLHF held-out composite {before.mean():.4f} -> {after.mean():.4f} "
          f"(eval rows {rows[0]:.4f} -> {rows[1]:.4f})")
    assert float(after.mean()) > float(before.mean()) + 0.005
    assert summary["eval"][-1]["eval/composite"] > summary["eval"][0]["eval/composite"]
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "rlhf"))
    assert ckpt["kind"] == "refiner" and ckpt["refine_rlhf"]["method"] == "refl" and ckpt["step"] == STEPS_RL
    pipe = load_refiner(tmp_path / "rlhf")
    assert pipe.scale == 2 and pipe.step == STEPS_RL


def test_refiner_rlhf_function(runs: dict[str, Path], tmp_path: Path) -> None:
    result = refiner_rlhf(runs["refiner"], tmp_path / "f", prompts=PROMPTS[:2], steps=1, global_batch=2,
                          rewards={"aesthetic_proxy": 1.0}, sample_steps=2, base_steps=2, progress=False)
    assert load_checkpoint(result["checkpoint"])["kind"] == "refiner"
    with pytest.raises(ValueError, match="'refiner'"):
        refiner_rlhf(runs["base"], tmp_path / "g", prompts=PROMPTS, steps=1)
    from vidloom.cli_refine_post import add_commands

    (tmp_path / "p.txt").write_text("\n".join(PROMPTS[:2]) + "\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["refine-rlhf", "--refiner", str(runs["refiner"]), "--out", str(tmp_path / "c"),
                              "--prompts", str(tmp_path / "p.txt"), "--reward", "aesthetic_proxy=2",
                              "--steps", "1", "--batch", "2", "--sample-steps", "2", "--base-steps", "2",
                              "--quiet"])
    assert args.fn(args) == 0
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "c"))
    assert ckpt["kind"] == "refiner" and ckpt["refine_rlhf"]["rewards"] == {"aesthetic_proxy": 2.0}
