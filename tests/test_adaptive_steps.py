"""Adaptive step counts (training/inference/adaptive_steps.py, ``generate --steps auto``): the picker's budget
and mapping on hand-made estimates, the probe on a tiny DiT, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.random_runs import random_dit_run
from training.inference.adaptive_steps import AdaptiveSteps, allocate, passes_per_step, probe, sample_euler

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def test_allocate_meets_the_total_within_bounds_and_follows_sqrt() -> None:
    assert allocate([1.0, 4.0], 30, 1, 100) == [10, 20]  # n ~ sqrt(e): 1 : 2
    assert allocate([1.0, 4.0], 30, 1, 100, power=1.0) == [6, 24]
    est = [0.1, 0.5, 0.2, 0.9, 0.3, 0.05, 0.7, 0.4]
    for total in (8, 20, 37, 64):
        n = allocate(est, total, 1, 12)
        assert sum(n) == total and all(1 <= x <= 12 for x in n)
        order = sorted(range(len(est)), key=est.__getitem__)
        assert [n[i] for i in order] == sorted(n)  # more curvature, never fewer steps
    assert allocate(est, 1000, 2, 12) == [12] * 8 and allocate(est, 0, 2, 12) == [2] * 8  # clamped
    assert allocate([0.3, 0.3, 0.3], 10, 1, 10) == [4, 3, 3]  # ties: the earlier prompt first
    assert allocate([0.0, 0.0], 6, 1, 10) == [3, 3] and allocate([], 5, 1, 2) == []


def test_the_budget_counts_the_probe() -> None:
    assert AdaptiveSteps().power == 0.8  # the default (see the module docstring); sqrt here
    a = AdaptiveSteps(budget=8, power=0.5)
    assert a.max_steps == 16 and a.probe_passes(True) == 4 and a.probe_passes(False) == 2
    assert a.extra_passes(True) == 2 and a.mean_steps(True) == 7  # t = 1 is the first step's: 1 extra
    assert a.extra_passes(True, heun=True) == 4 and a.mean_steps(True, heun=True) == 7  # 8 - 4/4
    assert AdaptiveSteps(budget=8, probe_ts=(0.9, 0.5)).mean_steps(True) == 6  # nothing reused
    assert a.pick(0.2, 0.2, True) == 7 and a.pick(0.8, 0.2, True) == 14 and a.pick(100.0, 0.2, True) == 16
    assert a.pick(0.0, 0.2, True) == 2  # the floor
    est = [0.1, 0.5, 0.2, 0.9, 0.3, 0.05, 0.7, 0.4]
    steps = a.allocate(est, guided=True)
    # mean passes of the set, probe included = the fixed schedule's 8 steps x 2 passes
    assert sum(a.extra_passes(True) + n * passes_per_step(True, False) for n in steps) == 8 * 16
    for bad in ({"probe_ts": (1.0,)}, {"probe_ts": (0.5, 1.0)}, {"min_steps": 0}, {"budget": 0},
                {"min_steps": 5, "max_steps": 3}):
        with pytest.raises(ValueError):
            AdaptiveSteps(**bad)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny "dit" run (random weights, woken up), 5 frames of 32x64."""
    return random_dit_run(tmp_path_factory.mktemp("adaptive_run"))


def test_probe_is_deterministic_and_its_first_velocity_is_the_first_step(run_dir: Path) -> None:
    from models.dit.model import sample
    from training.inference.generate import Timer, generate, prepare
    from training.loop.checkpoint import load_pipeline

    pipe = load_pipeline(run_dir)
    a = AdaptiveSteps(budget=4)
    noise, kw, uncond, scale, shift = prepare(pipe, "a red ball rolls", None, 5, (32, 64), 4.0, "", 3)
    first, v0 = probe(pipe.dit, noise, kw, a, shift, scale, uncond)
    again, v1 = probe(pipe.dit, noise, kw, a, shift, scale, uncond)
    assert first == again and torch.equal(v0, v1) and first["estimate"] > 0
    assert first["ts"][0] == 1.0 and 0.1 < first["ts"][1] < 0.5  # the sampler's shift moves t = 0.1 up
    other, _ = probe(pipe.dit, torch.randn_like(noise), kw, a, shift, scale, uncond)
    assert other["estimate"] != first["estimate"]
    timer = Timer()
    reused = sample_euler(timer.counted(pipe.dit, "n"), noise, kw, 3, shift, scale, uncond, v0)
    plain = sample(pipe.dit, noise, kw, 3, shift=shift, cfg_scale=scale, uncond_kwargs=uncond)
    assert torch.allclose(reused, plain, atol=1e-6) and timer.out["n"] == 2 * 2  # one step's passes saved
    info: dict = {}
    timings: dict = {}
    video = generate(pipe, "a red ball rolls", steps="auto", seed=3,
                     adaptive=AdaptiveSteps(budget=4, reference=1.0), info=info, timings=timings)
    rec = info["adaptive"]
    assert video.shape[1] == 5 and rec["estimate"] == first["estimate"] and rec["calibration"] == "given"
    assert 2 <= info["steps"] == rec["steps"] <= 8 and timings["dit_passes"] == rec["passes"]
    with pytest.raises(ValueError, match="auto"):
        generate(pipe, "x", steps="many")  # type: ignore[arg-type]


def _cli(argv: list[str]) -> int:
    from vidloom.cli import main

    return main(["generate", *argv])


def test_generate_steps_auto_records_its_choice(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.mp4"
    assert _cli(["--ckpt", str(run_dir), "--prompt", "two dogs chase a red ball", "--out", str(out),
                 "--steps", "auto", "--steps-budget", "4", "--steps-min", "2", "--steps-max", "6"]) == 0
    summary = json.loads(out.with_suffix(".json").read_text("utf-8"))
    rec = summary["adaptive"]
    assert out.is_file() and summary["steps"] == rec["steps"] and 2 <= rec["steps"] <= 6
    assert rec["calibration"] == "builtin" and rec["calibration_passes"] == 8 * 4  # 8 prompts x 4 passes
    assert rec["reference"] > 0 and rec["estimate"] > 0 and rec["budget"] == 4
    assert summary["timings"]["dit_passes"] == rec["passes"] == 2 + 2 * rec["steps"]
    prompts = tmp_path / "p.txt"
    prompts.write_text("a white wall\ntwo dogs chase a red ball\na crowd of dancers spins on a stage\n"
                       "一只猫在跳舞\n", encoding="utf-8")
    assert _cli(["--ckpt", str(run_dir), "--prompts", str(prompts), "--out", str(tmp_path / "b"),
                 "--steps", "auto", "--steps-budget", "3", "--seed", "5"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "b" / "index.jsonl").read_text("utf-8").splitlines()]
    recs = [r["adaptive"] for r in rows]
    assert all(r["calibration"] == "batch" and 2 <= r["steps"] <= 6 for r in recs)
    # the file's mean DiT passes, probes included, is the 3-step fixed schedule's (3 x 2)
    assert sum(r["timings"]["dit_passes"] for r in rows) == sum(r["passes"] for r in recs) == 4 * 3 * 2
    assert [r["steps"] for r in rows] == [r["steps"] for r in recs]
    with pytest.raises(SystemExit):
        _cli(["--ckpt", str(run_dir), "--prompt", "x", "--out", str(tmp_path / "x.mp4"), "--steps", "0"])
