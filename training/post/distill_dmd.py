"""Score distillation: distribution matching for the few-step student (DMD / DMD2, Yin et al. 2024), the
score-distillation stage of Seedance 1.0 §4.3's multi-stage distillation.

The student (a few-step generator, ``segments`` = 4 or 1, initialised from a TSCD or CFG-distilled
checkpoint) predicts clean latents at its own sampling times, as in the adversarial stage:
``x_t = (1 - t) z + t noise`` with ``t`` a segment upper boundary and ``x0_hat = x_t - t v_student``.
Two denoisers judge ``x0_hat`` re-noised to a shared logit-normal ``t'`` (resolution-shifted),
``x' = (1 - t') x0_hat + t' eps``:

- **real score**: the frozen teacher with guidance (CFG in two passes, or its guidance embedding):
  ``x0_real = x' - t' v_teacher``;
- **fake score**: a trainable copy of the teacher DiT (the critic), fitted online by flow matching to
  the student's detached samples, so it tracks the student's distribution: ``x0_fake = x' - t' v_fake``.

The generator's gradient on ``x0_hat`` is ``(x0_fake - x0_real) / mean|x0_hat - x0_real|`` (per sample,
DMD's normalisation), applied through ``dmd_loss``: descending it moves samples from where the
student's own distribution puts them towards where the teacher's does; it vanishes when the two
scores agree. ``reg_weight`` x the TSCD loss keeps the student on the teacher's trajectories.

Each optimizer step: the generator update (the trainer's optimizer), then ``fake_updates`` AdamW
updates of the critic on that step's detached samples. The critic and its optimizer state are
checkpointed under ``dmd``; checkpoints stay "dit" (``load_pipeline`` / ``vidloom generate`` read them).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from models.dit.model import velocity_fn
from training.config import TrainConfig
from training.loop.distributed import DistInfo
from training.loop.flow_matching import logit_normal_t, shift_t
from training.loop.trainer import Batch
from training.post.config import section_dict
from training.post.distill import TSCDTrainer, _bview, guided_velocity
from training.post.distill_stage import FewStepStage
from training.post.inputs import RunInputs

DMD_SEED_OFFSET = 104729  # the score-distillation draws use their own per-sample generators


def dmd_loss(x0_hat: Tensor, x0_real: Tensor, x0_fake: Tensor) -> Tensor:
    """``0.5 * mean (x0_hat - sg(x0_hat - g))^2`` with ``g = (x0_fake - x0_real) / w``, ``w`` the
    per-sample ``mean |x0_hat - x0_real|`` (detached): its gradient w.r.t. ``x0_hat`` is ``g / numel``."""
    with torch.no_grad():
        w = (x0_hat - x0_real).abs().flatten(1).mean(1).clamp_min(1e-6)
        target = x0_hat - (x0_fake - x0_real) / _bview(w, x0_hat)
    return 0.5 * F.mse_loss(x0_hat.float(), target.float())


class ScoreDistillTrainer(FewStepStage, TSCDTrainer):
    """TSCD student + distribution-matching score distillation against an online fake-score critic.

    Settings ``post.dmd`` (beyond ``post.tscd``'s guidance and teacher grid): ``critic_lr`` /
    ``critic_betas`` the critic's AdamW; ``fake_updates`` critic updates per generator step;
    ``dmd_weight`` weight of the DMD term; ``reg_weight`` weight of the TSCD regulariser;
    ``segments`` (default ``(4,)``: the student's steps).
    """

    mode = "dmd"

    settings = "dmd"

    def __init__(self, cfg: TrainConfig, inputs: RunInputs, out: str | Path, dist: DistInfo | None = None,
                 *, device: str | torch.device | None = None) -> None:
        d = cfg.post.dmd
        self.fake_updates, self.dmd_weight = int(d.fake_updates), float(d.dmd_weight)
        self.reg_weight = float(d.reg_weight)
        super().__init__(cfg, inputs, out, dist, device=device)
        self.critic = copy.deepcopy(self.teacher.dit).train().requires_grad_(True)
        self.c_opt = torch.optim.AdamW(self.critic.parameters(), lr=d.critic_lr, betas=tuple(d.critic_betas),
                                       weight_decay=0.0)

    def distill_info(self) -> dict[str, Any]:
        dmd = {k: v for k, v in section_dict(self.cfg.post.dmd).items() if k != "segments"}
        return {**super().distill_info(), **dmd}

    def checkpoint_extra(self) -> dict[str, Any]:
        extra = super().checkpoint_extra()
        if hasattr(self, "critic"):
            extra["dmd"] = {"critic": self.critic.state_dict(), "optimizer": self.c_opt.state_dict()}
        return extra

    def on_resume(self, ckpt: dict[str, Any]) -> None:
        super().on_resume(ckpt)
        if "dmd" in ckpt:
            self.critic.load_state_dict(ckpt["dmd"]["critic"])
            self.c_opt.load_state_dict(ckpt["dmd"]["optimizer"])

    def _real_velocity(self, x: Tensor, t: Tensor, cond: dict[str, Any], b: int) -> Tensor:
        w = torch.full((b,), self.guidance, device=self.device)
        teacher_fn = velocity_fn(self.teacher)
        if self.teacher.dit.cfg.guidance_embed:
            return teacher_fn(x, t, {**cond, "guidance": w})
        return guided_velocity(teacher_fn, x, t, cond, self.uncond(cond, b), w)

    def generator_loss(self, mb: Batch) -> tuple[Tensor, dict[str, Any]]:
        """The DMD term for one micro-batch, and the detached samples the critic is fitted to."""
        z = self.latents(mb)
        b = z.shape[0]
        gens, t, noise, shift = self.segment_draws(z, mb, DMD_SEED_OFFSET)
        cond = self.text_inputs(mb, None, 0.0)
        t_s = self.renoise_t(gens, shift, z)
        eps = torch.cat([torch.randn((1, *z.shape[1:]), generator=g) for g in gens]).to(z)
        tb, ts = _bview(t, z), _bview(t_s, z)
        emb, mask = self.teacher_text(cond)
        text = {"text": emb, "text_mask": mask}
        with self.autocast():
            v = velocity_fn(self.model)(tb * noise + (1 - tb) * z, t, self._student_kwargs(cond, b))
            x0_hat = ((1 - tb) * z + tb * noise - tb * v.float()).float()
            with torch.no_grad():
                x_s = (1 - ts) * x0_hat + ts * eps
                x0_real = x_s - ts * self._real_velocity(x_s, t_s, cond, b).float()
                x0_fake = x_s - ts * self.critic(x_s, t_s, **text).float()
        return dmd_loss(x0_hat, x0_real, x0_fake), {"x0": x0_hat.detach(), **text}

    def critic_step(self, samples: list[dict[str, Any]], sizes: list[int], gen: torch.Generator) -> float:
        """``fake_updates`` flow-matching updates of the critic on the step's detached student samples."""
        n, total = sum(sizes), 0.0
        for _ in range(self.fake_updates):
            self.c_opt.zero_grad(set_to_none=True)
            total = 0.0
            for s, b in zip(samples, sizes, strict=True):
                x0 = s["x0"]
                t = shift_t(logit_normal_t(b, generator=gen), self._shift(x0)).to(x0)
                eps = torch.randn(x0.shape, generator=gen).to(x0)
                tb = _bview(t, x0)
                with self.autocast():
                    v = self.critic((1 - tb) * x0 + tb * eps, t, text=s["text"], text_mask=s["text_mask"])
                    loss = F.mse_loss(v.float(), eps - x0)
                (loss * b / n).backward()
                total += float(loss.detach()) * b
            self.aux_step(list(self.critic.parameters()), self.c_opt)
        return total / n

    def forward_backward_step(self, micro_batches: list[Batch], gen: torch.Generator) -> dict[str, float]:
        samples, sizes, m = self.generator_pass(micro_batches, self.dmd_weight, self.critic)
        critic_loss = self.critic_step(samples, sizes, gen)
        return {"loss": m["loss"], "dmd": m["term"], "reg": m["reg"], "critic_loss": critic_loss,
                **self.step_metrics()}
