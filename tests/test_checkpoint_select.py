"""Choosing the checkpoint to resume from reads metadata, not checkpoints; the trainer says which step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train_shards import write_test_shards
from training.loop.checkpoint import (
    checkpoint_candidates,
    checkpoint_meta,
    latest_checkpoint,
    save_checkpoint,
)

BIG = 8_000_000  # float32 elements: a 32 MB tensor per checkpoint


def _bytes_read() -> int:
    """Bytes this process has read through read(2) and friends (Linux /proc/self/io 'rchar')."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    for step in (10, 20, 30):
        payload = {"kind": "dit", "net": {"w": torch.full((BIG,), float(step))}}
        save_checkpoint(tmp_path, step, payload, keep=3)
    return tmp_path


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_choosing_reads_kilobytes_not_the_checkpoints(run: Path) -> None:
    before = _bytes_read()
    path = latest_checkpoint(run)
    read = _bytes_read() - before
    assert path is not None and path.name == "step_0000030.pt"
    assert read < 1_000_000, f"read {read} bytes to choose among 3 x {4 * BIG} byte checkpoints"
    assert checkpoint_meta(path) == {"version": 1, "step": 30, "kind": "dit", "bytes": path.stat().st_size}


def test_pruning_removes_the_metadata_too(run: Path) -> None:
    save_checkpoint(run, 40, {"kind": "dit", "net": {}}, keep=2)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step_0000030.json", "step_0000030.pt", "step_0000040.json", "step_0000040.pt"]


def test_a_torn_or_foreign_file_is_skipped(run: Path) -> None:
    ckpts = run / "checkpoints"
    newest = ckpts / "step_0000030.pt"
    with open(newest, "r+b") as f:
        f.truncate(newest.stat().st_size // 2)  # a size that its metadata does not match
    assert latest_checkpoint(run) == ckpts / "step_0000020.pt"
    (ckpts / "step_0000020.json").unlink()  # an older run's file (or a kill between the renames)
    assert latest_checkpoint(run) == ckpts / "step_0000020.pt"  # its zip directory is whole
    with open(ckpts / "step_0000020.pt", "r+b") as f:
        f.truncate(1000)
    (ckpts / "step_0000099.pt").write_bytes(b"not a checkpoint")
    assert checkpoint_candidates(run) == [ckpts / "step_0000010.pt"]


def _train(data: Path, out: Path, steps: int) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "vidloom.cli", "train", "--preset", "tiny", "--data", str(data),
           "--out", str(out), "--quiet"]
    for s in ("vae_steps=2", f"steps={steps}", "ckpt_every=2", "num_workers=0", "log_every=1",
              "eval_samples=1", "vae_stage.global_batch=2", "warmup_steps=1"):
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow  # two real `vidloom train` runs, ~22 s on 2 loaded cores
def test_train_resumes_from_a_logged_step_and_skips_a_damaged_newest(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    data = write_test_shards(shards, [("128x64", 12), ("128x64", 14), ("128x64", 16)])
    run = tmp_path / "run"
    first = _train(data, run, steps=4)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "resuming" not in first.stderr
    newest = run / "checkpoints" / "step_0000004.pt"
    with open(newest, "r+b") as f:  # damaged after it was written: same size, so only loading shows it
        f.seek(64)
        f.write(b"\xff" * 256)
    second = _train(data, run, steps=6)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "[vae] resuming from step 2" in second.stderr  # the VAE phase was done: it resumes at its end
    assert f"cannot load {newest}" in second.stderr
    assert f"[dit] resuming from step 2 ({run / 'checkpoints' / 'step_0000002.pt'})" in second.stderr
