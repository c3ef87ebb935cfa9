"""The cascade with and without its fade-through-black rule (pipelines/shot_transitions.py
``cascade_plan``: a histogram peak inside a fade through black proposes no model window), over
real footage: model windows and frames, seconds, and the files whose transitions differ.

    python -m bench.cascade_fades --devset ~/.cache/vidloom/devset/videos
        [--json bench/results/cascade_fades.json]

Every file under the dev set plus the 5-min 720p loop of ``vidloom bench curate --real``, decoded
once beforehand; then ``detect_transitions`` (the default cascade, ``split.precision=auto``, one
torch thread) twice per file, the rule on and off (``fade_frames`` replaced by an empty mask), in
alternating order from file to file. Seconds are the detection's alone (no decode).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import record as bench_record


def compare(directory: str) -> dict[str, Any]:
    from bench.curate_real import inputs
    from pipelines import shot_detect as sd
    from pipelines.decode import decode_video, load_tiny
    from pipelines.shot_transitions import detect_transitions
    from pipelines.transnet import TransNet, resolved_precision

    model = TransNet(threads=1)
    counts = {"rule on": [0, 0, 0.0], "rule off": [0, 0, 0.0]}  # windows, frames, seconds
    mode = ["rule on"]
    window = model.window

    def counted(frames: np.ndarray, s: int, k: int, c: int) -> Any:
        counts[mode[0]][0] += 1
        counts[mode[0]][1] += k + 2 * c
        return window(frames, s, k, c)

    model.window = counted  # type: ignore[method-assign]
    real_mask = sd.fade_frames
    differ = []
    paths = inputs(Path(directory))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i, path in enumerate(paths):
                frames = np.asarray(load_tiny(decode_video(path, f"{tmp}/{i}").frames))
                found = {}
                for name in (("rule on", "rule off") if i % 2 == 0 else ("rule off", "rule on")):
                    mode[0] = name
                    sd.fade_frames = real_mask if name == "rule on" else (  # type: ignore[assignment]
                        lambda black, luma: np.zeros(len(black), bool))
                    t0 = time.perf_counter()
                    trs, _ = detect_transitions(frames, "transnetv2", model)
                    counts[name][2] += time.perf_counter() - t0
                    found[name] = [(t.start, t.end, t.kind) for t in trs]
                if found["rule on"] != found["rule off"]:
                    differ.append(os.path.basename(path))
    finally:
        sd.fade_frames = real_mask  # type: ignore[assignment]
    return {"files": len(paths), "precision": resolved_precision("cpu", "auto"),
            "runs": {k: {"windows": w, "model_frames": f, "seconds": round(s, 2)}
                     for k, (w, f, s) in counts.items()},
            "files_with_other_transitions": differ}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devset", required=True, help="the dev set (make devset)")
    ap.add_argument("--json", default="bench/results/cascade_fades.json")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    result = compare(args.devset)
    rec = bench_record.provenance("python -m bench.cascade_fades", argv, result["precision"], 1)
    bench_record.write_result(args.json, rec, result)
    for name, row in result["runs"].items():
        print(name, row)
    print("files with other transitions:", result["files_with_other_transitions"] or "none")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
