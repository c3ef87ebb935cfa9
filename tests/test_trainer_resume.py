"""A training run killed with SIGKILL at a random step and rerun logs bitwise-identical steps.

``vidloom train`` runs as a real subprocess (VAE first, then the DiT); one copy runs uninterrupted,
another is killed once its log reaches a step drawn at random (the seed is in the test id) and is
then rerun with the same command. Every logged step of both phases must match: the sample keys
(order) and the loss as a hex float.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.train_shards import write_test_shards
from training.config import tiny
from training.loop.checkpoint import latest_checkpoint, load_checkpoint
from training.loop.trainer import lr_at, step_generator

CLIPS = [("128x64", 20 + 2 * i) for i in range(8)]
SETTINGS = ["vae_steps=6", "steps=10", "ckpt_every=2", "num_workers=2", "log_every=1", "eval_samples=2",
            "vae_stage.global_batch=3", "warmup_steps=2"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_shards(tmp_path_factory.mktemp("resume"), CLIPS)


def _cmd(data: Path, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "vidloom.cli", "train", "--preset", "tiny", "--data", str(data),
           "--out", str(out), "--quiet"]
    for s in SETTINGS:
        cmd += ["--set", s]
    return cmd


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _steps(run: Path) -> list[tuple]:
    rows = [("vae", r) for r in _log(run / "vae" / "log.jsonl")]
    rows += [("dit", r) for r in _log(run / "log.jsonl")]
    return [(phase, r["step"], r["stage"], tuple(r["keys"]), r["loss_hex"], r["epoch"], r["samples_seen"])
            for phase, r in rows]


@pytest.mark.parametrize("seed", [3, 11])  # kills in the VAE phase (3), in the DiT phase (11)
def test_sigkill_then_rerun_matches_uninterrupted_run(shards: Path, tmp_path: Path, seed: int) -> None:
    ref = tmp_path / "ref"
    subprocess.run(_cmd(shards, ref), check=True, env=_env(), capture_output=True, timeout=300)
    expected = _steps(ref)
    assert [s[:2] for s in expected] == [("vae", i) for i in range(1, 7)] + [("dit", i) for i in range(1, 11)]

    # kill at a random logged step of either phase (1..16 counting both logs)
    kill_at = random.Random(seed).randint(1, len(expected) - 1)
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(shards, run), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(_steps(run)) < kill_at and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    partial = _steps(run)
    assert kill_at <= len(partial) < len(expected)
    assert partial == expected[: len(partial)]

    subprocess.run(_cmd(shards, run), check=True, env=_env(), capture_output=True, timeout=300)
    assert _steps(run) == expected  # remaining order and losses bitwise identical, no duplicate steps
    for phase_dir in (run, run / "vae"):
        final = load_checkpoint(latest_checkpoint(phase_dir))
        ref_final = load_checkpoint(latest_checkpoint(ref if phase_dir == run else ref / "vae"))
        for key, value in ref_final["net"].items():
            assert torch.equal(final["net"][key], value), key


def test_step_rng_and_schedule_are_pure() -> None:
    a = torch.randn(4, generator=step_generator(3, 17))
    assert torch.equal(a, torch.randn(4, generator=step_generator(3, 17)))
    assert not torch.equal(a, torch.randn(4, generator=step_generator(3, 18)))
    lrs = [lr_at(s, 1.0, warmup=5, total=50, min_ratio=0.1) for s in range(50)]
    assert lrs[0] == pytest.approx(0.2) and lrs[4] == pytest.approx(1.0)  # linear warm-up
    assert all(b <= a for a, b in zip(lrs[4:], lrs[5:], strict=False))  # then monotone cosine decay
    assert lrs[-1] == pytest.approx(0.1, abs=2e-3)


def test_stage_bounds_scale_with_steps() -> None:
    cfg = tiny()
    cfg.steps = 50
    assert cfg.stage_bounds() == [(0, 10), (10, 35), (35, 50)]
    assert [cfg.stage_at(s) for s in (0, 9, 10, 34, 35, 49)] == [0, 0, 1, 1, 2, 2]
