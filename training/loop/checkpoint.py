"""Checkpoints: one atomic ``torch.save`` file per saved step, loadable with ``weights_only=True``.

Layout of a run directory::

    runs/x/config.yaml                     the resolved TrainConfig of the run (also in each checkpoint)
    runs/x/log.jsonl                       one JSON line per step (loss as a hex float: exact)
    runs/x/checkpoints/step_0000050.pt     the newest ``keep_ckpts`` checkpoints
    runs/x/vae/                            the VAE run, when ``vidloom train`` trained one first

A checkpoint is a dict:

- ``version``, ``kind`` ("dit" | "vae" | "refiner" | "thin_decoder"), ``step`` (optimizer steps done),
  ``config``: the whole resolved ``TrainConfig`` (``to_dict``), the post-training method's settings
  (``post.<method>``) included: loaders read a method's settings from it (e.g. the refiner's
  ``post.refine.upsample``), and a method's entry (``sft``, ``rlhf``, ``distill``, ``refiner``, ...)
  is that section plus the run's facts (base checkpoint, its step);
- ``net``: state dict of the trainable ``ModuleDict`` (``dit`` and, when it is trainable, ``text``;
  or ``vae``), ``ema``: its EMA, ``optimizer``: AdamW state;
- ``loader``: the stage's ``StreamingLoader.state_dict()``, ``stage``: stage index;
- ``rng``: torch / numpy / python RNG states;
- ``frozen``: for "dit", the frozen VAE's state dict and the per-channel latent statistics, so one
  file is enough to generate.

Files are written to a temporary name, fsynced and renamed, so a run killed mid-save leaves the
previous checkpoint intact. Beside each file a small ``step_0000050.json`` (version, step, kind,
byte size) is written after it, so choosing a checkpoint to resume from never loads one:
``latest_checkpoint`` returns the newest file whose metadata matches its size, or, for a file
without metadata (older runs, or a kill between the two renames), whose zip directory is whole.
Reading a zip directory touches a few KB at the end of the file, not the tensors.
"""

from __future__ import annotations

import json
import os
import random
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.dit.model import DiT
from models.text_encoder import TextEncoder, build_text_encoder
from models.vae.causal_vae import VAE
from training.config import TrainConfig, from_dict, to_dict

