"""Data-parallel training for real: ``torchrun`` with 2 CPU ranks (gloo) against one process.

``vidloom train`` runs three times as subprocesses on the same tiny shards and settings: one
process, 2 ranks with DDP, 2 ranks with FSDP (``fully_shard`` runs on CPU/gloo with torch 2.13).
The properties:

- DDP makes the update one process makes on the same global batch: the final weights of both
  phases (VAE, DiT) agree. Tolerance: float32 sums in another order (micro-batches of 2 instead of
  4, then a gloo all-reduce of the two means) differ in the last bits; AdamW's normalised update
  and 4-6 steps carry that to ~2e-5 on the DiT, hence ``ATOL``. Elements whose gradient is pure
  rounding noise (e.g. conv biases right before a GroupNorm, which cancels them: RMS gradient
  ~1e-9) are excluded: Adam divides that noise by its own RMS and moves them by ~lr whichever way
  the noise points, in any two runs that sum in different orders.
- Each rank reads its own half of every global batch: rank 0's logged keys are its
  ``rank_slice`` share, the two shares are disjoint and together are the one-process batch.
- FSDP gives the DDP weights, and its checkpoints (full state dicts) load in one process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.train_shards import write_test_shards
from training.config import from_dict
from training.data import ShardDataset, global_order, rank_slice
from training.loop.checkpoint import latest_checkpoint, load_checkpoint, load_pipeline, load_vae

ROOT = Path(__file__).resolve().parents[1]
CLIPS = [("128x64", 20)] * 8
# tiny preset stages: image (global batch 8), video-low (4), video-high (4); VAE global batch 4
SETTINGS = ["vae_steps=4", "steps=6", "ckpt_every=3", "num_workers=0", "log_every=1", "eval_samples=1",
            "warmup_steps=1"]
ATOL = 1e-4
NOISE_RMS = 1e-7  # an RMS gradient below this may be float rounding noise



@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("dist")
    data = write_test_shards(tmp, CLIPS)
    out = {"data": data}
    for name, nproc, strategy in (("single", 1, None), ("ddp", 2, "ddp"), ("fsdp", 2, "fsdp")):
        out[name] = _train(data, tmp / name, nproc, strategy)
    return out


def _train(data: Path, out: Path, nproc: int, strategy: str | None) -> Path:
    cmd = [sys.executable]
    if nproc > 1:
        cmd += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    cmd += ["-m", "vidloom.cli", "train", "--preset", "tiny", "--data", str(data), "--out", str(out),
            "--quiet"]
    for s in SETTINGS:
        cmd += ["--set", s]
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), VIDLOOM_PARALLEL=strategy or "ddp")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out


def _log(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def _final(run: Path) -> dict[str, Any]:
    path = latest_checkpoint(run)
    assert path is not None, run
    return load_checkpoint(path)


def _param_names(ckpt: dict[str, Any]) -> list[str]:
    """Parameter names in the order of the optimizer's param ids (decay group, then no-decay)."""
    from models.vae.causal_vae import VAE
    from training.loop.dit_trainer import DiTNet
    from training.loop.vae_trainer import VAENet

    cfg = from_dict(ckpt["config"])
    net = VAENet(VAE(cfg.vae)) if ckpt["kind"] == "vae" else DiTNet(cfg)
    named = [(k, p) for k, p in net.named_parameters() if p.requires_grad]
    return [k for k, p in named if p.dim() >= 2] + [k for k, p in named if p.dim() < 2]


def _assert_same_weights(ref: dict[str, Any], other: dict[str, Any], atol: float) -> None:
    """``net`` of both checkpoints agree within ``atol``, except elements whose gradient in ``ref`` is
    rounding noise (nonzero RMS gradient <= ``NOISE_RMS``); those are few (<1%) and moved < lr/step."""
    assert ref["step"] == other["step"] and ref["net"].keys() == other["net"].keys()
    ids = [i for group in ref["optimizer"]["param_groups"] for i in group["params"]]
    rms = {}
    for pid, name in zip(ids, _param_names(ref), strict=True):
        state = ref["optimizer"]["state"].get(pid)
        if state is not None:
            rms[name] = state["exp_avg_sq"].sqrt()
    lr = ref["config"]["vae_lr" if ref["kind"] == "vae" else "lr"]
    total = off = 0
    for name, value in ref["net"].items():
        diff = (value - other["net"][name]).abs()
        bad = diff > atol
        if bool(bad.any()):
            r = rms.get(name, torch.zeros_like(value))[bad]
            noise = (r > 0) & (r <= NOISE_RMS)
            assert bool(noise.all()), f"{ref['kind']} {name}: max |diff| {float(diff.max()):.3g} > {atol}"
            assert float(diff.max()) <= 2 * lr * ref["step"], name
        total, off = total + value.numel(), off + int(bad.sum())
    assert off <= 0.01 * total, (ref["kind"], off, total)


