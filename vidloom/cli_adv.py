"""Adversarial distillation command of the ``vidloom`` CLI (``training/post/distill_adv.py``).

``vidloom distill adv --teacher runs/cfg --init runs/tscd/segments_4 --data SHARDS --out runs/adv``:
the few-step student from ``--init`` trained against a discriminator built on the teacher DiT's first
``--disc-blocks`` block pairs, with the TSCD loss (``--reg-weight``) as regulariser. Resumes like
``vidloom train``.
"""

from __future__ import annotations

import argparse
from typing import Any

from vidloom.cli_common import add_distill_options, distill_config_from_args, print_distill_summary


def cmd_distill_adv(args: argparse.Namespace) -> int:
    from training.post.distill_adv import AdversarialDistillTrainer
    init = args.init or args.teacher
    cfg = distill_config_from_args(args, init)
    segments = tuple(int(s) for s in args.segments.split(","))
    trainer = AdversarialDistillTrainer(
        cfg, args.data, args.out, args.teacher, init=init, device=args.device, guidance=args.guidance,
        segments=segments, teacher_steps=args.teacher_steps, disc_blocks=args.disc_blocks,
        disc_lr=args.disc_lr, reg_weight=args.reg_weight)
    print_distill_summary(trainer.train(progress=not args.quiet))
    return 0


def _arguments(p: argparse.ArgumentParser) -> None:
    add_distill_options(p)  # --teacher --data --out --steps --set --device --quiet
    p.add_argument("--init", help="student init: a TSCD / CFG-distilled run (default: --teacher)")
    p.add_argument("--guidance", type=float, default=4.0, help="CFG scale (teacher targets, student input)")
    p.add_argument("--segments", default="4", help="student steps (segment counts of successive phases)")
    p.add_argument("--teacher-steps", type=int, default=50, help="TSCD regulariser's teacher grid")
    p.add_argument("--disc-blocks", type=int, default=1, help="teacher block pairs in the discriminator")
    p.add_argument("--disc-lr", type=float, default=1e-4, help="learning rate of the discriminator heads")
    p.add_argument("--reg-weight", type=float, default=1.0, help="weight of the TSCD regulariser (0: off)")
    p.set_defaults(fn=cmd_distill_adv)


def add_adv_parser(distill_sub: Any) -> None:
    """``adv`` under the ``vidloom distill`` sub-commands."""
    _arguments(distill_sub.add_parser("adv", help="adversarial distillation (DiT-initialised discriminator)"))
