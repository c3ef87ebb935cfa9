"""``vidloom train``: train the VAE (unless one is given), then the DiT, in one run directory.

Layout: ``<out>/config.yaml``, ``<out>/vae/`` (the VAE run), ``<out>/checkpoints`` and
``<out>/log.jsonl`` (the DiT run). Rerunning the same command resumes from the newest checkpoints:
a finished VAE run is not retrained. Latent shards (``vidloom encode``) name their VAE in the
manifest, so training on them needs no ``--vae``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from training.config import TrainConfig, to_dict
from training.loop.checkpoint import latest_checkpoint
from training.loop.distributed import DistInfo


def _manifest(data: Path) -> dict[str, Any]:
    """The manifest of the shards ``data`` names (an export directory: the version ``latest`` names)."""
    from pipelines.dataset_versions import read_manifest

    return read_manifest(data)


def _write_config(out: Path, cfg: TrainConfig) -> None:
    """Write ``config.yaml``; a run directory holding a different config is refused, except for a
    larger ``steps`` (``extend_steps``: the run continues to the new total)."""
    path = out / "config.yaml"
    text = yaml.safe_dump(to_dict(cfg), sort_keys=True, allow_unicode=True)
    if path.exists() and not extend_steps(out, cfg):
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
        if old != yaml.safe_load(text):
            raise ValueError(f"{out} holds a run with another config ({path}); use a new --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def extend_steps(out: str | Path, cfg: TrainConfig) -> bool:
    """Accept a longer DiT schedule for an existing run: rewrite ``config.yaml`` when the new config
    differs from it only by a larger ``steps``. Returns whether it did; other differences are left
    for ``training.loop.run`` to refuse."""
    path = Path(out) / "config.yaml"
    if not path.is_file():
        return False
    old = yaml.safe_load(path.read_text(encoding="utf-8"))
    new = to_dict(cfg)
    if not isinstance(old, dict) or old.get("steps") is None or new["steps"] <= old["steps"]:
        return False
    if {k: v for k, v in old.items() if k != "steps"} != {k: v for k, v in new.items() if k != "steps"}:
        return False
    path.write_text(yaml.safe_dump(new, sort_keys=True, allow_unicode=True), encoding="utf-8")
    return True


def adapt_stages_to_latents(cfg: TrainConfig, manifest: dict[str, Any]) -> list[str]:
    """Latent shards hold one size/fps/length: stages reading the run's data take those (an image
    stage keeps n_frames = 1, the first latent frame). Returns the names of the stages changed."""
    changed = []
    for i, st in enumerate(cfg.stages):
        if st.data:
            continue
        n = 1 if st.n_frames == 1 else min(st.n_frames, manifest["n_frames"])
        new = dataclasses.replace(st, size=tuple(manifest["size"]), fps=float(manifest["fps"]), n_frames=n,
                                  sample_mode="first")
        if new != st:
            cfg.stages[i] = new
            changed.append(st.name)
    return changed


def train(cfg: TrainConfig, data: str | Path, out: str | Path, vae: str | Path | None = None,
          progress: bool = True, device: str | None = None) -> dict[str, Any]:
    """Train (or resume) the VAE when needed, then the DiT; returns both runs' summaries."""
    from pipelines.dataset_versions import resolve
    from training.loop.dit_trainer import DiTTrainer
    from training.loop.vae_trainer import VAETrainer

    data, out = resolve(data), Path(out)  # one dataset version for the VAE and the DiT (see data.py)
    manifest = _manifest(data)
    dist = DistInfo.from_env()
    if manifest.get("kind") == "latents":
        adapt_stages_to_latents(cfg, manifest)
    if dist.is_main:
        _write_config(out, cfg)
    summary: dict[str, Any] = {"out": str(out)}
    if vae is None and manifest.get("kind") == "latents":
        vae = manifest["vae"]["checkpoint"]
    if vae is None:
        vae_dir = out / "vae"
        summary["vae"] = VAETrainer(cfg, data, vae_dir, device=device, dist=dist).train(progress)
        vae = latest_checkpoint(vae_dir)
        if vae is None:
            raise RuntimeError(f"the VAE run in {vae_dir} left no checkpoint")
    summary["dit"] = DiTTrainer(cfg, data, out, vae, device=device, dist=dist).train(progress)
    summary["checkpoint"] = str(latest_checkpoint(out))
    return summary
