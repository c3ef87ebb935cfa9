"""DiT training (docs/architecture.md "Objective"): flow matching on normalised VAE latents, T2V/I2V/T2I.

Per sample and step, from the step's generator (so resume replays it exactly):

- the caption language (``caption_lang``: both = en or zh at random, falling back to whichever
  exists) and caption dropout to "" (``text_dropout``, for classifier-free guidance);
- image-to-video with probability ``stage.i2v_share`` when the sample has more than one latent
  frame: latent frame 0 becomes the clean condition (``cond_mask``) and is excluded from the loss;
  one-frame samples (the image stage) are text-to-image;
- a logit-normal timestep, shifted by ``resolution_shift`` of the sample's token count.

Multi-shot samples (``vidloom export --multi-shot``): each shot's caption is encoded on its own and
routed to that shot's latent frames (``shot_of_frame`` / ``text_shot``, training/data/multishot.py).

Inputs are pixel shards (the frozen VAE encodes on the fly, posterior mean) or latent shards from
``vidloom encode`` (latents and, for frozen text encoders, text embeddings precomputed). The
trainable net is ``DiTNet``: the DiT plus the text encoder when that is trainable (the byte encoder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.dit.model import DiT, frame_mask, velocity_fn
from models.text_encoder import TextEncoder, build_text_encoder
from training.config import TrainConfig
from training.loop.checkpoint import load_vae
from training.loop.distributed import DistInfo
from training.loop.flow_matching import flow_matching_loss, logit_normal_t, resolution_shift, shift_t
from training.loop.trainer import Batch, Trainer
from training.loop.vae_trainer import trim_frames

EVAL_T = (0.25, 0.5, 0.75)


class DiTNet(nn.Module):
    """The trainable part: DiT and, when trainable, the text encoder; ``forward`` predicts velocity."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.dit = DiT(cfg.dit)
        encoder = build_text_encoder(cfg.text)
        if isinstance(encoder, nn.Module):
            self.text = encoder
            self.frozen_text: TextEncoder | None = None
        else:
            self.frozen_text = encoder
        if encoder.dim != cfg.dit.text_dim:
            raise ValueError(f"text encoder width {encoder.dim} != dit.text_dim {cfg.dit.text_dim}")

    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.frozen_text is None:
            return self.text.encode(texts)
        with torch.no_grad():
            return self.frozen_text.encode(texts)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, texts: list[str] | None = None,
                shot_texts: list[list[str]] | None = None, **kwargs: Any) -> torch.Tensor:
        """DiT.forward; with ``texts`` the captions are encoded here (inside DDP's forward). With
        ``shot_texts`` (per sample, per shot; with ``shot_of_frame``) each shot's caption is encoded
        on its own and its tokens reach only that shot's frames (training/data/multishot.py)."""
        if shot_texts is not None:
            from training.data.multishot import encode_shot_texts

            emb, mask, text_shot = encode_shot_texts(self.encode_text, shot_texts)
            kwargs.update(text=emb.to(x_t.device), text_mask=mask.to(x_t.device),
                          text_shot=text_shot.to(x_t.device))
        elif texts is not None:
            emb, mask = self.encode_text(texts)
            kwargs.update(text=emb.to(x_t.device), text_mask=mask.to(x_t.device))
        return self.dit(x_t, t, **kwargs)


