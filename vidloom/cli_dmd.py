"""Score-distillation command of the ``vidloom`` CLI (``training/post/distill_dmd.py``).

``vidloom distill dmd --teacher runs/tiny --init runs/tscd/segments_4 --data SHARDS --out runs/dmd``:
the few-step student from ``--init`` trained by distribution matching against the guided teacher
(real score) and an online fake-score critic initialised from the teacher, with the TSCD loss
(``--reg-weight``) as regulariser. Resumes like ``vidloom train``.
"""

from __future__ import annotations

import argparse
from typing import Any

from vidloom.cli_common import add_distill_options, distill_config_from_args, print_distill_summary


def cmd_distill_dmd(args: argparse.Namespace) -> int:
    from training.post.distill_dmd import ScoreDistillTrainer
    init = args.init or args.teacher
    trainer = ScoreDistillTrainer(
        distill_config_from_args(args, init), args.data, args.out, args.teacher, init=init,
        device=args.device,
        guidance=args.guidance, segments=tuple(int(s) for s in args.segments.split(",")),
        teacher_steps=args.teacher_steps, critic_lr=args.critic_lr, fake_updates=args.fake_updates,
        dmd_weight=args.dmd_weight, reg_weight=args.reg_weight)
    print_distill_summary(trainer.train(progress=not args.quiet))
    return 0


def add_dmd_parser(distill_sub: Any) -> None:
    """``dmd`` under the ``vidloom distill`` sub-commands."""
    p = distill_sub.add_parser("dmd", help="score distillation: distribution matching, fake-score critic")
    add_distill_options(p)  # --teacher --data --out --steps --set --device --quiet
    p.add_argument("--init", help="student init: a TSCD / CFG-distilled run (default: --teacher)")
    p.add_argument("--guidance", type=float, default=4.0, help="CFG scale of the real score (student input)")
    p.add_argument("--segments", default="4", help="student steps (segment counts of successive phases)")
    p.add_argument("--teacher-steps", type=int, default=50, help="TSCD regulariser's teacher grid")
    p.add_argument("--critic-lr", type=float, default=1e-4, help="learning rate of the fake-score critic")
    p.add_argument("--fake-updates", type=int, default=1, help="critic updates per generator step")
    p.add_argument("--dmd-weight", type=float, default=0.02, help="weight of the distribution-matching term")
    p.add_argument("--reg-weight", type=float, default=1.0, help="weight of the TSCD regulariser (0: off)")
    p.set_defaults(fn=cmd_distill_dmd)
