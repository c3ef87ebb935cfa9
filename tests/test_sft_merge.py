"""Post-training: SFT from a base DiT checkpoint (training/post/sft.py) and checkpoint merging
(training/post/merge.py), with their CLI commands (vidloom/cli_post.py).

One tiny base run (VAE 2 steps, DiT 4 steps on shards A, 5-frame 32x64 samples) is fine-tuned on
other shards B; the SFT starts from the base's weights exactly, lowers the fixed-noise eval loss
on B, resumes when rerun with more steps, and on a catalog selection trains on the selected clips
only. Merges of two SFT runs are checked against the elementwise mean and against a parent.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines.dataset_versions import read_manifest, resolve
from tests.train_shards import make_mp4, write_test_shards
from training.config import from_dict, load_train_config
from training.loop.checkpoint import latest_checkpoint, load_checkpoint, load_pipeline, save_checkpoint
from training.loop.run import train
from training.post.inputs import RunInputs
from training.post.merge import average_states, merge_checkpoints, normalize_weights
from training.post.sft import SFTTrainer, evaluate_checkpoint, sft, sft_config

BASE = ["num_workers=0", "eval_samples=2", "warmup_steps=1", "ckpt_every=100", "log_every=1",
        "vae_stage={name: vae, n_frames: 5, size: [32, 64], global_batch: 2}",
        "stages=[{name: image, fraction: 0.25, n_frames: 1, size: [32, 64], global_batch: 2},"
        " {name: video, fraction: 0.75, n_frames: 5, size: [32, 64], global_batch: 2}]"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("sft")
    (root / "a").mkdir()
    (root / "b").mkdir()
    a = write_test_shards(root / "a", [("128x64", 8)] * 4)
    b = write_test_shards(root / "b", [("96x96", 8), ("160x64", 8), ("96x96", 8), ("160x64", 8)])
    cfg = load_train_config("tiny", None, [*BASE, "vae_steps=2", "steps=4"])
    base = train(cfg, a, root / "base", progress=False)
    sft1 = sft(root / "base", data=b, out=root / "sft1", steps=4, progress=False)
    sft2 = sft(root / "base", data=b, out=root / "sft2", steps=2, overrides=["seed=1"], progress=False)
    return {"root": root, "a": a, "b": b, "base": Path(base["checkpoint"]), "sft1": sft1, "sft2": sft2}


def _cli(argv: list[str]) -> int:
    """``vidloom sft|merge ...`` through the commands' own parser (as cli.py wires them)."""
    from vidloom.cli_post import add_commands

    parser = argparse.ArgumentParser(prog="vidloom")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.fn(args))


