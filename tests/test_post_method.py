"""``vidloom post METHOD``: the post-training settings are config keys (checked at load time), one
command runs every method, the old commands are its aliases, the resolved config travels in every
checkpoint, and the DiT and the refiner train with one ReFL objective."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from models.dit.model import DiT
from models.text_encoder import ByteEncoder
from models.vae.causal_vae import VAE
from pipelines.config_check import ConfigError
from tests.train_shards import write_test_shards
from training.config import StageConfig, from_dict, load_train_config, tiny, to_dict
from training.loop.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_dit_run
from training.post.inputs import RunInputs
from training.post.refine import load_refiner
from training.post.refine_post import RefinerRLHFTrainer, refiner_rlhf_config
from training.post.rlhf import RLHFTrainer, rlhf_config
from vidloom.cli import main

QUICK = ["--set", "num_workers=0", "--set", "eval_samples=1", "--quiet"]
PROMPTS = ["a red ball", "a blue box", "a cat", "a dog", "a tree", "a car"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


class Brightness:
    """A test reward: mean pixel value (differentiable)."""

    name, differentiable = "brightness", True

    def __call__(self, video: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return video.mean(dim=(1, 2, 3, 4))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A "dit" run (random DiT with its adaLN-zero params woken up, byte text, random VAE), its last
    stage small, and pixel shards; a prompt file."""
    root = tmp_path_factory.mktemp("post")
    cfg = tiny()
    cfg.stages[-1] = StageConfig("video-high", 0.3, n_frames=5, size=(32, 64), fps=12.0, global_batch=2)
    torch.manual_seed(0)
    dit = DiT(cfg.dit)
    with torch.no_grad():
        for param in dit.parameters():
            if not param.any():
                param.normal_(0.0, 0.05)
    save_dit_run(root / "base", 1, cfg, dit, ByteEncoder(cfg.text.byte), VAE(cfg.vae))
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return {"root": root, "base": root / "base", "shards": write_test_shards(root, [("128x64", 8)] * 4),
            "prompts": root / "prompts.txt"}


