"""Adversarial distillation: the optional last stage of few-step distillation (Seedance 1.0 §4.3,
SD3-Turbo / LADD, Sauer et al. 2024).

The student (a few-step generator, ``segments`` = 4 or 1, initialised from a TSCD or CFG-distilled
checkpoint) predicts clean latents at its own sampling times: ``x_t = (1 - t) z + t noise`` with ``t``
a segment upper boundary (``segment_boundaries(S, shift)[:-1]``; S = 1 means pure noise), and
``x0_hat = x_t - t v_student`` (the endpoint its Euler jump implies; exact on the last segment).

Discriminator "initialised from the DiT" (``DiTDiscriminator``): a frozen copy of the teacher DiT's
input layers (patch embedding, text projection, timestep embedding) and first ``blocks`` block pairs,
used as a feature extractor on *re-noised* latents: the student's ``x0_hat`` and the real ``z`` are both
noised to a shared logit-normal ``t'`` (resolution-shifted). Small trainable heads, one per block, map
every visual token to a logit (an MLP plus a projection term with the pooled text tokens, so the
discriminator is caption-conditional) and average over tokens and heads.

Losses: hinge for D, ``relu(1 - D(real)) + relu(1 + D(fake))``; the generator gets ``-D(fake)`` (the
gradient flows through the frozen backbone) plus ``reg_weight`` x the TSCD loss of ``TSCDTrainer``
(the regulariser that keeps it on the teacher's trajectories; ``reg_weight=0`` turns it off).
Each optimizer step alternates: the generator loss with the current heads (frozen), then one update
of the heads on the step's detached fakes with their own AdamW. The heads and their optimizer state
are checkpointed under ``disc`` (the backbone is rebuilt from the teacher); checkpoints stay "dit".
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.dit.model import DiT, velocity_fn
from models.dit.rope import text_positions, text_start, visual_positions
from training.config import TrainConfig
from training.loop.distributed import DistInfo
from training.loop.trainer import Batch
from training.post.config import section_dict
from training.post.distill import TSCDTrainer, _bview
from training.post.distill_stage import FewStepStage
from training.post.inputs import RunInputs

ADV_SEED_OFFSET = 7919  # adversarial draws use their own per-sample generators (TSCD draws unchanged)
Features = list[tuple[Tensor, Tensor]]  # per block pair: (visual [B, T, S, d], text [B, L, d])


class DiscHead(nn.Module):
    """Per-token logits from one block's features: ``mlp(h) + <proj(h), txt(pooled text)>``, token mean."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.proj, self.txt = nn.Linear(dim, hidden), nn.Linear(dim, hidden)
        self.scale = hidden ** -0.5

    def forward(self, x: Tensor, txt: Tensor, text_mask: Tensor | None) -> Tensor:
        h = self.norm(x.float()).flatten(1, 2)  # [B, N, d]
        m = torch.ones(txt.shape[:2], device=txt.device) if text_mask is None else text_mask.float()
        m = m[..., None]
        pooled = (self.norm(txt.float()) * m).sum(1) / m.sum(1).clamp_min(1.0)  # [B, d]
        cond = (self.proj(h) * self.txt(pooled)[:, None]).sum(-1) * self.scale  # [B, N]
        return (self.mlp(h).squeeze(-1) + cond).mean(1)


class DiTDiscriminator(nn.Module):
    """Frozen copy of a DiT's first ``blocks`` block pairs + trainable ``heads``; ``forward``: [B] logits."""

    def __init__(self, dit: DiT, blocks: int = 1, hidden: int = 128) -> None:
        super().__init__()
        n = max(1, min(int(blocks), dit.cfg.depth))
        backbone = DiT(dataclasses.replace(dit.cfg, depth=n, guidance_embed=False))
        for name in ("final_norm", "final_mod", "final_proj"):  # the output layer is not used
            delattr(backbone, name)
        src = dit.state_dict()
        backbone.load_state_dict({k: src[k].detach().clone() for k in backbone.state_dict()})
        self.backbone = backbone.to(next(dit.parameters()).device).eval().requires_grad_(False)
        self.heads = nn.ModuleList(DiscHead(dit.cfg.dim, hidden) for _ in range(n))
        self.heads.to(next(dit.parameters()).device)

    def features(self, x_t: Tensor, t: Tensor, text: Tensor, text_mask: Tensor | None = None) -> Features:
        """Visual and text tokens after each block pair (as in ``DiT.forward``, T2V conditioning)."""
        bb = self.backbone
        _, _, T, H, W = x_t.shape
        pt, ph, pw = bb.cfg.patch
        gt, gh, gw = T // pt, H // ph, W // pw
        x = bb.patch_embed(bb.patchify(bb._with_condition(x_t, None, None)))
        txt, temb = bb.text_proj(text), bb.t_embed(t)
        vis_pos = visual_positions(gt, gh, gw).to(x.device)
        txt_pos = text_positions(text.shape[1], text_start(gt, gh, gw)).to(x.device)
        out = []
        for i, spatial in enumerate(bb.spatial):
            x, txt = spatial(x, txt, temb, vis_pos, txt_pos, text_mask)
            if bb.cfg.temporal:
                x = bb.temporal[i](x, temb, vis_pos, (gh, gw))
            out.append((x, txt))
        return out

    def logits(self, feats: Features, text_mask: Tensor | None) -> Tensor:
        per_head = [h(x, txt, text_mask) for h, (x, txt) in zip(self.heads, feats, strict=True)]
        return torch.stack(per_head).mean(0)

    def forward(self, x_t: Tensor, t: Tensor, text: Tensor, text_mask: Tensor | None = None) -> Tensor:
        return self.logits(self.features(x_t, t, text, text_mask), text_mask)


