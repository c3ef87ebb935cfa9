"""Supervised fine-tuning (SFT) of a trained DiT on a small, curated selection of clips.

Seedance-style post-training: after pre-training, the DiT is fine-tuned on a hand-picked, high
quality subset (here: any SQL selection of the curation catalog, or any shards directory) with a
lower learning rate and a short schedule.

What ``SFTTrainer`` takes from the base "dit" checkpoint:

- the model config (``dit``, ``text``, ``vae`` sections: an SFT cannot change the architecture);
- the weights: the trainable net starts from the base's EMA weights (``init="ema"``, the default:
  the weights generation uses) or its raw weights (``init="net"``); the SFT's EMA starts from the
  base's EMA either way;
- the frozen VAE and the latent statistics (``frozen``), so latents are normalised exactly as in
  pre-training.

What it does not take: the optimizer (AdamW starts fresh, at step 0), the loader and RNG states.

The objective is the pre-training one, unchanged (``DiTTrainer.forward_backward_step``: flow
matching on normalised latents with caption dropout, I2V share and resolution-shifted logit-normal
timesteps); only the schedule differs (``sft_config``): learning rate ``base lr / 5``, a short
warm-up, no image stage (one "sft" stage: the base's last, highest-resolution video stage) and its
own ``steps`` (the knobs: ``post.sft``, training/post/config.py).

Run directory: like ``vidloom train``'s DiT run (``config.yaml``, ``checkpoints/``, ``log.jsonl``),
plus ``sft.json`` (the base checkpoint, its step, the data and the catalog selection) and, when
trained from a catalog selection, ``data/`` (the exported shards). Checkpoints are ordinary "dit"
checkpoints (with an ``sft`` entry naming the base): ``vidloom generate`` takes them, and
rerunning the same ``sft`` resumes from the newest one (a larger ``steps`` extends the run).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch

from training.config import (
    Layers,
    StageConfig,
    TrainConfig,
    apply_layers,
    apply_overrides,
    from_dict,
    sets_key,
    to_dict,
)
from training.loop.checkpoint import latest_checkpoint, load_checkpoint, resolve_checkpoint
from training.loop.distributed import DistInfo
from training.loop.dit_trainer import DiTTrainer
from training.post.config import PostConfig, section_dict
from training.post.inputs import RunInputs
from training.post.merge import MODEL_SECTIONS  # what an SFT (or a merge) cannot change


def sft_config(base: TrainConfig, steps: int | None = None, overrides: Layers = None) -> TrainConfig:
    """The SFT preset over a base run's config, from fresh ``post`` settings (``post.sft``) with
    ``overrides`` (``key=value`` strings or a nested mapping, as ``--set``) applied before and after.

    lr = base lr * ``lr_factor`` (0.2); warm-up = ``warmup_share`` (5 %) of the steps (>= 1, <= the
    base's); one stage "sft" = the base's last video stage (no image stage); steps = ``steps`` or
    ``steps_share`` (10 %) of the base's (>= ``min_steps``, 10). A base that is itself an SFT (its
    only stage is "sft") keeps its lr and steps: an SFT of an SFT does not divide the learning rate
    again. Overrides may change anything but the model sections (preset, dit, text, vae).
    """
    cfg = copy.deepcopy(base)
    cfg.post = PostConfig()
    apply_layers(cfg, overrides)
    s = cfg.post.sft
    already = [st.name for st in base.stages] == ["sft"]  # the base is an SFT (or a merge of SFTs)
    videos = [st for st in base.stages if st.n_frames > 1] or list(base.stages)
    cfg.stages = [dataclasses.replace(videos[-1], name="sft", fraction=1.0)]
    if steps is None:
        cfg.steps = base.steps if already else max(s.min_steps, round(base.steps * s.steps_share))
    else:
        cfg.steps = steps
    cfg.lr = base.lr if already else base.lr * s.lr_factor
    apply_layers(cfg, overrides)
    if steps is not None:
        cfg.steps = steps  # --steps wins over --set steps=
    if not sets_key(overrides, "warmup_steps"):
        cfg.warmup_steps = max(1, min(base.warmup_steps, round(cfg.steps * s.warmup_share)))
    changed = [k for k in MODEL_SECTIONS if to_dict(cfg)[k] != to_dict(base)[k]]
    if changed:
        raise ValueError(f"SFT cannot change the model of the base checkpoint ({', '.join(changed)})")
    return cfg


class SFTTrainer(DiTTrainer):
    """DiT fine-tuning from a base "dit" checkpoint; same objective, kind "dit" (see module doc)."""

    kind = "dit"

    def __init__(self, cfg: TrainConfig, inputs: RunInputs, out: str | Path, dist: DistInfo | None = None,
                 *, device: str | torch.device | None = None, base_state: dict[str,
                                                                               Any] | None = None) -> None:
        self.base_path = resolve_checkpoint(inputs.base)
        base = load_checkpoint(self.base_path) if base_state is None else base_state  # already loaded
        if base.get("kind") != "dit":
            raise ValueError(f"{self.base_path} is a {base.get('kind')!r} checkpoint; SFT needs a 'dit' one")
        base_cfg = to_dict(from_dict(base["config"]))
        if any(to_dict(cfg)[k] != base_cfg[k] for k in MODEL_SECTIONS):
            raise ValueError(f"this SFT config's model differs from the base checkpoint {self.base_path}")
        init = cfg.post.sft.init
        if init not in ("ema", "net"):
            raise ValueError(f"post.sft.init must be 'ema' or 'net', not {init!r}")
        super().__init__(cfg, inputs.data or "", out, self.base_path, device=device, dist=dist)  # frozen VAE
        self.base_step = int(base["step"])
        self.init = init
        self.dist.load_model_state(self.net, base[init])
        self.ema.load_state_dict(base["ema"])

    def checkpoint_extra(self) -> dict[str, Any]:
        return {**super().checkpoint_extra(),
                "sft": {"base": str(self.base_path), "base_step": self.base_step,
                        **section_dict(self.cfg.post.sft)}}


# --------------------------------------------------------------------------- data


def export_selection(catalog: str | Path, where: str, out: str | Path) -> dict[str, Any]:
    """Write the clips of ``catalog`` matching the SQL predicate ``where`` (over ``clips``) as shards
    in ``out``: what ``vidloom export CATALOG --where WHERE --out OUT`` does (the same function,
    ``pipelines.export_selection``, and the catalog's ``config.yaml``; missing clip files are cut
    first, sequentially)."""
    from pipelines import export_selection as selection

    db = selection.catalog_file(catalog)
    cfg = selection.catalog_config(db)
    cfg.runtime.runner, cfg.runtime.quiet = "sequential", True
    ids = selection.selected_clip_ids(db, where)
    if not ids:
        raise ValueError(f"--where {where!r} selects no clip of {db}")
    counts = selection.export_selection(db, cfg, ids, out, where)
    if not counts["samples"]:
        raise ValueError(f"none of the {len(ids)} clips selected by {where!r} could be cut")
    return counts


def prepare_selection(catalog: str | Path, where: str, out: str | Path) -> dict[str, Any]:
    """The SFT data of a catalog selection: ``out/data``, exported by ``export_selection`` unless it
    already holds a complete export (its manifest, written last) of the same ``where``: a rerun
    resumes on the data it started with even if the catalog changed since. Returns the export
    counts, or ``{"reused": True, ...}``."""
    from pipelines.dataset_versions import LATEST, MANIFEST, read_manifest

    data = Path(out) / "data"
    if (data / LATEST / MANIFEST).is_file() or (data / MANIFEST).is_file():
        found = read_manifest(data)
        if found.get("selection") == where:
            return {"reused": True, "shards": len(found["shards"]), "samples": found["n_samples"],
                    "dataset": found["dataset_hash"]}
    return {"reused": False, **export_selection(catalog, where, data)}


def _check_latent_vae(data: Path, manifest: dict[str, Any], trainer_vae: torch.nn.Module) -> None:
    """Latent shards must come from the base's frozen VAE (when their VAE checkpoint is still there)."""
    from training.loop.checkpoint import load_vae

    src = manifest.get("vae", {}).get("checkpoint")
    if not src or not Path(src).exists():
        return
    vae, _ = load_vae(src)
    mine = trainer_vae.state_dict()
    if vae.state_dict().keys() != mine.keys() or any(
            not torch.equal(v.cpu(), mine[k].cpu()) for k, v in vae.state_dict().items()):
        raise ValueError(f"the latents in {data} were encoded by another VAE ({src}) than the base's")


