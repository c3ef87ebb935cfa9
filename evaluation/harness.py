"""The checkpoint evaluation harness: generate a suite with fixed seeds per checkpoint, score, compare.

``run_eval(ckpts, suite, out, settings)``: for each checkpoint (models loaded once), each prompt and
each seed, ``training.inference.generate.generate`` samples a video with that seed (the same noise for every
checkpoint), ``write_mp4`` writes it, ``evaluation.scoring.Scorer`` scores it; human labels from a
``preferences`` table are joined on the video id; win rates and per-dimension tables follow
(evaluation/winrate.py, evaluation/eval_report.py) and everything is appended to DuckDB
(evaluation/eval_db.py) under a new ``run_id``.

**Video ids.** A video's id is its mp4 path relative to the eval ``--out`` directory, with ``/``
separators: ``videos/<ckpt label>/<prompt id>-s<seed>-<key>.mp4``. ``key`` is 8 hex digits of the
sha256 of everything that determines the video (checkpoint file, its step, size and mtime; prompt
text and shots; seed; frames, size, fps, steps, CFG scale, negative prompt, EMA), so a rerun with the
same inputs writes the same id (and human labels given to it still apply), and any change gives a
new id. The HTML page lives in ``--out`` too, so the id is also its link to the video. Point
``vidloom annotate`` at ``--out`` (or use ``<out>/index.jsonl``, one ``generate --prompts``-style
summary per video plus ``video_id``) so its labels use these ids.

**Multi-shot prompts.** ``training/inference/generate.py`` samples one caption per video (the DiT's per-shot
text routing, training/data/multishot.py, is used in training only), so each shot is generated from its
own prompt with the same seed, the shots are joined into one mp4, each shot is scored on its own and
``cross_shot_consistency`` compares consecutive shots (evaluation/scoring.py).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from evaluation.suite import Suite

DEFAULT_DB = "eval.duckdb"


@dataclass(frozen=True)
class CheckpointSpec:
    """A checkpoint to evaluate: its label (unique in a run, used in paths) and file or run directory."""

    label: str
    path: str

    @staticmethod
    def parse(text: str) -> CheckpointSpec:
        """``LABEL=PATH`` or ``PATH`` (label: the run directory's name and the step, set on resolve)."""
        label, sep, path = text.partition("=")
        if sep and label and not os.path.exists(text):
            return CheckpointSpec(_safe(label), path)
        return CheckpointSpec("", text)


@dataclass
class EvalSettings:
    """Generation and comparison settings shared by every checkpoint of a run."""

    seeds: list[int] = field(default_factory=lambda: [0, 1])
    steps: int | str = 20  # or "auto": generate's adaptive step count per prompt
    cfg_scale: float = 4.0
    n_frames: int | None = None
    size: tuple[int, int] | None = None
    fps: float | None = None
    negative_prompt: str = ""
    device: str = "cpu"
    use_ema: bool = True
    heads: list[str] = field(default_factory=list)
    references: str | None = None
    max_references: int = 16
    weights: dict[str, float] | None = None
    ci: str = "wilson"


def _safe(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "._-" else "-" for c in text).strip("-.")
    return out or "ckpt"


def new_run_id() -> str:
    """``YYYYMMDDTHHMMSSZ-xxxxxx``: sortable by time, unique across concurrent runs."""
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def resolve_ckpts(specs: Sequence[CheckpointSpec]) -> list[dict[str, Any]]:
    """Each spec as {label, path (the file), arg, step, bytes, mtime_ns}; labels made unique.

    Raises:
        FileNotFoundError: no checkpoint at a path.
        ValueError: two specs with the same label.
    """
    from training.loop.checkpoint import checkpoint_meta, resolve_checkpoint

    out = []
    for spec in specs:
        path = resolve_checkpoint(spec.path).resolve()
        meta = checkpoint_meta(path) or {}
        step = int(meta.get("step", -1))
        run = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
        label = spec.label or _safe(f"{run}-step{step}")
        st = path.stat()
        out.append({"label": label, "path": str(path), "arg": spec.path, "step": step, "bytes": st.st_size,
                    "mtime_ns": st.st_mtime_ns})
    labels = [c["label"] for c in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"checkpoint labels must be unique, got {dup} twice: name them with LABEL=PATH")
    return out


def video_key(ckpt: dict[str, Any], texts: Sequence[str], seed: int, gen: dict[str, Any]) -> str:
    """8 hex digits identifying a video's inputs (see the module docstring)."""
    doc = {"ckpt": [ckpt["path"], ckpt["step"], ckpt["bytes"], ckpt["mtime_ns"]], "texts": list(texts),
           "seed": int(seed), "gen": gen}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:8]


