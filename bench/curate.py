"""``vidloom bench curate``: end-to-end ``run_curate`` throughput in video hours per CPU core-hour.

A few generated videos (cached under ~/.cache/vidloom/bench/) go through ingest -> split ->
clips -> export into a fresh output directory, once per runner (sequential, then Ray). Each
step is timed on its own (``run_step_by_name``), wall clock and CPU time. The headline figure is

    video hours per core-hour = video seconds / (wall seconds x usable cores)

which charges the run for every core of the machine whether it used it or not (so it is
comparable between the sequential runner, Ray, and the decode-only limit: PyAV decode +
tiny downscale of the same files, ``decode_only_fps``, also charged wall x cores).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import record as bench_record
from bench.split import cpu_s, ensure_video, loadavg, n_cores, print_rows, timed

NOTES = [
    "video h/core-h = video s / (wall s x cores): every core of the machine is charged.",
    "video h/CPU-h = video s / CPU s actually spent (getrusage self + children; for Ray plus its processes",
    "  sampled from /proc every 0.5 s, so a lower bound on Ray's CPU).",
    "vs decode-only = the run's video h/core-h / decode-only's. Other processes on the machine slow every",
    "  figure: see the load average.",
]
# (width, height, fps) of the generated inputs; their lengths split --seconds evenly.
INPUTS = ((640, 360, 30.0), (1280, 720, 25.0), (640, 360, 25.0))


class TreeCpu:
    """CPU seconds of this process's descendants (Ray's raylet, GCS and workers), read from /proc.

    A background thread samples every ``period`` s and keeps each process's last (own, reaped
    children) CPU. A process that is gone counts through its parent's reaped-children time when
    that grew by its own time since it was last seen (a parent that ignores SIGCHLD never grows),
    else with its own last reading; so nothing counts twice, and only CPU after an uncounted
    process's last sample is lost. For Ray only: a sequential run's ffmpeg children are in
    getrusage(RUSAGE_CHILDREN).
    """

    def __init__(self, period: float = 0.5) -> None:
        import threading

        self.seen: dict[int, tuple[float, float, int, float]] = {}  # pid -> (own, children, ppid, ppid's)
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(period,), daemon=True)
        self._thread.start()

    def _loop(self, period: float) -> None:
        while not self._stop.wait(period):
            self.sample()

    def sample(self) -> float:
        tick, me = os.sysconf("SC_CLK_TCK"), os.getpid()
        stats: dict[int, tuple[float, float, int]] = {}
        for d in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
            except OSError:  # gone
                continue
            f_ = [int(x) for x in stat[stat.rindex(")") + 4:].split()[:15]]  # fields 4.. (ppid, ...)
            stats[int(d)] = ((f_[10] + f_[11]) / tick, (f_[12] + f_[13]) / tick, f_[0])
        with self._lock:
            for pid, (own, kids, ppid) in stats.items():
                p = ppid
                while p and p != me:
                    p = stats[p][2] if p in stats else 0
                if p == me:
                    old = self.seen.get(pid, (0.0, 0.0))
                    self.seen[pid] = (max(own, old[0]), max(kids, old[1]), ppid, stats.get(ppid, (0, 0))[1])
            total = 0.0
            for pid, (own, kids, ppid, ppid_kids) in self.seen.items():
                grew = ppid == me or (ppid in self.seen and self.seen[ppid][1] - ppid_kids >= own)
                reaped = pid not in stats and grew  # ours are in getrusage(RUSAGE_CHILDREN)
                total += kids + (0.0 if reaped else own)
            return total

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def make_inputs(seconds: float) -> tuple[list[Path], float, int]:
    """The cached input videos: (paths, total video seconds, total frames)."""
    paths, total_s, total_n = [], 0.0, 0
    for i, (w, h, fps) in enumerate(INPUTS):
        path, gt = ensure_video(w, h, fps, round(seconds / len(INPUTS)), seed=i + 1)
        paths.append(path)
        total_s += gt.n_frames / gt.fps
        total_n += gt.n_frames
    return paths, total_s, total_n


def decode_only(paths: list[Path], repeats: int) -> dict[str, float]:
    """The decode-only limit on the same files: per file the best of ``repeats`` runs, summed."""
    from pipelines.decode import decode_only_fps

    wall = lambda r: r["wall_s"]
    runs = [min((timed(lambda q=p: decode_only_fps(str(q))) for _ in range(repeats)), key=wall)
            for p in paths]
    return {"wall_s": sum(r["wall_s"] for r in runs), "cpu_s": sum(r["cpu_s"] for r in runs)}


def bench_config(runner: str, cores: int) -> Any:
    """Preset 'tiny' (small shards) with the default preset's clip lengths (2-10 s clips)."""
    from pipelines.config import ClipConfig, load_config

    cfg = load_config("tiny")
    cfg.clips = ClipConfig()
    cfg.filters.min_duration_s = cfg.clips.min_s
    cfg.runtime.runner, cfg.runtime.quiet, cfg.runtime.num_cpus = runner, True, cores
    return cfg


def bench_precision(cores: int) -> tuple[str, str]:
    """(precision, threads) of the bench config: what the split step's TransNetV2 runs at."""
    from pipelines.transnet import resolved_precision

    cfg = bench_config("sequential", cores)
    prec = resolved_precision(cfg.split.device, cfg.split.precision)
    return (f"TransNetV2 {prec} (split.precision={cfg.split.precision} on {cfg.split.device}); scorers fp32",
            f"runtime.num_cpus={cores}")