def hinge_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """``mean relu(1 - D(real)) + mean relu(1 + D(fake))`` (2 at D = 0, 0 once separated by a margin)."""
    return F.relu(1.0 - real.float()).mean() + F.relu(1.0 + fake.float()).mean()


class AdversarialDistillTrainer(FewStepStage, TSCDTrainer):
    """TSCD student + DiT-initialised discriminator (see the module doc).

    Settings ``post.adv`` (beyond ``post.tscd``'s guidance and teacher grid): ``disc_blocks`` teacher
    block pairs in the discriminator backbone; ``disc_hidden`` head width; ``disc_lr`` /
    ``disc_betas`` the heads' AdamW; ``reg_weight`` lambda of the TSCD regulariser; ``segments``
    (default ``(4,)``: the student's steps).
    """

    mode = "adv"

    settings = "adv"

    def __init__(self, cfg: TrainConfig, inputs: RunInputs, out: str | Path, dist: DistInfo | None = None,
                 *, device: str | torch.device | None = None) -> None:
        a = cfg.post.adv
        self.disc_blocks, self.disc_hidden, self.reg_weight = int(a.disc_blocks), int(a.disc_hidden), float(
            a.reg_weight)
        super().__init__(cfg, inputs, out, dist, device=device)
        self.disc = DiTDiscriminator(self.teacher.dit, self.disc_blocks, self.disc_hidden)
        self.d_opt = torch.optim.AdamW(self.disc.heads.parameters(), lr=a.disc_lr, betas=tuple(a.disc_betas),
                                       weight_decay=0.0)

    def distill_info(self) -> dict[str, Any]:
        adv = {k: v for k, v in section_dict(self.cfg.post.adv).items() if k != "segments"}
        return {**super().distill_info(), **adv}

    def checkpoint_extra(self) -> dict[str, Any]:
        extra = super().checkpoint_extra()
        if hasattr(self, "disc"):
            extra["disc"] = {"heads": self.disc.heads.state_dict(), "optimizer": self.d_opt.state_dict(),
                             "blocks": self.disc_blocks, "hidden": self.disc_hidden}
        return extra

    def on_resume(self, ckpt: dict[str, Any]) -> None:
        super().on_resume(ckpt)
        if "disc" in ckpt:
            self.disc.heads.load_state_dict(ckpt["disc"]["heads"])
            self.d_opt.load_state_dict(ckpt["disc"]["optimizer"])

    def generator_loss(self, mb: Batch) -> tuple[Tensor, dict[str, Any]]:
        """``-D(renoise(x0_hat))`` with the current heads, and what the D step needs (detached)."""
        z = self.latents(mb)
        b = z.shape[0]
        gens, t, noise, shift = self.segment_draws(z, mb, ADV_SEED_OFFSET)
        cond = self.text_inputs(mb, None, 0.0)
        t_d = self.renoise_t(gens, shift, z)
        n_real = torch.cat([torch.randn((1, *z.shape[1:]), generator=g) for g in gens]).to(z)
        n_fake = torch.cat([torch.randn((1, *z.shape[1:]), generator=g) for g in gens]).to(z)
        text, mask = self.teacher_text(cond)
        tb = _bview(t, z)
        x_t = (1 - tb) * z + tb * noise
        td = _bview(t_d, z)
        with self.autocast():
            v = velocity_fn(self.model)(x_t, t, self._student_kwargs(cond, b))
            fake_t = (1 - td) * (x_t - tb * v.float()) + td * n_fake  # re-noised x0_hat
            g_adv = -self.disc(fake_t, t_d.to(z), text, mask).float().mean()
        pair = {"real": (1 - td) * z + td * n_real, "fake": fake_t.detach(), "t": t_d.to(z),
                "text": text, "mask": mask}
        return g_adv, pair

    def discriminator_step(self, pairs: list[dict[str, Any]], sizes: list[int]) -> dict[str, float]:
        """One AdamW update of the heads on the step's (real, detached fake) pairs; hinge-loss metrics."""
        n = sum(sizes)
        self.d_opt.zero_grad(set_to_none=True)
        total = real_m = fake_m = 0.0
        for p, b in zip(pairs, sizes, strict=True):
            with self.autocast():
                with torch.no_grad():
                    f_real = self.disc.features(p["real"], p["t"], p["text"], p["mask"])
                    f_fake = self.disc.features(p["fake"], p["t"], p["text"], p["mask"])
                d_real, d_fake = self.disc.logits(f_real, p["mask"]), self.disc.logits(f_fake, p["mask"])
                loss = hinge_d_loss(d_real, d_fake)
            (loss * b / n).backward()
            total += float(loss.detach()) * b
            real_m += float(d_real.detach().float().sum())
            fake_m += float(d_fake.detach().float().sum())
        self.aux_step(list(self.disc.heads.parameters()), self.d_opt)
        return {"d_loss": total / n, "d_real": real_m / n, "d_fake": fake_m / n}

    def forward_backward_step(self, micro_batches: list[Batch], gen: torch.Generator) -> dict[str, float]:
        # G step: the heads are fixed, the frozen backbone passes gradients through to the student
        pairs, sizes, m = self.generator_pass(micro_batches, 1.0, self.disc.heads)
        d_metrics = self.discriminator_step(pairs, sizes)
        return {"loss": m["loss"], "g_adv": m["term"], "reg": m["reg"], **d_metrics, **self.step_metrics()}