def _log(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def test_post_keys_fail_fast_naming_what_is_valid(base: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cases = {"post.rlhf.bta=1": ["unknown config key 'post.rlhf.bta'", "did you mean 'beta'", "sample_steps"],
             "post.rlhf.sample_steps=many": ["post.rlhf.sample_steps must be an integer", "'many'"],
             "post.sft.init=best": ["post.sft.init must be one of 'ema', 'net'", "'best'"],
             "post.rlhf.grad_steps=0": ["post.rlhf.grad_steps must be >= 1"],
             "post.thin_decoder.init=zeros": ["must be one of 'random', 'slice'"]}
    for item, messages in cases.items():
        with pytest.raises(ConfigError) as e:
            load_train_config("tiny", overrides=[item])
        assert all(m in str(e.value) for m in messages), (item, str(e.value))
    # the command refuses before any work: no run directory is made
    out = tmp_path / "never"
    assert main(["post", "rlhf", "--base", str(base["base"]), "--prompts", str(base["prompts"]), "--out",
                 str(out), "--set", "post.rlhf.bta=1"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'beta'" in err and "rewards, beta, sample_steps" in err and not out.exists()
    with pytest.raises(SystemExit):
        main(["post", "nope", "--base", str(base["base"])])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_post_sft_end_to_end(base: dict[str, Path], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sft"
    (tmp_path / "sft.yaml").write_text("post:\n  sft:\n    lr_factor: 0.5\n    init: net\n", encoding="utf-8")
    assert main(["post", "sft", "--base", str(base["base"]), "--data", str(base["shards"]), "--out", str(out),
                 "--preset", "tiny", "--config", str(tmp_path / "sft.yaml"), "--set", "steps=2",
                 "--set", "post.sft.init=ema", *QUICK]) == 0  # layers in order: preset, file, --set
    assert "vidloom sft: done" in capsys.readouterr().out
    ckpt = load_checkpoint(latest_checkpoint(out))
    base_cfg = from_dict(load_checkpoint(latest_checkpoint(base["base"]))["config"])
    cfg = from_dict(ckpt["config"])
    assert ckpt["step"] == 2 and cfg.post.sft.lr_factor == 0.5 and ckpt["sft"]["lr_factor"] == 0.5
    assert cfg.post.sft.init == "ema" and ckpt["sft"]["init"] == "ema"
    assert cfg.lr == pytest.approx(base_cfg.lr * 0.5) and [s.name for s in cfg.stages] == ["sft"]
    assert [r["step"] for r in _log(out)] == [1, 2]


@pytest.fixture(scope="module")
def rlhf_runs(base: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same ReFL rounds run twice: ``vidloom post rlhf --set ...`` and the old ``vidloom rlhf`` flags."""
    root = tmp_path_factory.mktemp("rlhf")
    common = ["--base", str(base["base"]), "--prompts", str(base["prompts"]), "--quiet"]
    post = ["post", "rlhf", *common, "--out", str(root / "post"), "--set", "post.rlhf_rounds.rounds=1",
            "--set", "post.rlhf_rounds.steps_per_round=2", "--set", "post.rlhf_rounds.n_heldout=2",
            "--set", "post.rlhf.sample_steps=3", "--set", "post.rlhf.beta=0.25",
            "--set", "post.rlhf.global_batch=2", "--set", "post.rlhf.rewards={motion: 2}"]
    old = ["rlhf", *common[:-1], "--out", str(root / "alias"), "--rounds", "1", "--steps-per-round", "2",
           "--n-heldout", "2", "--sample-steps", "3", "--beta", "0.25", "--batch", "2", "--reward",
           "motion=2"]
    return {"root": root, "post": post, "old": old}


def test_post_rlhf_end_to_end_and_the_old_alias(rlhf_runs: dict[str, Any],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    root = rlhf_runs["root"]
    assert main(rlhf_runs["post"]) == 0
    captured = capsys.readouterr()
    assert "round 1 step 2" in captured.out and "heldout/stability" in captured.out
    assert "deprecated" not in captured.err
    ckpt = load_checkpoint(latest_checkpoint(root / "post"))
    assert ckpt["step"] == 2 and ckpt["rlhf"]["method"] == "refl"
    # a reward mapping given whole replaces the default set
    assert ckpt["config"]["post"]["rlhf"]["rewards"] == {"motion": 2.0}
    rows = _log(root / "post")
    # the ReFL loss with the configured beta: mean(-composite + 0.25 * reg)
    assert all(r["loss"] == pytest.approx(-r["reward/composite"] + 0.25 * r["reg"], abs=1e-5) for r in rows)
    assert all(0.0 < r["reg"] or r["step"] == 1 for r in rows)
    # the old command: a deprecation note, then the same resolved config and the same losses
    assert main(rlhf_runs["old"]) == 0
    captured = capsys.readouterr()
    assert "vidloom rlhf: deprecated" in captured.err and "vidloom post rlhf" in captured.err
    assert "round 1 step 2" in captured.out
    configs = [yaml.safe_load((root / run / "config.yaml").read_text(encoding="utf-8")) for run in ("post",
                                                                                                    "alias")]
    assert configs[0] == configs[1] and configs[0]["post"]["rlhf"]["beta"] == 0.25
    assert [r["loss_hex"] for r in _log(root / "alias")] == [r["loss_hex"] for r in rows]


def test_resolved_config_round_trips_through_the_checkpoint(rlhf_runs: dict[str, Any]) -> None:
    root = rlhf_runs["root"]
    if not (root / "post" / "config.yaml").is_file():
        assert main(rlhf_runs["post"]) == 0
    ckpt = load_checkpoint(latest_checkpoint(root / "post"))
    stored = yaml.safe_load((root / "post" / "config.yaml").read_text(encoding="utf-8"))
    assert ckpt["config"] == stored == to_dict(from_dict(ckpt["config"]))  # the whole tree, resolved
    cfg = from_dict(ckpt["config"])
    assert (cfg.post.rlhf.beta, cfg.post.rlhf.sample_steps, cfg.post.rlhf_rounds.steps_per_round) == (0.25,
                                                                                                      3, 2)
    # the method entry is the config's section plus the run's facts, not a second list of knobs
    assert {k: v for k, v in ckpt["rlhf"].items() if k not in ("method",
                                                               "base")} == ckpt["config"]["post"]["rlhf"]


@pytest.fixture(scope="module")
def refiner(base: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("refiner") / "run"
    assert main(["post", "refine", "--base", str(base["base"]), "--data", str(base["shards"]), "--out",
                 str(out),
                 "--set", "post.refine.size=[64, 128]", "--set", "post.refine.n_frames=5",
                 "--set", "post.refine.steps=1", "--set", "post.refine.upsample=nearest", *QUICK]) == 0
    return out


def test_a_refiner_loads_its_settings_from_the_stored_config(refiner: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(latest_checkpoint(refiner))
    assert ckpt["config"]["post"]["refine"]["upsample"] == "nearest" and ckpt["kind"] == "refiner"
    assert load_refiner(refiner).dit.upsample == "nearest"
    # a stale entry beside the config does not decide: the stored config does
    ckpt["refiner"]["upsample"] = "trilinear"
    payload = {k: v for k, v in ckpt.items() if k not in ("version", "step")}
    save_checkpoint(tmp_path / "copy", int(ckpt["step"]), payload)
    assert load_refiner(tmp_path / "copy").dit.upsample == "nearest"
    ckpt["config"]["post"]["refine"]["upsample"] = "trilinear"
    save_checkpoint(tmp_path / "copy2", int(ckpt["step"]), {k: v for k, v in ckpt.items()
                                                            if k not in ("version", "step")})
    assert load_refiner(tmp_path / "copy2").dit.upsample == "trilinear"


def test_the_dit_and_the_refiner_train_with_one_refl_objective(base: dict[str, Path], refiner: Path,
                                                               tmp_path: Path) -> None:
    """One ``post.rlhf`` drives both trainers: the same stop-step draws (the refiner honours
    ``stop_range`` too), the same loss ``-composite + beta * reg`` and the same reward terms."""
    post = {"rlhf": {"rewards": {"brightness": 1.0}, "sample_steps": 3, "grad_steps": 1, "stop_range": [0, 1],
                     "beta": 0.5, "global_batch": 2, "n_frames": 5},
            "refine_rlhf": {"steps": 3, "base_steps": 2}}
    settings = {"num_workers": 0, "eval_samples": 1, "log_every": 1000, "post": post}
    inputs = {"prompts": PROMPTS[:4], "reward_models": {"brightness": Brightness()}}
    # the same objective settings; each model at its own stage size (the refiner: 64x128 from 32x64)
    dit = RLHFTrainer(rlhf_config(base["base"], 3, overrides=settings), RunInputs(base["base"], **inputs),
                      tmp_path / "dit", device="cpu")
    ref = RefinerRLHFTrainer(refiner_rlhf_config(refiner, settings), RunInputs(refiner, **inputs),
                             tmp_path / "refiner", device="cpu")
    dit.train(progress=False)
    ref.train(progress=False)
    logs = {name: _log(tmp_path / name) for name in ("dit", "refiner")}
    stops = {name: [r["stop"] for r in rows] for name, rows in logs.items()}
    assert stops["dit"] == stops["refiner"] and set(stops["dit"]) <= {0.0, 1.0} and len(stops["dit"]) == 3
    for rows in logs.values():
        assert all(r["loss"] == pytest.approx(-r["reward/composite"] + 0.5 * r["reg"],
                                              abs=1e-5) for r in rows)
        assert all(r["reward/composite"] == pytest.approx(r["reward/brightness"], abs=1e-6) for r in rows)
    for trainer in (dit, ref):
        assert trainer.objective.stop_range == (0, 1) and trainer.objective.beta == 0.5


@pytest.mark.slow  # starts Prefect's ephemeral server unless an earlier test did
def test_post_flow_takes_the_method_and_a_config_dict(base: dict[str, Path], tmp_path: Path) -> None:
    from prefect.logging.handlers import APILogWorker

    from flows.post_flow import post_flow
    from training.post import methods

    config = {"post": {"rlhf_rounds": {"rounds": 1, "steps_per_round": 1, "n_heldout": 2},
                       "rlhf": {"sample_steps": 2, "global_batch": 2}}}
    inputs = {"base": str(base["base"]), "prompts": PROMPTS}
    try:
        bad = post_flow("rlhf", {"post": {"rlhf": {"bta": 1}}}, inputs, str(tmp_path / "bad"),
                        return_state=True)
        assert bad.is_failed() and not (tmp_path / "bad").exists()
        with pytest.raises(ConfigError, match="did you mean 'beta'"):
            bad.result()
        state = post_flow("rlhf", config, inputs, str(tmp_path / "run"), return_state=True)
        assert state.is_completed(), state
        assert [r["round"] for r in state.result()["rounds"]] == [0, 1]
    finally:
        APILogWorker.drain_all(timeout=30)
    # the flow's run holds the config the command line resolves from the same keys
    expected = methods.resolve("rlhf", RunInputs(base["base"], prompts=PROMPTS), overrides=config)
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text(encoding="utf-8"))
    assert stored == load_checkpoint(latest_checkpoint(tmp_path / "run"))["config"] == to_dict(expected)
