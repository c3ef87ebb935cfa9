"""Distillation commands of the ``vidloom`` CLI (``training/post/distill.py``).

``vidloom distill cfg --teacher runs/tiny --data SHARDS --out runs/cfg``: CFG distillation into a
guidance-embedding student. ``vidloom distill tscd --teacher runs/cfg --data SHARDS --out runs/tscd``:
TSCD (segments 8 -> 4 -> 2 -> 1; the per-phase students land in ``runs/tscd/segments_<S>``).
``vidloom distill report --teacher runs/tiny --cfg-student runs/cfg --tscd runs/tscd``: fidelity /
reward of every student against the teacher's 50-step CFG output. Runs resume like ``vidloom train``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vidloom.cli_common import add_distill_options, distill_config_from_args, print_distill_summary


def cmd_distill_cfg(args: argparse.Namespace) -> int:
    from training.post.distill import CFGDistillTrainer

    cfg = distill_config_from_args(args, args.teacher)
    trainer = CFGDistillTrainer(cfg, args.data, args.out, args.teacher, device=args.device,
                                guidance_range=tuple(args.guidance_range))
    print_distill_summary(trainer.train(progress=not args.quiet))
    return 0


def cmd_distill_tscd(args: argparse.Namespace) -> int:
    from training.post.distill import TSCDTrainer

    init = args.init or args.teacher
    cfg = distill_config_from_args(args, init)
    segments = tuple(int(s) for s in args.segments.split(","))
    trainer = TSCDTrainer(cfg, args.data, args.out, args.teacher, init=init, device=args.device,
                          guidance=args.guidance, segments=segments, teacher_steps=args.teacher_steps,
                          substeps=args.substeps, heun=args.heun)
    print_distill_summary(trainer.train(progress=not args.quiet))
    return 0


def cmd_distill_report(args: argparse.Namespace) -> int:
    from training.loop.checkpoint import load_pipeline
    from training.post.distill_eval import Variant, distill_report

    device = args.device or "cpu"
    teacher = load_pipeline(args.teacher, device=device)
    variants = [Variant(f"teacher-{n}", teacher, n, args.guidance) for n in args.teacher_steps]
    if args.cfg_student:
        variants.append(Variant("cfg-distilled", load_pipeline(args.cfg_student, device=device), args.steps,
                                guidance=args.guidance))
    for run in sorted(Path(args.tscd).glob("segments_*"), key=lambda p: -int(p.name.split("_")[1])) \
            if args.tscd else []:
        s = int(run.name.split("_")[1])
        student = load_pipeline(run, device=device)
        g = args.guidance if student.dit.cfg.guidance_embed else None
        variants.append(Variant(f"tscd-{s}", student, s, guidance=g))
    prompts = args.prompts or ["a red ball rolls across a table"]
    report = distill_report(teacher, variants, prompts, args.steps, args.guidance, args.seed)
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


def add_commands(sub: Any) -> None:
    d = sub.add_parser("distill", help="few-step distillation: cfg | tscd | dmd | adv | report")
    dsub = d.add_subparsers(dest="distill_cmd", required=True)

    c = dsub.add_parser("cfg", help="CFG distillation into a guidance-embedding student (1 pass, not 2)")
    add_distill_options(c)
    c.add_argument("--guidance-range", type=float, nargs=2, default=(1.0, 6.0), metavar=("LO", "HI"))
    c.set_defaults(fn=cmd_distill_cfg)

    t = dsub.add_parser("tscd", help="trajectory-segmented consistency distillation (8 -> 4 -> 2 -> 1)")
    add_distill_options(t)
    t.add_argument("--init", help="student init checkpoint (default: --teacher, e.g. the CFG-distilled run)")
    t.add_argument("--guidance", type=float, default=4.0, help="CFG scale of the targets")
    t.add_argument("--segments", default="8,4,2,1", help="segment counts of the successive phases")
    t.add_argument("--teacher-steps", type=int, default=50, help="teacher grid: step = 1 / this")
    t.add_argument("--substeps", type=int, default=1, help="teacher steps before the EMA target")
    t.add_argument("--heun", action="store_true", help="second-order teacher steps")
    t.set_defaults(fn=cmd_distill_tscd)

    r = dsub.add_parser("report", help="fidelity / reward of distilled students vs the 50-step CFG teacher")
    r.add_argument("--teacher", required=True)
    r.add_argument("--cfg-student", help="CFG-distilled run")
    r.add_argument("--tscd", help="TSCD run directory (its segments_<S> students)")
    r.add_argument("--prompt", action="append", dest="prompts")
    r.add_argument("--steps", type=int, default=50, help="reference and cfg-student steps")
    r.add_argument("--teacher-steps", type=int, nargs="*", default=[4], help="teacher baselines (steps)")
    r.add_argument("--guidance", type=float, default=4.0)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device")
    r.add_argument("--out", help="also write the JSON report here")
    r.set_defaults(fn=cmd_distill_report)
    from vidloom.cli_adv import add_adv_parser

    add_adv_parser(dsub)  # distill adv: adversarial stage with a DiT-initialised discriminator
    from vidloom.cli_dmd import add_dmd_parser

    add_dmd_parser(dsub)  # distill dmd: score distillation (distribution matching, fake-score critic)
