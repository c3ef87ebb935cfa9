"""Batch generation from a prompt file: one mp4 per prompt line, models loaded once.

The file is UTF-8; blank lines and lines starting with ``#`` (after leading spaces) are skipped.
Output files are ``<out_dir>/<NNN>-<slug>.mp4`` where NNN counts the prompts (1-based, zero-padded to
at least 3 digits) and the slug keeps the prompt's letters and digits (any script, NFKC-normalised,
lower-cased) joined by "-", at most ``SLUG_CHARS`` characters ("prompt" when nothing is left). Every
prompt uses the same ``seed``, so a prompt's video does not depend on its position in the file.
``<out_dir>/index.jsonl`` gets one ``generate_to_file``-style summary per video (with the prompt).
"""

from __future__ import annotations

import json
import os
import re
import time
import unicodedata
from pathlib import Path
from typing import Any

from training.generate import _source, generate, load_for_generation, resolve_settings, write_mp4

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
                   use_ema: bool = True, **kw: Any) -> list[dict[str, Any]]:
    """Generate one mp4 per prompt of ``prompts_file`` into ``out_dir``.

    Args:
        ckpt: "dit" checkpoint or run directory.
        prompts_file: UTF-8 text, one prompt per line.
        out_dir: output directory (created).
        image, device, use_ema, **kw: as ``generate_to_file`` (refine, thin_decoder, n_frames, size,
            fps, steps, cfg_scale, seed, heun, negative_prompt, refine_steps).

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
    for i, prompt in enumerate(prompts, 1):
        start = time.perf_counter()
        timings: dict[str, Any] = {}
        video = generate(pipeline, prompt, image, n_frames=n_frames, size=size, fps=fps, refine=refine,
                         thin_decoder=thin, timings=timings, **kw)
        path = write_mp4(video, out_dir / f"{i:0{digits}d}-{slugify(prompt)}.mp4", fps)
        t = int(video.shape[1])
        summary = {"path": str(path), "prompt": prompt, "frames": t,
                   "size": [int(video.shape[2]), int(video.shape[3])], "fps": fps, "seconds": t / fps,
                   "step": pipeline.step, "seed": kw.get("seed", 0), "steps": kw.get("steps", 30),
                   "cfg_scale": kw.get("cfg_scale", 4.0), "image": None if image is None else str(image),
                   "elapsed_s": round(time.perf_counter() - start, 3), "timings": timings,
                   "refine": _source(refine), "thin_decoder": _source(thin)}
        with open(index, "a", encoding="utf-8") as f:
            f.write(json.dumps(summary, ensure_ascii=False) + "\n")
        summaries.append(summary)
    return summaries