def pad_embeddings(embs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[L_i, D] embeddings -> ([B, max L, D] zero-padded, [B, max L] bool mask)."""
    length = max(e.shape[0] for e in embs)
    out = embs[0].new_zeros(len(embs), length, embs[0].shape[1])
    mask = torch.zeros(len(embs), length, dtype=torch.bool)
    for i, e in enumerate(embs):
        out[i, : e.shape[0]] = e
        mask[i, : e.shape[0]] = True
    return out, mask


class DiTTrainer(Trainer):
    kind = "dit"

    def __init__(self, cfg: TrainConfig, data: str | Path, out: str | Path, vae_ckpt: str | Path,
                 device: str | torch.device | None = None, dist: DistInfo | None = None) -> None:
        super().__init__(cfg, data, out, device, dist)
        self.vae, self.stats = load_vae(vae_ckpt)
        if self.vae.cfg != cfg.vae:
            raise ValueError(f"the VAE in {vae_ckpt} has config {self.vae.cfg}, this run expects {cfg.vae}")
        self.vae.to(self.device)

    def build_net(self) -> nn.Module:
        return DiTNet(self.cfg)

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"frozen": {"vae": self.vae.state_dict(), "latent_stats": self.stats.to_dict()}}

    # ------------------------------------------------------------------ inputs

    @torch.no_grad()
    def latents(self, mb: Batch) -> torch.Tensor:
        """Normalised latents [B, C, T', H', W'] of a micro-batch (pixels through the frozen VAE)."""
        if "latent" in mb:
            z = mb["latent"].to(self.device)
        else:
            video = trim_frames(mb["video"], self.cfg.vae.downsample[0]).to(self.device)
            with self.autocast():
                z = self.vae.encode(video).mean.float()
        return self.stats.normalize(z)

    def text_inputs(self, mb: Batch, gens: list[torch.Generator] | None, dropout: float) -> dict[str, Any]:
        """DiTNet keyword arguments for the captions: ``texts`` or precomputed ``text``/``text_mask``;
        for a micro-batch with multi-shot samples ``shot_texts`` and ``shot_of_frame`` (one language
        for all shots of a sample, one dropout draw for all of them)."""
        from training.data.multishot import have_languages, shot_inputs

        n = len(mb["key"])
        langs = []
        for i in range(n):
            gen = None if gens is None else gens[i]
            have = have_languages(mb, i)
            pick = self.cfg.caption_lang
            if pick == "both":
                pick = "en" if gen is None else ("en", "zh")[int(torch.randint(2, (1,), generator=gen))]
            drop = gen is not None and dropout > 0 and float(torch.rand(1, generator=gen)) < dropout
            langs.append(None if drop or not have else pick if pick in have else have[0])
        if "video" in mb:
            routed = shot_inputs(mb, langs, self.cfg.vae.downsample[0], mb["video"].shape[2])
            if routed is not None:
                return {**routed, "shot_of_frame": routed["shot_of_frame"].to(self.device)}
        texts = ["" if lang is None else mb[f"caption_{lang}"][i] for i, lang in enumerate(langs)]
        net = self.net
        emb_keys = [None if lang is None else f"emb_{lang}" for lang in langs]
        precomputed = net.frozen_text is not None and all(
            k is None or (mb.get(k) and mb[k][i] is not None) for i, k in enumerate(emb_keys))
        if not precomputed:
            return {"texts": texts}
        empty = None
        embs = []
        for i, k in enumerate(emb_keys):
            if k is None:
                if empty is None:
                    e, m = net.encode_text([""])
                    empty = e[0][m[0]].float().cpu()
                embs.append(empty)
            else:
                embs.append(mb[k][i].float())
        text, mask = pad_embeddings(embs)
        return {"text": text.to(self.device), "text_mask": mask.to(self.device)}

    # ------------------------------------------------------------------ objective

    def _loss(self, z: torch.Tensor, kwargs: dict[str, Any], t: torch.Tensor, noise: torch.Tensor,
              cond_mask: torch.Tensor | None) -> torch.Tensor:
        mask = None
        if cond_mask is not None:
            kwargs = {**kwargs, "cond": z, "cond_mask": cond_mask}
            mask = 1.0 - frame_mask(cond_mask, z)
        with self.autocast():
            loss, _ = flow_matching_loss(velocity_fn(self.model), z, kwargs, t=t, noise=noise, mask=mask)
        return loss

    def _shift(self, z: torch.Tensor) -> float:
        if not self.cfg.timestep_shift:
            return 1.0
        pt, ph, pw = self.cfg.dit.patch
        _, _, T, H, W = z.shape
        return resolution_shift((T // pt) * (H // ph) * (W // pw))

    def forward_backward_step(self, micro_batches: list[Batch], gen: torch.Generator) -> dict[str, float]:
        n = sum(len(mb["key"]) for mb in micro_batches)
        total, n_i2v = 0.0, 0
        for i, mb in enumerate(micro_batches):
            z = self.latents(mb)
            b, _, T = z.shape[:3]
            gens = self.sample_generators(mb)
            kwargs = self.text_inputs(mb, gens, self.cfg.text_dropout)
            cond_mask = None
            if T > 1 and self.stage.i2v_share > 0:
                chosen = torch.cat([torch.rand(1, generator=g) for g in gens]) < self.stage.i2v_share
                if bool(chosen.any()):
                    cond_mask = torch.zeros(b, T, dtype=torch.bool)
                    cond_mask[:, 0] = chosen
                    cond_mask = cond_mask.to(self.device)
                    n_i2v += int(chosen.sum())
            t = shift_t(torch.cat([logit_normal_t(1, generator=g) for g in gens]), self._shift(z))
            noise = torch.cat([torch.randn((1, *z.shape[1:]), generator=g) for g in gens])
            with self.no_sync(last=i == len(micro_batches) - 1):
                loss = self._loss(z, kwargs, t.to(self.device), noise.to(self.device), cond_mask)
                (loss * b / n).backward()
            total += float(loss.detach()) * b
        return {"loss": total / n, "i2v_share": n_i2v / max(n, 1)}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """T2V flow-matching loss of the current weights on the first ``eval_samples`` samples of the
        stage, at fixed timesteps ``EVAL_T`` with fixed noise (English captions, no dropout)."""
        losses = []
        for index, mb in self.eval_batches():
            z = self.latents(mb)
            kwargs = self.text_inputs(mb, None, 0.0)
            g = torch.Generator().manual_seed(10_000 + index)
            for t in EVAL_T:
                noise = torch.randn(z.shape, generator=g).to(self.device)
                tt = torch.full((1,), t, device=self.device)
                losses.append(float(self._loss(z, kwargs, tt, noise, None)))
        return {"eval_loss": sum(losses) / max(len(losses), 1)}