def _log(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- SFT


def test_sft_preset() -> None:
    base = load_train_config("tiny", None, ["steps=400", "warmup_steps=10"])
    cfg = sft_config(base)
    assert cfg.lr == pytest.approx(base.lr / 5)
    assert cfg.steps == 40 and cfg.warmup_steps == 2
    assert [s.name for s in cfg.stages] == ["sft"] and cfg.stages[0].n_frames > 1
    assert cfg.stages[0].size == base.stages[-1].size  # the base's last (highest-resolution) video stage
    assert (cfg.dit, cfg.vae, cfg.text) == (base.dit, base.vae, base.text)
    again = sft_config(cfg)  # an SFT of an SFT (or of a merge of SFTs) does not divide lr again
    assert (again.lr, again.steps, again.stages) == (cfg.lr, cfg.steps, cfg.stages)
    over = sft_config(base, steps=7, overrides=["lr=0.0005"])
    assert (over.steps, over.lr) == (7, 0.0005)
    with pytest.raises(ValueError, match="model"):
        sft_config(base, overrides=["dit.depth=1"])


def test_sft_starts_from_the_base_weights(runs: dict[str, Any], tmp_path: Path) -> None:
    base = load_checkpoint(runs["base"])
    cfg = sft_config(from_dict(base["config"]), steps=2)
    for init in ("ema", "net"):
        cfg.post.sft.init = init
        trainer = SFTTrainer(cfg, RunInputs(runs["base"], data=runs["b"]), tmp_path / init)
        net, ema = trainer.net.state_dict(), trainer.ema.state_dict()
        assert net.keys() == base[init].keys() and ema.keys() == base["ema"].keys()
        assert all(torch.equal(net[k], v) for k, v in base[init].items())
        assert all(torch.equal(ema[k], v) for k, v in base["ema"].items())
        assert trainer.step == 0 and not trainer.optimizer.state  # a fresh optimizer
        assert all(torch.equal(trainer.vae.state_dict()[k], v) for k, v in base["frozen"]["vae"].items())
        assert torch.equal(trainer.stats.mean, base["frozen"]["latent_stats"]["mean"])
    # the SFT's step-0 eval is the base EMA's eval on the SFT data
    start = runs["sft1"]["dit"]["eval"][0]
    assert (start["step"], start["when"]) == (0, "start")
    assert start["eval_loss"] == pytest.approx(
        evaluate_checkpoint(runs["base"], runs["b"], stage=cfg.stages[0]), rel=1e-5)


def test_sft_lowers_eval_loss_and_writes_a_dit_checkpoint(runs: dict[str, Any]) -> None:
    summary = runs["sft1"]
    evals = summary["dit"]["eval"]
    assert [(e["step"], e["when"]) for e in evals] == [(0, "start"), (4, "end")]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    ckpt = load_checkpoint(summary["checkpoint"])
    assert ckpt["kind"] == "dit" and ckpt["step"] == 4
    assert ckpt["sft"]["base"] == str(runs["base"].resolve()) and ckpt["sft"]["base_step"] == 4
    cfg = from_dict(ckpt["config"])
    base_cfg = from_dict(load_checkpoint(runs["base"])["config"])
    assert cfg.lr == pytest.approx(base_cfg.lr / 5) and [s.name for s in cfg.stages] == ["sft"]
    rows = _log(Path(summary["out"]))
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and {r["stage"] for r in rows} == {"sft"}
    assert {k for r in rows for k in r["keys"]} <= {f"clip{i:02d}" for i in range(4)}
    pipe = load_pipeline(summary["checkpoint"])  # `vidloom generate` can use it
    assert pipe.step == 4
    info = json.loads((Path(summary["out"]) / "sft.json").read_text())
    assert info["base"] == str(runs["base"].resolve()) and info["data"] == str(runs["b"].resolve())


def test_sft_rerun_resumes_and_refuses_another_base_or_data(runs: dict[str, Any]) -> None:
    out = Path(runs["sft2"]["out"])
    first = _log(out)
    assert [r["step"] for r in first] == [1, 2]
    again = sft(runs["base"], data=runs["b"], out=out, steps=3, overrides=["seed=1"], progress=False)
    rows = _log(out)
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[:2] == first  # went on from step 2
    assert again["dit"]["steps"] == 3 and load_checkpoint(again["checkpoint"])["step"] == 3
    with pytest.raises(ValueError, match="data"):
        sft(runs["base"], data=runs["a"], out=out, steps=3, overrides=["seed=1"], progress=False)
    with pytest.raises(ValueError, match="another config"):
        sft(runs["base"], data=runs["b"], out=out, steps=3, overrides=["seed=2"], progress=False)
    with pytest.raises(ValueError, match="either"):
        sft(runs["base"], out=out)


def test_sft_cli_with_data(runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert _cli(["sft", "--base", str(runs["root"] / "base"), "--data", str(runs["b"]), "--out", str(out),
                 "--steps", "1", "--set", "eval_samples=1", "--quiet"]) == 0
    assert "vidloom sft: done" in capsys.readouterr().out
    ckpt = load_checkpoint(latest_checkpoint(out))
    assert ckpt["step"] == 1 and from_dict(ckpt["config"]).eval_samples == 1
    with pytest.raises(ValueError, match="--catalog"):
        _cli(["sft", "--base", str(runs["base"]), "--data", str(runs["b"]), "--catalog", "x.duckdb",
              "--where", "true", "--out", str(out)])


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real catalog: ``run_curate`` (tiny preset, sequential) over three generated videos; their
    clips carry test-pattern text and are rejected, so nothing is cut until an export asks for it."""
    from pipelines.config import load_config
    from pipelines.curate import run_curate

    root = tmp_path_factory.mktemp("catalog")
    (root / "src").mkdir()
    for i in range(3):
        make_mp4(root / "src" / f"v{i}.mp4", "320x180", 50, 120 * i)
    cfg = load_config("tiny")
    cfg.runtime.runner, cfg.runtime.quiet = "sequential", True
    run_curate([str(root / "src")], root / "out", cfg)
    return root / "out" / "catalog.duckdb"


def test_sft_on_a_catalog_selection_trains_on_the_selected_clips(runs: dict[str, Any], catalog: Path,
                                                                 tmp_path: Path) -> None:
    from curation.db import Catalog

    with Catalog(catalog, read_only=True) as cat:
        ids = [r[0] for r in cat.query("SELECT clip_id FROM clips ORDER BY clip_id")[1]]
    assert len(ids) >= 3
    chosen = ids[:2]
    where = "clip_id IN (" + ", ".join(f"'{c}'" for c in chosen) + ")"
    out = tmp_path / "sft"
    assert _cli(["sft", "--base", str(runs["base"]), "--catalog", str(catalog), "--where", where,
                 "--out", str(out), "--steps", "2", "--set", "eval_samples=1", "--quiet"]) == 0
    data = resolve(out / "data")  # the export's version, out/data/latest
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["selection"] == where and manifest["n_samples"] == 2
    import webdataset as wds

    urls = [str(data / e["shard"]) for e in manifest["shards"]]
    assert sorted(s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False)) == chosen
    rows = _log(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert {k for r in rows for k in r["keys"]} == set(chosen)  # only (and all of) the selection
    info = json.loads((out / "sft.json").read_text())
    assert info["where"] == where and info["catalog"] == str(catalog.resolve())
    with pytest.raises(ValueError, match="selects no clip"):
        sft(runs["base"], catalog=catalog, where="false", out=tmp_path / "none", steps=1)


# --------------------------------------------------------------------------- merge


def test_uniform_merge_is_the_mean_and_weight_one_is_the_parent(runs: dict[str, Any], tmp_path: Path) -> None:
    p1, p2 = runs["sft1"]["checkpoint"], runs["sft2"]["checkpoint"]
    c1, c2 = load_checkpoint(p1), load_checkpoint(p2)
    merged = load_checkpoint(merge_checkpoints([p1, p2], out=tmp_path / "uniform.pt"))
    assert merged["kind"] == "dit" and merged["step"] == max(c1["step"], c2["step"])
    assert "optimizer" not in merged and merged["merge"]["weights"] == [0.5, 0.5]
    for part in ("net", "ema"):
        assert merged[part].keys() == c1[part].keys()
        for k, v in merged[part].items():
            assert v.dtype == c1[part][k].dtype
            torch.testing.assert_close(v, (c1[part][k] + c2[part][k]) / 2, rtol=1e-6, atol=1e-7)
    first = load_checkpoint(merge_checkpoints([p1, p2], [1, 0], out=tmp_path / "first.pt"))
    for part in ("net", "ema"):
        assert all(torch.equal(v, c1[part][k]) for k, v in first[part].items())
    assert all(torch.equal(v, c1["frozen"]["vae"][k]) for k, v in first["frozen"]["vae"].items())
    weighted = load_checkpoint(merge_checkpoints([p1, p2], [3, 1], out=tmp_path / "w.pt"))
    assert weighted["merge"]["weights"] == [0.75, 0.25]
    k = next(iter(c1["net"]))
    torch.testing.assert_close(weighted["net"][k], 0.75 * c1["net"][k] + 0.25 * c2["net"][k])


def test_merged_checkpoint_loads_and_evaluates_between_or_below_its_parents(
        runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p1, p2 = runs["sft1"]["checkpoint"], runs["sft2"]["checkpoint"]
    out = tmp_path / "m" / "merged.pt"
    assert _cli(["merge", p1, p2, "--weights", "1,1", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(out)
    pipe = load_pipeline(out)
    assert pipe.step == 4
    losses = [evaluate_checkpoint(p, runs["b"]) for p in (p1, p2, out)]
    assert losses[2] <= max(losses[:2]) + 1e-6, losses
    # a run directory as output: checkpoints/step_*.pt, which `sft --base DIR` and generate resolve
    path = merge_checkpoints([p1, runs["base"]], out=tmp_path / "run")
    assert path == latest_checkpoint(tmp_path / "run") and path.name == "step_0000004.pt"


def _payload(ckpt: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ckpt.items() if k not in ("version", "step")}


def test_merge_refuses_mismatches(runs: dict[str, Any], tmp_path: Path) -> None:
    p1, p2 = runs["sft1"]["checkpoint"], runs["sft2"]["checkpoint"]
    c2 = load_checkpoint(p2)
    other = dict(c2, config={**c2["config"], "dit": {**c2["config"]["dit"], "depth": 7}})
    other_cfg = save_checkpoint(tmp_path / "cfg", 2, _payload(other))
    with pytest.raises(ValueError, match="model configs"):
        merge_checkpoints([p1, other_cfg], out=tmp_path / "x.pt")
    vae = {k: v.clone() for k, v in c2["frozen"]["vae"].items()}
    key = next(k for k, v in vae.items() if v.is_floating_point())
    vae[key] += 1.0
    other = dict(c2, frozen={**c2["frozen"], "vae": vae})
    other_vae = save_checkpoint(tmp_path / "vae", 2, _payload(other))
    with pytest.raises(ValueError, match="VAE"):
        merge_checkpoints([p1, other_vae], out=tmp_path / "x.pt")
    with pytest.raises(ValueError, match="at least two"):
        merge_checkpoints([p1], out=tmp_path / "x.pt")
    with pytest.raises(ValueError, match="dit"):
        merge_checkpoints([p1, latest_checkpoint(runs["root"] / "base" / "vae")], out=tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_merge_weights_and_non_float_tensors() -> None:
    assert normalize_weights(None, 4) == [0.25] * 4
    assert normalize_weights([2, 6], 2) == [0.25, 0.75]
    for bad in ([1, -1], [0, 0], [1, float("nan")], [1]):
        with pytest.raises(ValueError):
            normalize_weights(bad, 2)
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([3])}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor([3])}
    out = average_states([a, b], [0.5, 0.5], ["a", "b"], "net")
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and torch.equal(out["n"], torch.tensor([3]))
    with pytest.raises(ValueError, match="non-float"):
        average_states([a, {**b, "n": torch.tensor([4])}], [0.5, 0.5], ["a", "b"], "net")
    with pytest.raises(ValueError, match="other entries"):
        average_states([a, {"w": b["w"]}], [0.5, 0.5], ["a", "b"], "net")


# --------------------------------------------------------------------------- flows


@pytest.mark.slow  # starts Prefect's ephemeral server unless an earlier test did
def test_sft_and_merge_flows(runs: dict[str, Any], catalog: Path, tmp_path: Path) -> None:
    from prefect.logging.handlers import APILogWorker

    from flows.post_flow import merge_flow, sft_flow

    where = "video_id = (SELECT min(video_id) FROM clips)"
    try:
        state = sft_flow(str(runs["base"]), str(tmp_path / "sft"), catalog=str(catalog), where=where,
                         steps=1, overrides=["eval_samples=1"], return_state=True)
        assert state.is_completed(), state
        summary = state.result()
        assert load_checkpoint(summary["checkpoint"])["step"] == 1
        assert summary["data"] == str(tmp_path / "sft" / "data")
        assert read_manifest(tmp_path / "sft" / "data")["selection"] == where
        state = merge_flow([summary["checkpoint"], runs["sft1"]["checkpoint"]], str(tmp_path / "m.pt"),
                           weights=[1.0, 3.0], return_state=True)
        assert state.is_completed(), state
        assert load_checkpoint(state.result())["merge"]["weights"] == [0.25, 0.75]
    finally:
        APILogWorker.drain_all(timeout=30)
