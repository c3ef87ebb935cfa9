"""TransNetV2 per-window cost on CPU: the package's FrameSimilarity layer against vidloom's
``spatial_means`` version (pipelines/transnet.py), on the cascade's two window lengths.

    python -m bench.transnet_windows [--json bench/results/transnet_windows.json] [--rounds 6]
        [--split-before A.json --split-after B.json]

At 1 torch thread (as ours runs in ``vidloom bench split --real``), fp32 and bf16, 32 frames
(hard-cut windows, context 8) and 100 frames (gradual windows, context 25) of real frames from
tests/data/real/sintel_cuts.mp4. The two versions alternate window by window (the first two
rounds are warm-up), and every output pair must be bit-identical. ``--split-before/--split-after``
copy the overall rows and per-video scores of two ``vidloom bench split --real`` files (the commit
before and after the change) into the record, with their commands and vidloom versions.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

from bench import record as bench_record

CLIP = Path(__file__).resolve().parent.parent / "tests" / "data" / "real" / "sintel_cuts.mp4"


def measure(precision: str, frames: np.ndarray, rounds: int) -> dict[str, Any]:
    import torch

    from pipelines.transnet import TransNet

    model = TransNet(threads=1, precision=precision)
    layer = model.model.frame_sim_layer
    versions = {"package": types.MethodType(type(layer).forward, layer), "spatial_means": layer.forward}
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    out: dict[str, Any] = {}
    for t in (32, 100):
        idx = np.arange(t) % len(frames)
        x = torch.from_numpy(np.ascontiguousarray(frames[idx])[None])
        ms = {k: 0.0 for k in versions}
        identical = True
        with torch.inference_mode(), cast:
            for r in range(rounds + 2):
                got = []
                for name, fwd in versions.items():
                    layer.forward = fwd
                    t0 = time.perf_counter()
                    one, extra = model.model(x)
                    if r >= 2:
                        ms[name] += (time.perf_counter() - t0) * 1000 / rounds
                    got.append((one, extra["many_hot"]))
                identical &= torch.equal(got[0][0], got[1][0]) and torch.equal(got[0][1], got[1][1])
        layer.forward = versions["spatial_means"]
        out[f"{t}_frames"] = {"package_ms": round(ms["package"], 1),
                              "spatial_means_ms": round(ms["spatial_means"], 1), "identical": identical}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="bench/results/transnet_windows.json")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--split-before")
    ap.add_argument("--split-after")
    args = ap.parse_args(argv)
    from pipelines.decode import decode_video, load_tiny

    with tempfile.TemporaryDirectory() as tmp:
        frames = np.asarray(load_tiny(decode_video(str(CLIP), tmp).frames))
    prec = {"fp32": "fp32", "bf16": "bf16"}
    rec = bench_record.provenance("python -m bench.transnet_windows", argv, prec, 1)
    result = {"clip": CLIP.name, "rounds": args.rounds,
              "windows": {p: measure(p, frames, args.rounds) for p in ("fp32", "bf16")}}
    if args.split_before and args.split_after:
        files = (args.split_before, args.split_after)
        runs = [json.loads(Path(f).read_text(encoding="utf-8")) for f in files]
        scores = [{v: {m: {k: s[k] for k in ("tp", "fp", "fn", "missed", "false_positives")}
                       for m, s in row.items() if m.startswith("ours")}
                   for v, row in r["per_video"].items()} for r in runs]
        result["devset_split"] = {
            "before": {k: runs[0][k] for k in ("command", "date", "versions", "overall")},
            "after": {k: runs[1][k] for k in ("command", "date", "versions", "overall")},
            "same_per_video_scores": scores[0] == scores[1]}
    bench_record.write_result(args.json, rec, result)
    for p, rows in result["windows"].items():
        for k, v in rows.items():
            print(p, k, v)


if __name__ == "__main__":
    main()
