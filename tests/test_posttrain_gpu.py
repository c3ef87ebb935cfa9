"""Every post-training stage on a CUDA device (bf16 autocast): SFT, CFG / TSCD / score / adversarial
distillation, ReFL RLHF and the refiner each run a few steps from a tiny base, their losses are finite,
their checkpoints load, and the cascade generates. The same stages are tested in depth on the CPU; this
file catches device-placement and autocast faults (GPU only)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none present)")]

QUICK = ["num_workers=0", "eval_samples=1", "warmup_steps=1", "ckpt_every=2", "log_every=1"]


def _finite(summary: dict) -> bool:
    return all(math.isfinite(v) for row in summary["eval"] for k, v in row.items() if isinstance(v, float))


def run_all_stages(root: Path, device: str) -> dict[str, dict]:
    """Base (train) -> SFT -> CFG distil -> TSCD -> DMD -> adversarial; ReFL; refiner; the cascade."""
    from tests.train_shards import write_test_shards
    from training.config import load_train_config
    from training.inference.generate import generate
    from training.loop.checkpoint import load_pipeline
    from training.loop.run import train
    from training.post.distill import CFGDistillTrainer, TSCDTrainer, distill_config
    from training.post.distill_adv import AdversarialDistillTrainer
    from training.post.distill_dmd import ScoreDistillTrainer
    from training.post.inputs import RunInputs
    from training.post.refine import train_refiner
    from training.post.rlhf import RLHFTrainer, rlhf_config
    from training.post.sft import sft

    data = write_test_shards(root, [("128x64", 30)] * 6)
    cfg = load_train_config("tiny", overrides=["vae_steps=20", "steps=12", *QUICK])
    out: dict[str, dict] = {"base": train(cfg, data, root / "base", progress=False, device=device)["dit"]}
    base = root / "base"
    out["sft"] = sft(base, data, out=root / "sft", steps=2, overrides=QUICK, progress=False, device=device)
    kw = {"device": device}
    cfgd = CFGDistillTrainer(distill_config(base, [*QUICK, "steps=2"]), RunInputs(base, data=data),
                             root / "cfgd",
                             **kw)
    out["cfg"] = cfgd.train(progress=False)
    few = ["post.tscd.teacher_steps=4", "post.dmd.segments=[1]", "post.adv.segments=[1]"]
    student = distill_config(root / "cfgd", [*QUICK, "steps=4", "post.tscd.segments=[2, 1]", *few])
    from_cfgd = RunInputs(base, data=data, init=root / "cfgd")
    out["tscd"] = TSCDTrainer(student, from_cfgd, root / "tscd", **kw).train(progress=False)
    out["dmd"] = ScoreDistillTrainer(distill_config(root / "cfgd", [*QUICK, "steps=2", *few]), from_cfgd,
                                     root / "dmd", **kw).train(progress=False)
    out["adv"] = AdversarialDistillTrainer(distill_config(root / "cfgd", [*QUICK, "steps=2", *few]),
                                           from_cfgd,
                                           root / "adv", **kw).train(progress=False)
    rl_cfg = rlhf_config(base, steps=2, n_frames=5, size=(32, 64), global_batch=2,
                         overrides=["post.rlhf.sample_steps=3", "post.rlhf.grad_steps=1",
                                    "post.rlhf.rewards={motion: 1.0, aesthetic_proxy: 1.0}"])
    out["rlhf"] = RLHFTrainer(rl_cfg, RunInputs(base, prompts=["a red ball", "a blue box"]), root / "rlhf",
                              **kw).train(progress=False)
    out["refine"] = train_refiner(base, data, root / "refine", steps=2, overrides=QUICK, size=(64, 128),
                                  n_frames=9, device=device, progress=False)
    for name in ("sft", "cfgd", "tscd", "dmd", "adv", "rlhf"):
        load_pipeline(root / name, device=device)
    video = generate(load_pipeline(root / "cfgd", device=device), "a clip", steps=2, refine=root / "refine",
                     size=(64, 128), n_frames=9)
    out["cascade"] = {"shape": list(video.shape), "finite": bool(torch.isfinite(video).all())}
    return out


def test_every_post_training_stage_runs_on_cuda(tmp_path: Path) -> None:
    out = run_all_stages(tmp_path, "cuda")
    out["sft"] = out["sft"]["dit"]
    for name in ("base", "sft", "cfg", "tscd", "dmd", "adv", "rlhf", "refine"):
        assert _finite(out[name]), (name, out[name]["eval"])
    assert out["cascade"] == {"shape": [3, 9, 64, 128], "finite": True}