# --------------------------------------------------------------------------- the run


def sft(base_ckpt: str | Path, data: str | Path | None = None, catalog: str | Path | None = None,
        where: str | None = None, *, out: str | Path, steps: int | None = None,
        overrides: Layers = None, init: Literal["ema", "net"] | None = None, progress: bool = True,
        device: str | None = None, cfg: TrainConfig | None = None) -> dict[str, Any]:
    """Fine-tune the DiT of ``base_ckpt`` (a "dit" checkpoint or run directory) into ``out``.

    Data: a shards directory ``data`` (pixels or latents), or ``catalog`` + ``where``: the clips of
    the catalog matching the SQL predicate are first exported to ``out/data`` (``prepare_selection``:
    a rerun keeps the shards already exported for the same selection, so it resumes on the same data).
    Rerunning resumes from the newest checkpoint of ``out``; a different base, data or selection
    for an existing ``out`` is refused. ``cfg`` (the resolved config, ``vidloom post sft``) replaces
    ``sft_config(base, steps, overrides)``; ``init`` sets ``post.sft.init``. Returns
    ``{"out", "checkpoint", "base", "data", "dit"}``
    (``dit``: the trainer's summary with the eval history).
    """
    from training.loop.run import _manifest, _write_config, adapt_stages_to_latents

    out = Path(out)
    base_path = resolve_checkpoint(base_ckpt).resolve()
    dist = DistInfo.from_env()
    info_path = out / "sft.json"
    data, record = prepare_finetune_data(out, info_path, {"base": str(base_path)}, data, catalog, where, dist)
    manifest = _manifest(data)
    base = load_checkpoint(base_path)
    if base.get("kind") != "dit":
        raise ValueError(f"{base_path} is a {base.get('kind')!r} checkpoint; SFT needs a 'dit' one")
    base_step = int(base["step"])
    if cfg is None:
        layers = [*([overrides] if isinstance(overrides, dict) else overrides or [])]
        if init is not None:
            layers.append({"post": {"sft": {"init": init}}})
        cfg = sft_config(from_dict(base["config"]), steps, layers)
    if manifest.get("kind") == "latents":
        adapt_stages_to_latents(cfg, manifest)
    if dist.is_main:
        _write_config(out, cfg)
    trainer = SFTTrainer(cfg, RunInputs(base_path, data=data), out, dist, device=device, base_state=base)
    del base  # the base's weights are in the trainer now: do not hold a second copy while training
    if manifest.get("kind") == "latents":
        _check_latent_vae(data, manifest, trainer.vae)
    if dist.is_main:
        info_path.write_text(json.dumps({**record, "base_step": base_step, "init": cfg.post.sft.init},
                                        indent=1) + "\n",
                             encoding="utf-8")
    summary = trainer.train(progress)
    return {"out": str(out), "checkpoint": str(latest_checkpoint(out)), "base": str(base_path),
            "base_step": base_step, "data": str(data), "dit": summary}

