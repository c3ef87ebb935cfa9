"""``vidloom distill cfg | tscd | dmd | adv | report``: deprecated aliases of ``vidloom post cfg``,
``tscd``, ``dmd``, ``adv`` and ``distill-report`` (vidloom/cli_post.py); each flag maps onto an input
or a config key."""

from __future__ import annotations

from typing import Any

from vidloom.cli_post import Knob, _ints, alias, run_knobs


def _distill() -> list[Knob]:
    return [Knob("--teacher", "input:base", {"required": True,
                                             "help": "'dit' checkpoint giving the targets"}),
            Knob("--data", "input:data", {"required": True, "help": "shards directory (pixels or latents)"}),
            Knob("--out", "out", {"required": True, "help": "student run directory"}),
            *run_knobs("optimizer steps (default: the teacher config's)", "config override")]


def _few_step(section: str) -> list[Knob]:
    return [*_distill(),
            Knob("--init", "input:init", {"help": "student init checkpoint (default: --teacher)"}),
            Knob("--guidance", "post.tscd.guidance", {"type": float, "help": "CFG scale of the targets"}),
            Knob("--segments", f"post.{section}.segments", {"help": "segment counts of the phases"},
                 convert=_ints),
            Knob("--teacher-steps", "post.tscd.teacher_steps", {"type": int, "help": "teacher grid"})]


def add_commands(sub: Any) -> None:
    d = sub.add_parser("distill", help="few-step distillation: cfg | tscd | dmd | adv | report "
                                       "(deprecated: vidloom post cfg | tscd | dmd | adv | distill-report)")
    dsub = d.add_subparsers(dest="distill_cmd", required=True)
    alias(dsub, "cfg", "cfg", "CFG distillation into a guidance-embedding student", [
        *_distill(), Knob("--guidance-range", "post.cfg.guidance_range",
                          {"type": float, "nargs": 2, "metavar": ("LO", "HI")})])
    alias(dsub, "tscd", "tscd", "trajectory-segmented consistency distillation (8 -> 4 -> 2 -> 1)", [
        *_few_step("tscd"),
        Knob("--substeps", "post.tscd.substeps", {"type": int,
                                                  "help": "teacher steps before the EMA target"}),
        Knob("--heun", "post.tscd.heun", {"action": "store_true", "help": "second-order teacher steps"})])
    alias(dsub, "dmd", "dmd", "score distillation: distribution matching, fake-score critic", [
        *_few_step("dmd"),
        Knob("--critic-lr", "post.dmd.critic_lr", {"type": float}),
        Knob("--fake-updates", "post.dmd.fake_updates", {"type": int}),
        Knob("--dmd-weight", "post.dmd.dmd_weight", {"type": float}),
        Knob("--reg-weight", "post.dmd.reg_weight", {"type": float})])
    alias(dsub, "adv", "adv", "adversarial distillation (DiT-initialised discriminator)", [
        *_few_step("adv"),
        Knob("--disc-blocks", "post.adv.disc_blocks", {"type": int}),
        Knob("--disc-lr", "post.adv.disc_lr", {"type": float}),
        Knob("--reg-weight", "post.adv.reg_weight", {"type": float})])
    alias(dsub, "report", "distill-report", "fidelity / reward of distilled students vs the 50-step teacher",
          [
        Knob("--teacher", "input:base", {"required": True}),
        Knob("--cfg-student", "post.distill_report.cfg_student", {"help": "CFG-distilled run"}),
        Knob("--tscd", "post.distill_report.tscd", {"help": "TSCD run directory"}),
        Knob("--prompt", "input:prompts", {"action": "append", "dest": "prompts", "default": None}),
        Knob("--steps", "post.distill_report.steps", {"type": int}),
        Knob("--teacher-steps", "post.distill_report.teacher_steps", {"type": int, "nargs": "*"}),
        Knob("--guidance", "post.distill_report.guidance", {"type": float}),
        Knob("--seed", "post.distill_report.seed", {"type": int}),
        Knob("--device", "device", {}),
        Knob("--out", "out", {"help": "also write the JSON report here"})])