def video_id(label: str, prompt_id: str, seed: int, key: str) -> str:
    return f"videos/{label}/{prompt_id}-s{seed}-{key}.mp4"


def load_references(shards: str, pipeline: Any, n_frames: int, size: tuple[int, int], fps: float,
                    limit: int) -> torch.Tensor:
    """Up to ``limit`` clips of a shards directory at the eval's frames/size, decoded from their
    first frame and passed through the checkpoint's VAE (posterior mean): [N, 3, T, H, W]."""
    from training.data import ShardDataset

    ds = ShardDataset(shards, n_frames=n_frames, fps=fps, size=size, sample_mode="first")
    dev = next(pipeline.dit.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(min(limit, len(ds))):
            x = ds.get(i)["video"]
            if x.shape[1] != n_frames:
                continue
            z = pipeline.vae.encode(x[None].to(dev)).mean
            out.append(pipeline.vae.decode(z)[0].float().clamp(-1, 1).cpu())
    if not out:
        raise ValueError(f"no reference clip of {shards} has {n_frames} frames at {fps} fps")
    return torch.stack(out)


def run_eval(specs: Sequence[CheckpointSpec], suite: Suite, out: str | Path, settings: EvalSettings,
             db: str | Path | None = None, labels_db: str | Path | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate, score, compare and record one evaluation run (see the module docstring).

    Args:
        specs: the checkpoints (at least one; two or more for win rates).
        suite: ``evaluation.suite.load_suite(...)``.
        out: output directory (videos/, report-<run_id>.html, report.html, runs/<run_id>/, index.jsonl).
        settings: generation and scoring settings.
        db: DuckDB file for the history (default ``<out>/eval.duckdb``).
        labels_db: DuckDB file with a ``preferences`` table (default: ``db`` when it has one).

    Returns:
        The run's results: run_id, ckpts, settings, videos (with metrics), dimensions, winrates.
    """
    from evaluation import eval_db, eval_report
    from evaluation.scoring import Scorer, human_scores
    from training.inference.generate import generate, load_for_generation, resolve_settings, write_mp4

    if not specs:
        raise ValueError("vidloom eval needs at least one --ckpt")
    if not settings.seeds:
        raise ValueError("vidloom eval needs at least one seed")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    db = Path(db) if db else out / DEFAULT_DB
    ckpts = resolve_ckpts(specs)
    run_id = new_run_id()
    created = datetime.datetime.now(datetime.UTC)
    scorer = Scorer(settings.heads, settings.weights)
    videos: list[dict[str, Any]] = []
    gen: dict[str, Any] | None = None
    start_all = time.perf_counter()
    for ck in ckpts:
        t0 = time.perf_counter()
        pipeline, _, _ = load_for_generation(ck["path"], use_ema=settings.use_ema, device=settings.device)
        if gen is None:  # the first checkpoint's defaults hold for all
            n_frames, size, fps = resolve_settings(pipeline.config, settings.n_frames, settings.size,
                                                   settings.fps)
            gen = {"n_frames": n_frames, "size": list(size), "fps": fps, "steps": settings.steps,
                   "cfg_scale": settings.cfg_scale, "negative_prompt": settings.negative_prompt,
                   "use_ema": settings.use_ema}
        else:  # the same frames and size must suit every checkpoint (ValueError otherwise)
            resolve_settings(pipeline.config, gen["n_frames"], tuple(gen["size"]), gen["fps"])
        refs = None
        if settings.references:
            refs = load_references(settings.references, pipeline, gen["n_frames"], tuple(gen["size"]),
                                   gen["fps"], settings.max_references)
        for prompt in suite.prompts:
            for seed in settings.seeds:
                v0 = time.perf_counter()
                timings: dict[str, Any] = {}
                sampled: list[int] = []
                shots = []
                for text in prompt.texts:
                    info: dict[str, Any] = {}
                    shots.append(generate(pipeline, text, n_frames=gen["n_frames"], size=tuple(gen["size"]),
                                          fps=gen["fps"], steps=settings.steps, cfg_scale=settings.cfg_scale,
                                          seed=seed, negative_prompt=settings.negative_prompt,
                                          timings=timings, info=info))
                    sampled.append(int(info.get("steps", settings.steps)))
                vid = video_id(ck["label"], prompt.id, seed, video_key(ck, prompt.texts, seed, gen))
                write_mp4(torch.cat(shots, dim=1), out / vid, gen["fps"])
                metrics = scorer.score(shots, prompt.texts, refs)
                videos.append({"ckpt": ck["label"], "prompt_id": prompt.id, "dimension": prompt.dimension,
                               "lang": prompt.lang, "prompt": prompt.text, "shots": list(prompt.shots),
                               "seed": seed, "video_id": vid, "path": str((out / vid).resolve()),
                               "frames": int(sum(s.shape[1] for s in shots)), "gen_s":
                               round(time.perf_counter() - v0, 3), "steps": sampled,
                               "dit_passes": int(timings.get("dit_passes", 0)), "metrics": metrics})
        del pipeline
        log(f"  {ck['label']}: {len(suite.prompts) * len(settings.seeds)} videos in "
            f"{time.perf_counter() - t0:.1f}s")
    assert gen is not None
    labels = labels_db or (db if eval_db.has_table(db, "preferences") else None)
    if labels:
        human = human_scores(labels, [v["video_id"] for v in videos])
        for v in videos:
            v["metrics"].update(human.get(v["video_id"], {}))
    winrates = compare(videos, suite, settings.ci)
    result = {
        "run_id": run_id, "created_at": created.isoformat(timespec="seconds"), "suite": suite.name,
        "suite_path": suite.path, "suite_sha": suite.sha, "out": str(out.resolve()), "db": str(db),
        "labels_db": str(labels) if labels else None, "ckpts": ckpts,
        "settings": {**asdict(settings), "generation": gen, "weights": scorer.weights},
        "elapsed_s": round(time.perf_counter() - start_all, 1), "videos": videos,
        "dimensions": eval_report.dimension_tables(videos, [c["label"] for c in ckpts]),
        "winrates": winrates,
    }
    eval_db.record(db, result, created)
    eval_report.write_outputs(out, result)
    return result


def compare(videos: Sequence[dict[str, Any]], suite: Suite, ci: str = "wilson") -> list[dict[str, Any]]:
    """Win-rate rows: composite overall and per dimension, then every other metric overall (the
    human ones included when two checkpoints share labelled units)."""
    from evaluation.winrate import pairwise

    labels = list(dict.fromkeys(v["ckpt"] for v in videos))
    if len(labels) < 2:
        return []
    metrics = list(dict.fromkeys(m for v in videos for m in v["metrics"] if m != "human_n"))
    plan = [("composite", "all", None)] + [("composite", d, d) for d in suite.by_dimension()]
    plan += [(m, "all", None) for m in metrics if m != "composite"]
    rows = []
    for metric, dim_name, dim in plan:
        scores: dict[str, dict[tuple[str, int], float]] = {c: {} for c in labels}
        for v in videos:
            val = v["metrics"].get(metric)
            if (dim is None or v["dimension"] == dim) and val is not None and val == val:  # not nan
                scores[v["ckpt"]][(v["prompt_id"], v["seed"])] = float(val)
        for wr in pairwise(scores, method=ci):
            if wr.n:
                rows.append({"metric": metric, "dimension": dim_name, **wr.as_dict()})
    return rows
