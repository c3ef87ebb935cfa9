"""Checkpoint merging ("model soup"): a weighted average of several DiT checkpoints' weights.

``merge_checkpoints`` averages the ``net`` and ``ema`` state dicts of "dit" checkpoints that share a
model (the ``preset``, ``dit``, ``text`` and ``vae`` config sections) and a frozen VAE with its latent
statistics: typically SFT runs from one base, or a base and its SFTs. Training settings (lr, steps,
stages) may differ; the merged file carries the first parent's config with ``post.merge.weights``
the normalised weights, also written beside it (``<out>.yaml``, or ``config.yaml`` in a run directory).

The merged file is a valid "dit" checkpoint (``training.loop.checkpoint`` layout; ``step`` = the largest
parent step; ``frozen`` = the parents' common VAE) that ``load_pipeline`` / ``vidloom generate`` and
``vidloom sft --base`` take. It holds no optimizer, loader or RNG state: merged checkpoints are for
generation and as an SFT starting point, not for resuming a run (``Trainer.resume`` cannot use one).
Its ``merge`` entry records the parents, their steps and the normalised weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import yaml

from training.config import from_dict, to_dict
from training.loop.checkpoint import VERSION, load_checkpoint, resolve_checkpoint, save_checkpoint
from training.post.config import PostConfig

MODEL_SECTIONS = ("preset", "dit", "text", "vae")


def normalize_weights(weights: list[float] | None, n: int) -> list[float]:
    """Uniform ``1/n`` when ``weights`` is None; else the weights divided by their sum (all >= 0)."""
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights for {n} checkpoints")
    ws = [float(w) for w in weights]
    if any(not w >= 0 for w in ws) or sum(ws) <= 0:  # `not >=` also refuses NaN
        raise ValueError(f"merge weights must be >= 0 with a positive sum, got {weights}")
    total = sum(ws)
    return [w / total for w in ws]


def average_states(states: list[dict[str, torch.Tensor]], weights: list[float],
                   names: list[str], what: str) -> dict[str, torch.Tensor]:
    """Weighted average of state dicts with the same keys and shapes: floating-point tensors are
    averaged (accumulated in float64, stored in their own dtype); any other tensor must be equal
    in every parent and is copied."""
    keys = list(states[0])
    for name, s in zip(names[1:], states[1:], strict=True):
        if set(s) != set(keys):
            extra, missing = sorted(set(s) - set(keys)), sorted(set(keys) - set(s))
            raise ValueError(f"{what} of {name} has other entries than {names[0]}'s "
                             f"(extra {extra[:3]}, missing {missing[:3]})")
    merged: dict[str, torch.Tensor] = {}
    for key in keys:
        tensors = [s[key] for s in states]
        first = tensors[0]
        for name, t in zip(names[1:], tensors[1:], strict=True):
            if t.shape != first.shape or t.dtype != first.dtype:
                raise ValueError(f"{what}.{key}: {name} has {tuple(t.shape)} {t.dtype}, {names[0]} has "
                                 f"{tuple(first.shape)} {first.dtype}")
        if first.is_floating_point() or first.is_complex():
            acc = torch.zeros_like(first, dtype=torch.complex128 if first.is_complex() else torch.float64)
            for w, t in zip(weights, tensors, strict=True):
                if w:
                    acc += w * t.to(acc.dtype)
            merged[key] = acc.to(first.dtype)
        else:
            for name, t in zip(names[1:], tensors[1:], strict=True):
                if not torch.equal(t, first):
                    raise ValueError(f"{what}.{key} ({first.dtype}) differs between {names[0]} and {name}: "
                                     "non-float tensors cannot be averaged")
            merged[key] = first.clone()
    return merged


def _same_tensors(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if set(a) != set(b):
        return False
    for k, v in a.items():
        w = b[k]
        if isinstance(v, torch.Tensor):
            if not (isinstance(w, torch.Tensor) and v.shape == w.shape and torch.equal(v, w)):
                return False
        elif isinstance(v, dict):
            if not (isinstance(w, dict) and _same_tensors(v, w)):
                return False
        elif v != w:
            return False
    return True


def merge_checkpoints(paths: list[str | Path], weights: list[float] | None = None, *,
                      out: str | Path) -> Path:
    """Average the ``net`` and ``ema`` weights of "dit" checkpoints (files or run directories: their
    newest checkpoint) with ``weights`` (normalised to sum 1; uniform when None) into ``out``.

    ``out``: a file (``*.pt``, written atomically), or else a run directory, where it is written as
    ``checkpoints/step_<step>.pt``. Refuses (ValueError) fewer than two parents, a parent that is not
    a "dit" checkpoint, different model configs, frozen VAEs or latent statistics, and state dicts
    whose entries differ. Returns the written path.
    """
    if len(paths) < 2:
        raise ValueError("merging needs at least two checkpoints")
    files = [resolve_checkpoint(p) for p in paths]
    ws = normalize_weights(weights, len(files))
    ckpts = [load_checkpoint(f) for f in files]
    names = [str(f) for f in files]
    for name, c in zip(names, ckpts, strict=True):
        if c.get("kind") != "dit":
            raise ValueError(f"{name} is a {c.get('kind')!r} checkpoint; only 'dit' checkpoints merge")
    configs = [to_dict(from_dict(c["config"])) for c in ckpts]
    for name, cfg in zip(names[1:], configs[1:], strict=True):
        diff = [k for k in MODEL_SECTIONS if cfg[k] != configs[0][k]]
        if diff:
            raise ValueError(f"{name} and {names[0]} have different model configs ({', '.join(diff)}); "
                             "only checkpoints of one model merge")
    for name, c in zip(names[1:], ckpts[1:], strict=True):
        if not _same_tensors(c["frozen"]["vae"], ckpts[0]["frozen"]["vae"]):
            raise ValueError(f"{name} and {names[0]} have different frozen VAE weights: their latents "
                             "differ, so their DiTs cannot be merged")
        if not _same_tensors(c["frozen"]["latent_stats"], ckpts[0]["frozen"]["latent_stats"]):
            raise ValueError(f"{name} and {names[0]} have different latent statistics")
    step = max(int(c["step"]) for c in ckpts)
    config = from_dict(ckpts[0]["config"])
    config.post = PostConfig()
    config.post.merge.weights = tuple(ws)
    payload: dict[str, Any] = {
        "kind": "dit",
        "config": to_dict(config),
        "net": average_states([c["net"] for c in ckpts], ws, names, "net"),
        "ema": average_states([c["ema"] for c in ckpts], ws, names, "ema"),
        "frozen": ckpts[0]["frozen"],
        "merge": {"parents": names, "steps": [int(c["step"]) for c in ckpts], "weights": ws},
    }
    target = Path(out)
    if target.suffix != ".pt":
        path = save_checkpoint(target, step, payload, keep=0)
        (target / "config.yaml").write_text(yaml.safe_dump(payload["config"], sort_keys=True),
                                            encoding="utf-8")
        return path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.with_suffix(".yaml").write_text(yaml.safe_dump(payload["config"], sort_keys=True),
                                           encoding="utf-8")
    tmp = target.with_name(target.name + ".part")
    with open(tmp, "wb") as f:
        torch.save({"version": VERSION, "step": step, **payload}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return target
