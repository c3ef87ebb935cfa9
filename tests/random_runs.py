"""A tiny "dit" run directory with random weights, for tests that need a checkpoint to sample from."""

from __future__ import annotations

from pathlib import Path

import torch


def random_dit_run(root: Path, n_frames: int = 5, size: tuple[int, int] = (32, 64), fps: float = 8.0,
                   global_batch: int = 2, seed: int = 0) -> Path:
    """The tiny preset with one ``video`` stage of ``n_frames`` x ``size``; a random DiT whose
    adaLN-zero parameters are woken up (so it does not predict zeros), a byte text encoder, a random
    VAE and identity latent statistics. Returns ``root``."""
    from models.dit.model import DiT
    from models.text_encoder import ByteEncoder
    from models.vae.causal_vae import VAE
    from training.config import StageConfig, tiny
    from training.loop.checkpoint import save_dit_run

    cfg = tiny()
    cfg.stages[-1] = StageConfig("video", 1.0, n_frames=n_frames, size=size, fps=fps,
                                 global_batch=global_batch)
    torch.manual_seed(seed)
    dit = DiT(cfg.dit)
    with torch.no_grad():
        for param in dit.parameters():
            if not param.any():
                param.normal_(0.0, 0.05)
    c = cfg.vae.latent_channels
    save_dit_run(root, 1, cfg, dit, ByteEncoder(cfg.text.byte), VAE(cfg.vae),
                 {"mean": torch.zeros(c), "std": torch.ones(c)})
    return root