def run_once(runner_name: str, sources: list[str], cores: int, keep: bool) -> dict[str, Any]:
    """One full run_curate, step by step, into a fresh output directory."""
    from pipelines.curate import STEPS, finish_run, now_iso, run_step_by_name
    from pipelines.runner import make_runner

    cfg = bench_config(runner_name, cores)
    out = tempfile.mkdtemp(prefix=f"vidloom-bench-curate-{runner_name}-")
    steps: dict[str, dict[str, Any]] = {}

    tree = TreeCpu() if runner_name == "ray" else None
    cpu_now = lambda: cpu_s() + (tree.sample() if tree else 0.0)

    def timed(name: str, fn: Any) -> Any:
        w, c = time.perf_counter(), cpu_now()
        res = fn()
        steps[name] = {"wall_s": time.perf_counter() - w, "cpu_s": cpu_now() - c,
                       "counts": res if isinstance(res, dict) and name != "finish" else None}
        return res

    ray = None
    try:
        if runner_name == "ray":
            import ray

            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            timed("ray init", lambda: ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False,
                                               configure_logging=False) and None)
        runner = make_runner(cfg.runtime)
        started = now_iso()
        for step in STEPS:
            timed(step, lambda s=step: run_step_by_name(s, sources, out, cfg, runner))
        counts = lambda: {s: steps[s]["counts"] for s in STEPS}
        summary = timed("finish", lambda: finish_run(out, cfg, started, counts()))
        runner.shutdown()
    finally:
        if ray is not None and ray.is_initialized():
            ray.shutdown()
        if tree:
            tree.stop()
        if not keep:
            shutil.rmtree(out, ignore_errors=True)
    keys = ("videos_ok", "shots", "clips_kept", "clips_rejected", "shards", "shard_samples")
    total = lambda k: sum(s[k] for s in steps.values())
    return {"runner": runner_name, "out": out if keep else None, "steps": steps,
            "wall_s": total("wall_s"), "cpu_s": total("cpu_s"),
            "catalog": {k: summary[k] for k in keys if k in summary}}


def rates(video_s: float, wall_s: float, cpu_s: float, cores: int) -> dict[str, float]:
    return {"wall_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2),
            "video_h_per_core_h": round(video_s / (wall_s * cores), 3),
            "video_h_per_cpu_h": round(video_s / cpu_s, 3) if cpu_s > 0 else None,
            "x_realtime": round(video_s / wall_s, 2)}


def brief(counts: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (counts or {}).items() if v)[:60]


def report(r: dict[str, Any]) -> None:
    mc, v = r["machine"], r["video"]
    print(f"\nvidloom bench curate: {v['files']} files, {v['seconds']:.1f} s of video, {v['frames']} frames; "
          f"{mc['cores']} cores, load average {mc['loadavg_1_5_15']} at start, {mc['loadavg_end']} at end")
    rows = []
    for name, x in r["results"].items():
        cpu_h = "-" if x["video_h_per_cpu_h"] is None else f"{x['video_h_per_cpu_h']:.2f}"
        rows.append([name, f"{x['wall_s']:.1f}", f"{x['cpu_s']:.1f}", f"{x['x_realtime']:.2f}",
                     f"{x['video_h_per_core_h']:.3f}", cpu_h, f"{x['vs_decode_only']:.3f}"])
    print_rows(["run", "wall s", "CPU s", "x realtime", "video h/core-h", "video h/CPU-h", "vs decode-only"],
               rows)
    for run in r["runs"]:
        print(f"\nsteps ({run['runner']} runner): catalog {run['catalog']}")
        print_rows(["step", "wall s", "CPU s", "share of wall", "counts"],
                   [[k, f"{s['wall_s']:.2f}", f"{s['cpu_s']:.2f}", f"{s['wall_s'] / run['wall_s']:.1%}",
                     brief(s["counts"])] for k, s in run["steps"].items()])
    print("\n" + "\n".join(NOTES))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidloom bench curate", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=150.0, help="total seconds of generated video (3 files)")
    p.add_argument("--runners", default="sequential,ray", help="comma-separated: sequential, ray")
    p.add_argument("--repeats", type=int, default=2, help="decode-only runs per file; the best is kept")
    p.add_argument("--keep", action="store_true", help="keep the output directories")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)  # `vidloom bench curate --real DIR` runs bench/curate_real.py instead
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cores = n_cores()
    record = bench_record.provenance("vidloom bench curate", argv, *bench_precision(cores))
    paths, video_s, frames = make_inputs(args.seconds)
    dec = decode_only(paths, args.repeats)
    runs = [run_once(name.strip(), [str(x) for x in paths], cores, args.keep)
            for name in args.runners.split(",") if name.strip()]
    results = {"decode-only (PyAV)": rates(video_s, dec["wall_s"], dec["cpu_s"], cores)}
    for run in runs:
        results[f"run_curate ({run['runner']})"] = rates(video_s, run["wall_s"], run["cpu_s"], cores)
    base = results["decode-only (PyAV)"]["video_h_per_core_h"]
    for x in results.values():
        x["vs_decode_only"] = round(x["video_h_per_core_h"] / base, 4)
    r = {"machine": {**record["machine"], "loadavg_end": loadavg()},
         "video": {"files": len(paths), "paths": [str(x) for x in paths], "seconds": round(video_s, 2),
                   "frames": frames},
         "config": "preset tiny + clips 2-10 s (ClipConfig defaults), runtime.num_cpus = cores",
         "results": results, "runs": runs}
    report(r)
    if args.json:
        bench_record.write_result(args.json, record, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
