"""Batch generation from a prompt file: one mp4 per prompt line, models loaded once.

The file is UTF-8; blank lines and lines starting with ``#`` (after leading spaces) are skipped.
Output files are ``<out_dir>/<NNN>-<slug>.mp4`` where NNN counts the prompts (1-based, zero-padded to
at least 3 digits) and the slug keeps the prompt's letters and digits (any script, NFKC-normalised,
lower-cased) joined by "-", at most ``SLUG_CHARS`` characters ("prompt" when nothing is left). Every
prompt uses the same ``seed``, so a prompt's video does not depend on its position in the file.
``<out_dir>/index.jsonl`` gets one ``generate_to_file``-style summary per video (with the prompt).

``rewrite=`` rewrites each prompt first (``training/inference/generate_record.py``; the record is in its
summary). ``steps="auto"`` probes every prompt first and then allocates the steps over the whole
file so that its mean, probe passes included, meets the budget (``AdaptiveSteps.allocate``),
unless the ``adaptive`` settings carry a reference estimate (then each prompt is picked alone).
"""

from __future__ import annotations

import json
import os
import re
import time
import unicodedata
from pathlib import Path
from typing import Any

from training.inference.generate import _source, generate, load_for_generation, resolve_settings, write_mp4
from training.inference.generate_record import rewrite_prompt

SLUG_CHARS = 48


def read_prompts(path: str | os.PathLike[str]) -> list[str]:
    """Prompt lines of a UTF-8 file (BOM allowed); blank lines and ``#`` comments skipped."""
    text = Path(path).read_text(encoding="utf-8-sig")
    prompts = []
    for line in text.splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            prompts.append(s)
    return prompts


def slugify(text: str, max_chars: int = SLUG_CHARS) -> str:
    """Letters/digits of any script, lower-cased, runs of anything else -> "-"; never empty."""
    text = unicodedata.normalize("NFKC", text).lower()
    slug = re.sub(r"[\W_]+", "-", text).strip("-")[:max_chars].strip("-")
    return slug or "prompt"


def generate_batch(ckpt: str | os.PathLike[str], prompts_file: str | os.PathLike[str],
                   out_dir: str | os.PathLike[str], image: Any = None, device: str = "cpu",
                   use_ema: bool = True, rewrite: Any = None, **kw: Any) -> list[dict[str, Any]]:
    """Generate one mp4 per prompt of ``prompts_file`` into ``out_dir``.

    Args:
        ckpt: "dit" checkpoint or run directory.
        prompts_file: UTF-8 text, one prompt per line.
        out_dir: output directory (created).
        image, device, use_ema, **kw: as ``generate_to_file`` (refine, thin_decoder, n_frames, size,
            fps, steps (or "auto"), adaptive, cfg_scale, seed, heun, negative_prompt, refine_steps).
        rewrite: rewrite every prompt first (``rewrite_prompt``).

    Returns:
        One summary per prompt (path, prompt, frames, size, fps, seconds, seed, timings, ...).

    Raises:
        ValueError: the file has no prompts.
    """
    prompts = read_prompts(prompts_file)
    if not prompts:
        raise ValueError(f"{prompts_file} has no prompts (blank lines and # comments are skipped)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipeline, refine, thin = load_for_generation(ckpt, kw.pop("refine", None), kw.pop("thin_decoder", None),
                                                 use_ema, device)
    n_frames, size, fps = resolve_settings((refine or pipeline).config, kw.pop("n_frames", None),
                                           kw.pop("size", None), kw.pop("fps", None))
    digits = max(3, len(str(len(prompts))))
    summaries = []
    index = out_dir / "index.jsonl"
    index.write_text("", encoding="utf-8")  # this batch's summaries only
    rewrites = [rewrite_prompt(p, rewrite) for p in prompts]
    plan = _plan_steps(pipeline, [used for used, _ in rewrites], image, n_frames, size, refine, kw)
    for i, prompt in enumerate(prompts, 1):
        start = time.perf_counter()
        timings, info = dict(plan[i - 1]["timings"]), {}
        video = generate(pipeline, rewrites[i - 1][0], image, n_frames=n_frames, size=size, fps=fps,
                         refine=refine, thin_decoder=thin, timings=timings, info=info, **plan[i - 1]["kw"])
        path = write_mp4(video, out_dir / f"{i:0{digits}d}-{slugify(prompt)}.mp4", fps)
        t = int(video.shape[1])
        summary = {"path": str(path), "prompt": prompt, "frames": t,
                   "size": [int(video.shape[2]), int(video.shape[3])], "fps": fps, "seconds": t / fps,
                   "step": pipeline.step, "seed": kw.get("seed", 0), "steps": info["steps"],
                   "cfg_scale": kw.get("cfg_scale", 4.0), "image": None if image is None else str(image),
                   "elapsed_s": round(time.perf_counter() - start, 3), "timings": timings,
                   "refine": _source(refine), "thin_decoder": _source(thin),
                   "adaptive": info.get("adaptive"), "rewrite": rewrites[i - 1][1]}
        with open(index, "a", encoding="utf-8") as f:
            f.write(json.dumps(summary, ensure_ascii=False) + "\n")
        summaries.append(summary)
    return summaries


def _plan_steps(pipeline: Any, prompts: list[str], image: Any, n_frames: int, size: tuple[int, int],
                refine: Any, kw: dict[str, Any]) -> list[dict[str, Any]]:
    """Per prompt: the keyword arguments of its ``generate`` call (fixed steps, or ``steps="auto"``
    with its ``Plan``) and the timings its probe already spent (``dit_passes``, ``dit_s``,
    ``text_s``), which its video's timings start from."""
    if kw.get("steps", 30) != "auto":
        return [{"kw": kw, "timings": {}} for _ in prompts]
    from training.inference.adaptive_steps import AdaptiveSteps, Plan, is_guided, probe_prepared
    from training.inference.sampling_setup import Timer, prepare

    picker = kw.get("adaptive") or AdaptiveSteps()
    heun = bool(kw.get("heun", False))
    low = refine.low_size(size) if refine is not None else size
    cfg_scale, negative, seed = kw.get("cfg_scale", 4.0), kw.get("negative_prompt", ""), kw.get("seed", 0)
    rows = []
    for prompt in prompts:
        timer = Timer()
        prepared = prepare(pipeline, prompt, image, n_frames, low, cfg_scale, negative, seed, timer)
        found, first = probe_prepared(pipeline, prepared, picker, timer)
        rows.append({"found": found, "first": first, "guided": is_guided(prepared), "timings": timer.out})
    guided = rows[0]["guided"]
    estimates = [r["found"]["estimate"] for r in rows]
    if picker.reference is not None:
        steps = [picker.pick(e, picker.reference, guided, heun) for e in estimates]
    else:
        steps = picker.allocate(estimates, guided, heun)
    out = []
    for n, r in zip(steps, rows, strict=True):
        calibration = "given" if picker.reference is not None else "batch"
        record = picker.record(r["found"], n, guided, heun, calibration=calibration, calibration_passes=0)
        plan = Plan(n, record, r["first"] if picker.reuses_first(heun) else None)
        out.append({"kw": {**kw, "adaptive": plan}, "timings": r["timings"]})
    return out