def test_ddp_matches_one_process_on_the_same_global_batch(runs: dict[str, Path]) -> None:
    for sub in ("vae", ""):
        _assert_same_weights(_final(runs["single"] / sub), _final(runs["ddp"] / sub), ATOL)


def test_ranks_read_disjoint_halves_of_every_global_batch(runs: dict[str, Path]) -> None:
    from training.config import tiny

    cfg = tiny()
    n_canonical, seed = cfg.n_canonical, cfg.seed
    dataset = ShardDataset(runs["data"])
    keys = [dataset.raw(i)[0] for i in range(len(dataset))]
    for sub in ("vae", ""):
        single, ddp = _log(runs["single"] / sub), _log(runs["ddp"] / sub)
        assert [r["step"] for r in ddp] == [r["step"] for r in single] == list(range(1, len(single) + 1))
        for one, dist in zip(single, ddp, strict=True):
            batch = len(one["keys"])  # the global batch of this step's stage
            assert batch % 2 == 0 and len(dist["keys"]) == batch // 2
            assert (dist["epoch"], dist["samples_seen"]) == (one["epoch"], one["samples_seen"])
            epoch, seen = one["epoch"], one["samples_seen"]  # the loader state after this batch
            if seen == 0:  # the batch ended its epoch (8 samples: global batches end exactly there)
                epoch, seen = epoch - 1, len(keys)
            order = global_order(len(keys), seed, epoch, n_canonical)[seen - batch: seen]
            shares = [[keys[i] for i in rank_slice(order, r, 2, batch)] for r in range(2)]
            assert dist["keys"] == shares[0]  # rank 0 read exactly its slice
            assert not set(shares[0]) & set(shares[1])  # disjoint ...
            assert shares[0] + shares[1] == one["keys"]  # ... and together the one-process batch


def test_fsdp_on_cpu_matches_ddp_and_checkpoints_load_in_one_process(runs: dict[str, Path]) -> None:
    fsdp, ddp = _final(runs["fsdp"] / "vae"), _final(runs["ddp"] / "vae")
    for part in ("net", "ema"):  # same ranks, same draws: only the reduction differs (sharded)
        for name, value in ddp[part].items():
            assert torch.allclose(fsdp[part][name], value, atol=1e-6), (part, name)
    dit_f, dit_d = _final(runs["fsdp"]), _final(runs["ddp"])
    for name, value in dit_d["net"].items():
        assert torch.allclose(dit_f["net"][name], value, atol=1e-6), name
    single = _final(runs["single"])
    for name in ("ddp", "fsdp"):
        ckpt = _final(runs[name])
        assert ckpt["step"] == 6 and ckpt["kind"] == "dit"
        assert ckpt["net"].keys() == single["net"].keys()
        assert all(not hasattr(v, "full_tensor") and v.device.type == "cpu" for v in ckpt["net"].values())
        assert ckpt["optimizer"]["state"] and ckpt["optimizer"]["param_groups"]
        pipe = load_pipeline(runs[name])  # one CPU process, no process group
        assert pipe.step == 6
        vae, stats = load_vae(runs[name] / "vae")
        assert np.isfinite(stats.std.numpy()).all()
        sample = next(iter(pipe.dit.parameters()))
        assert torch.isfinite(sample).all()
        assert len(_log(runs[name])) == 6


def _resume_copy(run: Path, dest: Path) -> Path:
    """A copy of a finished run cut back to its step-3 checkpoint (the step-6 one removed)."""
    shutil.copytree(run, dest)
    (dest / "checkpoints" / "step_0000006.pt").unlink()
    return dest


@pytest.mark.parametrize(("written", "resumed"), [("fsdp", "single"), ("single", "fsdp")])
def test_a_run_resumes_under_another_strategy(runs: dict[str, Path], tmp_path: Path, written: str,
                                              resumed: str) -> None:
    """FSDP checkpoints hold the optimizer state keyed by parameter name, one-process/DDP ones by
    integer id: either loads under the other strategy, and training goes on from step 3."""
    run = _resume_copy(runs[written], tmp_path / "run")
    saved = len(load_checkpoint(run / "checkpoints" / "step_0000003.pt")["optimizer"]["state"])
    nproc, strategy = (2, "fsdp") if resumed == "fsdp" else (1, None)
    _train(runs["data"], run, nproc, strategy)
    assert [r["step"] for r in _log(run)] == [1, 2, 3, 4, 5, 6]
    assert _log(run)[:3] == _log(runs[written])[:3]
    final = _final(run)
    assert final["step"] == 6
    adam_steps = [float(s["step"]) for s in final["optimizer"]["state"].values()]
    # the step-3 moments were loaded, not restarted (that would count 3); parameters without a
    # gradient so far have none (FSDP may give the unused ones a zero gradient later)
    assert adam_steps.count(6.0) == saved > 0
