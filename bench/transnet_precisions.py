"""TransNetV2 at each ``split.precision`` on this CPU: per-window cost, distance from fp32, and
(with ``--devset``) the cascade over real footage with its transitions compared.

    python -m bench.transnet_precisions [--json bench/results/transnet_precisions.json]
        [--rounds 6] [--devset ~/.cache/vidloom/devset/videos]

At 1 torch thread (as the split step's windows run), for the cascade's three window shapes
(hard-cut windows of 16 and 32 predicted frames with 6 frames of context each side, gradual
windows of 50 with 16), on real frames from tests/data/real/sintel_cuts.mp4: the median ms per
window of fp32, bf16 (where this CPU has it natively) and int8 (where it has int8 dot products),
and each one's largest probability difference from fp32 over every frame of the excerpt
(full-model windows). ``--devset DIR``: every file under DIR plus the 5-min 720p loop of
``vidloom bench curate --real``, decoded once, then ``detect_transitions`` (the default cascade)
at each precision but fp32 where bf16 is native (three times slower, and bf16's own agreement
with fp32 is the window figures' business): seconds, and the files whose transitions differ
from bf16's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import record as bench_record

CLIP = Path(__file__).resolve().parent.parent / "tests" / "data" / "real" / "sintel_cuts.mp4"
SHAPES = ((16, 6), (32, 6), (50, 16))  # (predicted frames, context): CUT_USEFUL and GRADUAL_USEFUL windows


def precisions() -> list[str]:
    from pipelines.transnet import cpu_has_bf16, cpu_has_int8

    return ["fp32"] + (["bf16"] if cpu_has_bf16() else []) + (["int8"] if cpu_has_int8() else [])


def windows(models: dict[str, Any], frames: np.ndarray, rounds: int) -> dict[str, Any]:
    """Median ms per window, the precisions alternating window by window (two warm-up rounds)."""
    out: dict[str, Any] = {}
    for k, c in SHAPES:
        start = min(c, max(0, len(frames) - k - c))
        ms: dict[str, list[float]] = {p: [] for p in models}
        for r in range(rounds + 2):
            for p, m in models.items():
                t0 = time.perf_counter()
                m.window(frames, start, k, c)
                if r >= 2:
                    ms[p].append((time.perf_counter() - t0) * 1000)
        out[f"{k + 2 * c}_frames"] = {p: round(statistics.median(v), 1) for p, v in ms.items()}
    return out


def distances(models: dict[str, Any], frames: np.ndarray) -> dict[str, Any]:
    """Each precision's largest |p - p_fp32| (single and many heads) over every excerpt frame, and
    how many frames change sides of 0.5."""
    ref = models["fp32"].predict(frames, None, 25)
    out = {}
    for p, m in models.items():
        got = m.predict(frames, None, 25)
        out[p] = {"max_abs_single": round(float(np.abs(got.single - ref.single).max()), 4),
                  "max_abs_many": round(float(np.abs(got.many - ref.many).max()), 4),
                  "frames_across_0_5": int(((got.single > 0.5) != (ref.single > 0.5)).sum())}
    return out


def devset(models: dict[str, Any], directory: str) -> dict[str, Any]:
    """The default cascade over every dev-set file at each precision (decoded once, beforehand)."""
    from bench.curate_real import inputs
    from pipelines.decode import decode_video, load_tiny
    from pipelines.shot_transitions import detect_transitions

    paths = inputs(Path(directory))
    if "bf16" in models:
        models = {p: m for p, m in models.items() if p != "fp32"}
    seconds = {p: 0.0 for p in models}
    differ = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(paths):
            frames = np.asarray(load_tiny(decode_video(path, f"{tmp}/{i}").frames))
            found = {}
            for p, m in models.items():
                t0 = time.perf_counter()
                trs, _ = detect_transitions(frames, "transnetv2", m)
                seconds[p] += time.perf_counter() - t0
                found[p] = [(t.start, t.end, t.kind) for t in trs]
            ref = found["bf16"] if "bf16" in found else found["fp32"]
            differ += [f"{os.path.basename(path)} ({p})" for p, f in found.items() if f != ref]
    return {"files": len(paths), "seconds": {p: round(s, 2) for p, s in seconds.items()},
            "transitions_compared_with": "bf16" if "bf16" in models else "fp32",
            "files_with_other_transitions": differ}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="bench/results/transnet_precisions.json")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--devset", help="also run the cascade over this dev set (make devset)")
    args = ap.parse_args(argv)
    import torch

    from pipelines.decode import decode_video, load_tiny
    from pipelines.transnet import TransNet

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        frames = np.asarray(load_tiny(decode_video(str(CLIP), tmp).frames))
    models = {p: TransNet(threads=1, precision=p) for p in precisions()}
    rec = bench_record.provenance("python -m bench.transnet_precisions", argv, {p: p for p in models}, 1)
    result: dict[str, Any] = {"clip": CLIP.name, "rounds": args.rounds,
                              "ms_per_window": windows(models, frames, args.rounds),
                              "vs_fp32": distances(models, frames)}
    if args.devset:
        result["devset"] = devset(models, args.devset)
    bench_record.write_result(args.json, rec, result)
    for shape, row in result["ms_per_window"].items():
        print(shape, "  ".join(f"{p} {v} ms" for p, v in row.items()))
    for p, d in result["vs_fp32"].items():
        print(p, d)
    if "devset" in result:
        print(result["devset"])
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