def prepare_finetune_data(out: Path, info_path: Path, source: dict[str, str], data: str | Path | None,
                          catalog: str | Path | None, where: str | None,
                          dist: DistInfo) -> tuple[Path, dict[str, Any]]:
    """The shards a fine-tuning run (SFT, refiner SFT) trains on, and its run record.

    ``data`` is used as given; ``catalog`` + ``where`` export that selection to ``out/data`` first
    (``prepare_selection``, rank 0, then a barrier). A run directory whose record (``info_path``)
    names another source, data or selection is refused. Returns ``(data, record)``."""
    if (data is None) == (catalog is None):
        raise ValueError("give either data (a shards directory) or catalog and where")
    if catalog is not None and not where:
        raise ValueError("a catalog needs a --where selection (e.g. \"status = 'kept'\")")
    record = {**source, "data": None if data is None else str(Path(data).resolve()),
              "catalog": None if catalog is None else str(Path(catalog).resolve()), "where": where}
    if info_path.is_file():
        old = json.loads(info_path.read_text(encoding="utf-8"))
        diff = [k for k in record if old.get(k) != record[k]]
        if diff:
            raise ValueError(f"{out} holds a run with another {', '.join(diff)} ({info_path}); "
                             "use a new --out")
    if catalog is not None:
        if dist.is_main:
            prepare_selection(catalog, where, out)  # type: ignore[arg-type]
        dist.barrier()
        data = out / "data"
    return Path(data), record  # type: ignore[arg-type]


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_checkpoint(ckpt: str | Path, data: str | Path, use_ema: bool = True, samples: int | None = None,
                        stage: StageConfig | None = None, device: str | None = None) -> float:
    """``DiTTrainer.evaluate``'s loss (fixed samples, timesteps and noise) of a "dit" checkpoint's
    weights on ``data``, at ``stage`` (default: the checkpoint's last stage) over the first
    ``samples`` samples (default: its ``eval_samples``). Comparable across checkpoints sharing a
    model config: the same call gives the same samples, timesteps and noise."""
    path = resolve_checkpoint(ckpt)
    state = load_checkpoint(path)
    if state.get("kind") != "dit":
        raise ValueError(f"{path} is a {state.get('kind')!r} checkpoint; evaluation needs a 'dit' one")
    cfg = from_dict(state["config"])
    if samples is not None:
        cfg.eval_samples = samples
    cfg.num_workers = 0
    with tempfile.TemporaryDirectory(prefix="vidloom-eval-") as tmp:
        trainer = DiTTrainer(cfg, data, tmp, path, device=device, dist=DistInfo())
        trainer.net.load_state_dict(state["ema" if use_ema else "net"])
        trainer.loader = trainer.make_loader(stage or cfg.stages[-1])
        trainer.stage_index = len(cfg.stages) - 1
        return float(trainer.evaluate()["eval_loss"])


__all__ = ["SFTTrainer", "apply_overrides", "evaluate_checkpoint", "export_selection", "prepare_selection",
           "sft", "sft_config"]