VERSION = 1
_STEP_FILE = re.compile(r"step_(\d{7})\.pt$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: str | Path, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write ``checkpoints/step_{step:07d}.pt`` atomically and prune all but the newest ``keep``."""
    directory = checkpoint_dir(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:07d}.pt"
    tmp = path.with_suffix(".pt.part")
    with open(tmp, "wb") as f:
        torch.save({"version": VERSION, "step": step, **payload}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    meta = {"version": VERSION, "step": step, "kind": payload.get("kind"), "bytes": path.stat().st_size}
    tmp_meta = path.with_suffix(".json.part")
    tmp_meta.write_text(json.dumps(meta), encoding="utf-8")
    os.replace(tmp_meta, path.with_suffix(".json"))
    for old in sorted(directory.glob("step_*.pt"))[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint (tensors and plain containers only: ``weights_only=True``)."""
    ckpt = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("version") != VERSION:
        raise ValueError(f"{path} is not a vidloom checkpoint (version {VERSION})")
    return ckpt


def checkpoint_meta(path: str | Path) -> dict[str, Any] | None:
    """What a checkpoint file is, without loading it: ``{version, step, kind, bytes}`` from its
    ``.json`` beside it (kind None when only the zip directory could be checked), or None when the
    file is torn (size differs from the metadata, or a broken zip) or not a vidloom checkpoint."""
    path = Path(path)
    match = _STEP_FILE.search(path.name)
    if match is None or not path.is_file():
        return None
    size = path.stat().st_size
    try:
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if isinstance(meta, dict):
        whole = (meta.get("version"), meta.get("bytes"), meta.get("step")) == (VERSION, size, int(match[1]))
        return meta if whole else None
    try:  # no metadata: a torch.save file is a zip whose directory sits at its end
        with zipfile.ZipFile(path) as z:
            if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist()):
                return None
    except (OSError, zipfile.BadZipFile):
        return None
    return {"version": VERSION, "step": int(match[1]), "kind": None, "bytes": size}


def checkpoint_candidates(run_dir: str | Path) -> list[Path]:
    """The ``step_*.pt`` files of a run that look whole, newest first (none is loaded)."""
    files = sorted(p for p in checkpoint_dir(run_dir).glob("step_*.pt") if _STEP_FILE.search(p.name))
    return [p for p in reversed(files) if checkpoint_meta(p) is not None]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """Newest ``step_*.pt`` of a run that looks whole (``checkpoint_meta``); torn files are skipped."""
    found = checkpoint_candidates(run_dir)
    return found[0] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the newest checkpoint of a run directory."""
    p = Path(path)
    if p.is_dir():
        found = latest_checkpoint(p)
        if found is None:
            raise FileNotFoundError(f"no loadable checkpoint under {checkpoint_dir(p)}")
        return found
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    return p


# --------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """torch (CPU, and CUDA when present), numpy and python RNG states, as tensors and tuples."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, list | tuple) else x


# --------------------------------------------------------------------------- loading models


def sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Entries of ``state`` under ``prefix.``, with the prefix removed."""
    return {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}


@dataclass
class LatentStats:
    """Per-channel mean and std of the VAE posterior mean over training data: z_n = (z - mean) / std."""

    mean: torch.Tensor  # [C]
    std: torch.Tensor  # [C]

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean.view(1, -1, 1, 1, 1).to(z)) / self.std.view(1, -1, 1, 1, 1).to(z)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std.view(1, -1, 1, 1, 1).to(z) + self.mean.view(1, -1, 1, 1, 1).to(z)

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std}


def load_vae(path: str | Path, use_ema: bool = True) -> tuple[VAE, LatentStats]:
    """The VAE (eval mode, frozen) and latent statistics of a "vae" or "dit" checkpoint."""
    return vae_from_checkpoint(load_checkpoint(resolve_checkpoint(path)), use_ema)


def vae_from_checkpoint(ckpt: dict[str, Any], use_ema: bool = True) -> tuple[VAE, LatentStats]:
    """``load_vae`` on an already loaded checkpoint dict."""
    cfg = from_dict(ckpt["config"])
    vae = VAE(cfg.vae)
    if ckpt["kind"] == "vae":
        state = sub_state(ckpt["ema" if use_ema else "net"], "vae")
        stats = ckpt.get("latent_stats")
    else:
        state, stats = ckpt["frozen"]["vae"], ckpt["frozen"]["latent_stats"]
    vae.load_state_dict(state)
    vae.eval().requires_grad_(False)
    if stats is None:
        c = cfg.vae.latent_channels
        return vae, LatentStats(torch.zeros(c), torch.ones(c))
    return vae, LatentStats(stats["mean"], stats["std"])


@dataclass
class Pipeline:
    """What generation needs from a "dit" checkpoint."""

    config: TrainConfig
    dit: DiT
    vae: VAE
    text_encoder: TextEncoder
    latent_stats: LatentStats
    step: int


def save_dit_run(run_dir: str | Path, step: int, cfg: TrainConfig, dit: DiT, text: nn.Module | None, vae: VAE,
                 stats: dict[str, torch.Tensor] | None = None) -> Path:
    """A "dit" checkpoint (``net`` = ``ema``) of modules: the DiT, the trainable text encoder (None for a
    frozen one), the frozen VAE and its latent ``stats`` (identity when None) - what ``load_pipeline``
    reads. For tools and tests that build models in memory."""
    net = {"dit." + k: v for k, v in dit.state_dict().items()}
    if text is not None:
        net |= {"text." + k: v for k, v in text.state_dict().items()}
    c = cfg.vae.latent_channels
    stats = stats or {"mean": torch.zeros(c), "std": torch.ones(c)}
    return save_checkpoint(run_dir, step, {"kind": "dit", "config": to_dict(cfg), "net": net, "ema": net,
                                           "frozen": {"vae": vae.state_dict(), "latent_stats": stats}})


def load_pipeline(path: str | Path, use_ema: bool = True, device: str = "cpu") -> Pipeline:
    """Rebuild DiT, text encoder (trained weights when trainable) and VAE from a "dit" checkpoint."""
    ckpt = load_checkpoint(resolve_checkpoint(path))
    if ckpt.get("kind") != "dit":
        raise ValueError(f"{path} is a {ckpt.get('kind')!r} checkpoint; generation needs a 'dit' one")
    cfg = from_dict(ckpt["config"])
    weights = ckpt["ema" if use_ema else "net"]
    dit = DiT(cfg.dit)
    dit.load_state_dict(sub_state(weights, "dit"))
    text = build_text_encoder(cfg.text)
    if isinstance(text, nn.Module):
        text.load_state_dict(sub_state(weights, "text"))
        text.to(device).eval().requires_grad_(False)
    vae, stats = vae_from_checkpoint(ckpt, use_ema=use_ema)  # the file is read once
    dit.to(device).eval().requires_grad_(False)
    return Pipeline(cfg, dit, vae.to(device), text, stats, ckpt["step"])
