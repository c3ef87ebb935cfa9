"""The issue's check: a checkpoint trained longer wins against its earlier self on the suite.

One tiny run (bench/tiny_runs.py: ``vidloom train``'s code path on synthetic shards) keeps its
step-25 and step-150 checkpoints; ``vidloom eval`` compares them on the ``synthetic`` suite (the
training captions, en and zh, one multi-shot pair each) with ``--reference`` the training shards, so
the composite holds data_fidelity (PSNR to the nearest training clip through the VAE) next to the
reward proxies. Seeds are fixed, so the outcome is the same on every run; measured here the late
checkpoint wins every comparison (bench/results/eval_tiny.json for the figures).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from bench.tiny_runs import step_checkpoint, train_tiny_run
from vidloom.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_a_checkpoint_trained_longer_wins_against_its_earlier_self(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards, run = train_tiny_run(tmp_path / "train", steps=150, ckpt_every=25)
    early, late = step_checkpoint(run, 25), step_checkpoint(run, 150)
    out = tmp_path / "eval"
    assert main(["eval", "--ckpt", f"early={early}", "--ckpt", f"late={late}", "--suite", "synthetic",
                 "--out", str(out), "--seeds", "0,1,2", "--steps", "10", "--reference", str(shards)]) == 0
    printed = capsys.readouterr().out
    assert "composite | all" in printed
    with duckdb.connect(str(out / "eval.duckdb"), read_only=True) as con:
        n, rate, lo, hi = con.execute(
            "SELECT n, win_rate, ci_low, ci_high FROM eval_winrates WHERE metric = 'composite' "
            "AND dimension = 'all' AND ckpt_a = 'late' AND ckpt_b = 'early'").fetchone()
        psnr = dict(con.execute("SELECT ckpt, avg(value) FROM eval_scores WHERE metric = 'data_psnr_db' "
                                "GROUP BY ckpt").fetchall())
    print(f"late over early: {rate:.3f} [{lo:.3f}, {hi:.3f}] over {n}; data PSNR {psnr}")
    assert n == 10 * 3
    assert rate > 0.5 and lo > 0.5  # the interval itself lies above a coin flip
    assert psnr["late"] > psnr["early"] + 3.0
