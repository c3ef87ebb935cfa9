"""The README's eval table: a tiny run's late checkpoint against its earlier self, on CPU.

    python bench/eval_tiny.py --json bench/results/eval_tiny.json

Trains one tiny run (bench/tiny_runs.py: synthetic shards, ``vidloom train``'s code path, 150
DiT steps, checkpoints every 25 kept), then runs the ``vidloom eval`` harness (evaluation/harness.py)
on its step-25 and step-150 checkpoints twice, with the training shards as ``--reference``:

- ``synthetic`` suite: the training captions (en and zh, and two multi-shot pairs): what a model
  trained on those shards can learn;
- ``default`` suite: the shipped 30-prompt suite; the tiny model never saw such prompts, so its
  figures say how the proxies behave on out-of-distribution prompts, not that the model follows them.

Prints and stores, per suite, the mean scores per dimension and checkpoint and the late-over-early
composite win rates with Wilson 95 % intervals (ties half, per prompt x seed), and the same win rates
with the cluster-bootstrap interval over prompts (evaluation/winrate.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=150, help="DiT training steps (the late checkpoint)")
    p.add_argument("--early", type=int, default=25, help="the early checkpoint's step")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--sample-steps", type=int, default=10, help="sampler steps per video")
    p.add_argument("--suites", default="synthetic,default")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for tiny models)")
    p.add_argument("--work", help="directory for the run and the eval outputs (default: a temporary one)")
    p.add_argument("--json", help="write the result record here")
    args = p.parse_args(argv)

    import torch

    from bench import record as bench_record
    from bench.tiny_runs import step_checkpoint, train_tiny_run
    from evaluation.eval_report import format_report
    from evaluation.harness import CheckpointSpec, EvalSettings, compare, run_eval
    from evaluation.suite import load_suite

    torch.set_num_threads(args.threads)
    record = bench_record.provenance("python bench/eval_tiny.py", argv, "fp32", args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        t0 = time.perf_counter()
        shards, run = train_tiny_run(work / "train", steps=args.steps, ckpt_every=args.early)
        train_s = time.perf_counter() - t0
        specs = [CheckpointSpec(f"step{args.early}", str(step_checkpoint(run, args.early))),
                 CheckpointSpec(f"step{args.steps}", str(step_checkpoint(run, args.steps)))]
        settings = EvalSettings(seeds=[int(s) for s in args.seeds.split(",")], steps=args.sample_steps,
                                references=str(shards))
        suites: dict[str, Any] = {}
        for name in args.suites.split(","):
            suite = load_suite(name)
            result = run_eval(specs, suite, work / f"eval-{name}", settings)
            print(format_report(result))
            suites[name] = summarise(result)
            boot = {**result, "winrates": compare(result["videos"], suite, "bootstrap")}
            suites[name]["late_over_early_bootstrap"] = summarise(boot)["late_over_early"]
    used = result["settings"]
    out = {"train": {"steps": args.steps, "early": args.early, "seconds": round(train_s, 1)},
           "settings": {"seeds": settings.seeds, "sample_steps": args.sample_steps,
                        "cfg_scale": settings.cfg_scale, "generation": used["generation"],
                        "weights": used["weights"]},
           "suites": suites}
    if args.json:
        bench_record.write_result(args.json, record, out)
    return 0


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """What the README quotes: per-dimension means and the composite win rates of late over early."""
    late, early = result["ckpts"][1]["label"], result["ckpts"][0]["label"]
    wins = [{k: w[k] for k in ("dimension", "n", "wins", "ties", "losses", "win_rate", "ci_low", "ci_high",
                               "ci_method")}
            for w in result["winrates"] if w["metric"] == "composite" and w["a"] == late and w["b"] == early]
    return {"suite_sha": result["suite_sha"], "n_videos": len(result["videos"]),
            "eval_s": result["elapsed_s"],
            "dimensions": [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                           for row in result["dimensions"]],
            "late_over_early": wins}


if __name__ == "__main__":
    sys.exit(main())
