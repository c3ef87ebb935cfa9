"""What the score (``distill_dmd.py``) and adversarial (``distill_adv.py``) stages share: both train a
few-step student against an auxiliary network (fake-score critic, discriminator heads) with its own
optimizer, on the student's clean-latent predictions at its segment boundaries.

``FewStepStage`` is a mixin for ``TSCDTrainer`` subclasses (``class X(FewStepStage, TSCDTrainer)``):

- ``latents``: one VAE encode per micro-batch while ``_z_memo`` is a dict (the stage's term and the
  TSCD regulariser share it);
- ``segment_draws``: per-sample generators keyed by (seed + offset, step, key), a segment upper
  boundary ``t`` and the noise ``x_t`` is made with; ``renoise_t`` a logit-normal, shifted ``t'``;
- ``teacher_text``: caption embeddings from the teacher's text encoder (for bare DiTs);
- ``generator_pass``: the student's backward over the micro-batches, ``weight x generator_loss +
  reg_weight x TSCD``, with the auxiliary network held fixed (the subclass defines ``generator_loss``);
- ``aux_step``: all-reduce (several ranks), clip and step the auxiliary optimizer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from training.loop.flow_matching import logit_normal_t, shift_t
from training.loop.trainer import Batch, sample_generator
from training.post.distill import segment_boundaries


class FewStepStage:
    _z_memo: dict[int, Tensor] | None = None  # a dict only inside forward_backward_step

    def latents(self, mb: Batch) -> Tensor:
        if self._z_memo is None:
            return super().latents(mb)  # type: ignore[misc]
        if id(mb) not in self._z_memo:
            self._z_memo[id(mb)] = super().latents(mb)  # type: ignore[misc]
        return self._z_memo[id(mb)]

    def segment_draws(self, z: Tensor, mb: Batch, seed_offset: int
                      ) -> tuple[list[torch.Generator], Tensor, Tensor, float]:
        """(generators, t [B] at a random segment upper boundary, noise like z, resolution shift)."""
        s: Any = self
        gens = [sample_generator(s.cfg.seed + seed_offset, s.step, k) for k in mb["key"]]
        shift = s._shift(z)
        bounds = segment_boundaries(s.segments, shift)
        k = torch.cat([torch.randint(s.segments, (1,), generator=g) for g in gens])
        t = bounds[k].to(s.device, torch.float32)
        noise = torch.cat([torch.randn((1, *z.shape[1:]), generator=g) for g in gens]).to(z)
        return gens, t, noise, shift

    def teacher_text(self, cond: dict[str, Any]) -> tuple[Tensor, Tensor | None]:
        """(text embeddings, mask) for a bare DiT: the teacher encodes captions when ``cond`` has them."""
        s: Any = self
        if "texts" not in cond:
            return cond["text"], cond.get("text_mask")
        with torch.no_grad():
            emb, mask = s.teacher.encode_text(cond["texts"])
        return emb.float().to(s.device), mask.to(s.device)

    def generator_pass(self, micro_batches: list[Batch], weight: float, frozen: nn.Module
                       ) -> tuple[list[dict[str, Any]], list[int], dict[str, float]]:
        """Backward of ``weight * generator_loss + reg_weight * TSCD loss`` per micro-batch (``frozen``
        gets no gradients); returns each micro-batch's auxiliary inputs, the sizes and the mean
        ``loss``, ``term`` (the generator loss) and ``reg``."""
        s: Any = self
        n = sum(len(mb["key"]) for mb in micro_batches)
        sums = {"loss": 0.0, "term": 0.0, "reg": 0.0}
        aux, sizes = [], []
        self._z_memo = {}
        frozen.requires_grad_(False)
        try:
            for i, mb in enumerate(micro_batches):
                b = len(mb["key"])
                with s.no_sync(last=i == len(micro_batches) - 1):
                    term, extra = s.generator_loss(mb)
                    reg = s.loss(mb, s.sample_generators(mb)) if s.reg_weight > 0 else term * 0
                    loss = weight * term + s.reg_weight * reg
                    (loss * b / n).backward()
                aux.append(extra)
                sizes.append(b)
                for key, value in (("loss", loss), ("term", term), ("reg", reg)):
                    sums[key] += float(value.detach()) * b
        finally:
            frozen.requires_grad_(True)
            self._z_memo = None
        return aux, sizes, {k: v / n for k, v in sums.items()}

    @staticmethod
    def renoise_t(gens: list[torch.Generator], shift: float, like: Tensor) -> Tensor:
        """A logit-normal ``t'`` per sample, resolution-shifted: where the student's output is judged."""
        return shift_t(torch.cat([logit_normal_t(1, generator=g) for g in gens]), shift).to(like)

    def aux_step(self, params: list[torch.nn.Parameter], opt: torch.optim.Optimizer) -> None:
        """Average the gradients over ranks, clip them to ``grad_clip`` and step ``opt``."""
        s: Any = self
        params = [q for q in params if q.grad is not None]
        if s.dist.world_size > 1 and torch.distributed.is_initialized():
            for q in params:
                torch.distributed.all_reduce(q.grad)
                q.grad /= s.dist.world_size
        torch.nn.utils.clip_grad_norm_(params, s.cfg.grad_clip)
        opt.step()
