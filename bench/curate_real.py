"""``vidloom bench curate --real DIR``: curation throughput on real footage against the decode limit.

In one process, on every video under DIR (the dev set, ``make devset``) plus one 720p file of at
least 5 minutes (``long_720p``: the dev set's Sintel trailer looped six times by stream copy, 313 s,
made reproducibly into ~/.cache/vidloom/bench/):

    decode-only   PyAV decode of every file, thread_type=AUTO, each frame downscaled to 48x27 inside
                  FFmpeg by a filter graph (``pipelines.decode.decode_only_fps``): the limit;
    split         ingest, then the split step (decode once + shot split) timed alone;
    curate        every step of ``run_curate`` (ingest ... export) into a fresh output directory,
                  captions from the 'signals' backend (no VLM), every available scorer on.

For each: wall seconds, the throughput ratio to decode-only (decode-only wall / its wall: 1.0 is
the limit), CPU utilisation (CPU seconds / (wall x cores)); for curate, each step's share of the
wall. The Ray runner's CPU counts its raylet and workers (``TreeCpu``). ``--score-all`` runs every
scorer on every clip (no cost ordering). See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import record as bench_record
from bench.curate import TreeCpu, bench_precision
from bench.split import CACHE, cpu_s, loadavg, n_cores, print_rows

LONG_SOURCE = "libopenshot/sintel_trailer-720p.mp4"  # 1280x720 24 fps, 52.2 s, in the dev set
LONG_LOOPS = 6


def long_720p(devset: Path) -> Path:
    """The >= 5 min 720p input: the dev set's Sintel trailer looped by stream copy (bit-exact muxing,
    so the same ffmpeg makes the same bytes). Made once into the bench cache."""
    src = devset / LONG_SOURCE
    out = CACHE / f"sintel720p_loop{LONG_LOOPS}.mp4"
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", str(LONG_LOOPS - 1),
                    "-i", str(src), "-map", "0:v:0", "-c", "copy", "-fflags", "+bitexact",
                    "-flags:v", "+bitexact", str(tmp)], check=True)
    tmp.rename(out)
    return out


def inputs(devset: Path, with_long: bool = True) -> list[str]:
    from pipelines.config import VIDEO_EXTENSIONS
    from pipelines.stages.ingest import discover_inputs

    files = discover_inputs([str(devset)], VIDEO_EXTENSIONS)
    with_long = with_long and (devset / LONG_SOURCE).exists()  # a partial DIR (smoke runs) has none
    return files + ([str(long_720p(devset))] if with_long else [])


def video_seconds(paths: list[str]) -> tuple[float, list[dict[str, Any]]]:
    """Total seconds (container durations) and one row per file."""
    import av

    rows = []
    for p in paths:
        try:
            with av.open(p) as c:
                s = c.streams.video[0]
                dur = c.duration / 1e6 if c.duration else float(s.duration * s.time_base)
                rows.append({"path": p, "seconds": round(dur, 2), "size": f"{s.width}x{s.height}",
                             "codec": s.codec_context.name})
        except Exception as e:  # noqa: BLE001 - an unreadable file is recorded, not fatal
            rows.append({"path": p, "seconds": 0.0, "error": str(e)[:100]})
    return sum(r["seconds"] for r in rows), rows


def decode_only(paths: list[str]) -> dict[str, Any]:
    """The limit: every file decoded once (a file PyAV cannot decode counts its time until it stops)."""
    from pipelines.decode import decode_only_fps

    wall = cpu = 0.0
    failed = []
    for p in paths:
        w, c = time.perf_counter(), cpu_s()
        try:
            decode_only_fps(p)
        except Exception as e:  # noqa: BLE001
            failed.append(f"{os.path.basename(p)}: {str(e)[:80]}")
        wall += time.perf_counter() - w
        cpu += cpu_s() - c
    return {"wall_s": wall, "cpu_s": cpu, "failed": failed}


def real_config(runner: str, cores: int, score_all: bool) -> Any:
    """The default preset, 'signals' captions (no VLM), this machine's cores."""
    from pipelines.config import load_config

    cfg = load_config("default")
    cfg.caption.backend = "signals"
    cfg.runtime.runner, cfg.runtime.quiet, cfg.runtime.num_cpus = runner, True, cores
    if hasattr(cfg.scores, "score_all"):
        cfg.scores.score_all = score_all
    return cfg


def run_steps(steps: tuple[str, ...], sources: list[str], cfg: Any, runner: Any, tree: Any | None,
              out: str | None = None, copy_after: str | None = None) -> dict[str, Any]:
    """``steps`` of run_curate into ``out`` (default: a fresh directory, removed after), each timed
    (wall, CPU incl. Ray's). ``copy_after``: copy the output directory after that step (untimed)
    into ``result['copy']``, for a second ending from the same split."""
    from pipelines.curate import finish_run, now_iso, run_step_by_name

    out = out or tempfile.mkdtemp(prefix="vidloom-bench-real-")
    cpu_now = lambda: cpu_s() + (tree.sample() if tree else 0.0)
    timing: dict[str, dict[str, Any]] = {}
    copy = None
    try:
        started = now_iso()
        for step in steps:
            w, c = time.perf_counter(), cpu_now()
            counts = run_step_by_name(step, sources, out, cfg, runner)
            timing[step] = {"wall_s": round(time.perf_counter() - w, 2), "cpu_s": round(cpu_now() - c, 2),
                            "counts": counts}
            if step == copy_after:
                copy = tempfile.mkdtemp(prefix="vidloom-bench-real-copy-")
                shutil.copytree(out, copy, dirs_exist_ok=True)
        summary = finish_run(out, cfg, started, {s: timing[s]["counts"] for s in steps})
        digest = decisions(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    keys = ("videos_ok", "videos_error", "shots", "clips_kept", "clips_rejected", "shards", "shard_samples")
    return {"steps": timing, "catalog": {k: summary[k] for k in keys if k in summary}, "copy": copy,
            "decisions": {k: v for k, v in digest.items() if k != "not_scored"},
            "not_scored": digest["not_scored"]}


def decisions(out: str) -> dict[str, Any]:
    """A digest of every clip's (id, status, reject reason), and how many clips had scorers skipped."""
    import hashlib

    from curation.db import Catalog

    with Catalog(Path(out) / "catalog.duckdb", read_only=True) as cat:
        rows = cat.query("SELECT clip_id, status, reject_reason FROM clips ORDER BY clip_id")[1]
        skipped = cat.query("SELECT count(*) FROM clips WHERE not_scored IS NOT NULL")[1][0][0]
    return {"sha256": hashlib.sha256(repr(rows).encode()).hexdigest()[:16], "clips": len(rows),
            "not_scored": skipped}


def figures(wall: float, cpu: float, base_wall: float, cores: int) -> dict[str, float]:
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "vs_decode_only": round(base_wall / wall, 3),
            "cpu_util": round(cpu / (wall * cores), 3)}


def run(devset: str, runner_name: str, score_all: bool, split_only: bool, argv: list[str] | None,
        json_path: str | None, compare: bool = True) -> int:
    from pipelines.curate import STEPS
    from pipelines.runner import make_runner

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cores = n_cores()
    prec, threads = bench_precision(cores)
    record = bench_record.provenance("vidloom bench curate", argv, prec, threads)
    paths = inputs(Path(devset))
    seconds, files = video_seconds(paths)
    print(f"{len(paths)} files, {seconds:.1f} s of video; decode-only ...", flush=True)
    dec = decode_only(paths)
    cfg = real_config(runner_name, cores, score_all)
    ray = tree = None
    ray_init_s = 0.0
    if runner_name == "ray":
        import ray

        from pipelines.runner import start_local_ray

        t0 = time.perf_counter()
        start_local_ray(cores)  # as `vidloom curate` starts it
        ray_init_s = time.perf_counter() - t0
        tree = TreeCpu()
    runs: dict[str, Any] = {}
    try:
        runner = make_runner(cfg.runtime)
        if split_only:
            print("split step ...", flush=True)
            runs["split"] = run_steps(("ingest", "split"), paths, cfg, runner, tree)
        else:
            print("whole curation (its split step is the split-step figure) ...", flush=True)
            runs["curate"] = run_steps(STEPS, paths, cfg, runner, tree,
                                       copy_after="clips" if compare else None)
            if compare:  # the same split, scored the other way: score ... export again
                print(f"score ... export again, score_all={not score_all} ...", flush=True)
                other = real_config(runner_name, cores, not score_all)
                tail = STEPS[STEPS.index("clips") + 1:]
                runs["curate, other scoring"] = run_steps(tail, [], other, runner, tree,
                                                          out=runs["curate"]["copy"])
        runner.shutdown()
    finally:
        if ray is not None and ray.is_initialized():
            ray.shutdown()
        if tree:
            tree.stop()
    base = dec["wall_s"]
    results = {"decode-only (PyAV, 48x27 filter graph)": figures(dec["wall_s"], dec["cpu_s"], base, cores)}
    first = runs["split"] if split_only else runs["curate"]
    sp = first["steps"]["split"]
    results["split step"] = figures(sp["wall_s"], sp["cpu_s"], base, cores)
    label = lambda all_: "score-all" if all_ else "cost-ordered"
    for name, all_ in (("curate", score_all), ("curate, other scoring", not score_all)):
        if name not in runs:
            continue
        st = runs[name]["steps"]
        if name != "curate":  # the shared ingest, split and clips steps count for both
            st = {**{k: dict(v) for k, v in runs["curate"]["steps"].items() if k not in st}, **st}
            runs[name]["steps"] = st
        wall, cpu = sum(s["wall_s"] for s in st.values()), sum(s["cpu_s"] for s in st.values())
        results[f"whole curation ({label(all_)})"] = figures(wall, cpu, base, cores)
        results[f"whole curation ({label(all_)}) + Ray start"] = figures(wall + ray_init_s, cpu, base, cores)
        for s in st.values():
            s["share"] = round(s["wall_s"] / wall, 3)
    same = (runs["curate"]["decisions"] == runs["curate, other scoring"]["decisions"]
            if "curate, other scoring" in runs else None)
    r = {"machine": {"loadavg_end": loadavg()},
         "video": {"dir": devset, "files": len(paths), "seconds": round(seconds, 1), "per_file": files,
                   "long_720p": next((p for p in paths if p.startswith(str(CACHE))), None),
                   "decode_only_failed": dec["failed"]},
         "config": f"preset default, caption.backend=signals, runner {runner_name}, "
                   f"runtime.num_cpus={cores}, score_all={score_all}",
         "ray_init_s": round(ray_init_s, 2), "results": results,
         "same_decisions_both_scorings": same, "runs": runs}
    report(r, record)
    if json_path:
        bench_record.write_result(json_path, record, r)
    return 0


def report(r: dict[str, Any], record: dict[str, Any]) -> None:
    v, mc = r["video"], record["machine"]
    print(f"\nvidloom bench curate --real: {v['files']} files, {v['seconds']:.1f} s of video; "
          f"{mc['cores']} cores, "
          f"load average {mc.get('loadavg_1_5_15')} at start, {r['machine']['loadavg_end']} at end; "
          f"Ray start {r['ray_init_s']:.1f} s; same decisions both ways: {r['same_decisions_both_scorings']}")
    print_rows(["run", "wall s", "CPU s", "vs decode-only", "CPU util"],
               [[k, f"{x['wall_s']:.1f}", f"{x['cpu_s']:.1f}", f"{x['vs_decode_only']:.3f}",
                 f"{x['cpu_util']:.0%}"] for k, x in r["results"].items()])
    for name, run_ in r["runs"].items():
        print(f"\n{name}: catalog {run_['catalog']}, clips with scorers skipped {run_['not_scored']}")
        print_rows(["step", "wall s", "CPU s", "share"],
                   [[k, f"{s['wall_s']:.1f}", f"{s['cpu_s']:.1f}", f"{s.get('share', 0):.1%}"]
                    for k, s in run_["steps"].items()])


def main(argv: list[str] | None = None) -> int:
    """``vidloom bench curate --real DIR [--runner ray|sequential] [--split-only] [--score-all]``."""
    p = argparse.ArgumentParser(prog="vidloom bench curate --real", description=__doc__.splitlines()[0])
    p.add_argument("--real", metavar="DIR", required=True, help="real footage (the dev set + a 5 min 720p "
                   "file): decode-only, the split step and the whole curation")
    p.add_argument("--runner", default="ray", help="sequential or ray")
    p.add_argument("--split-only", action="store_true", help="decode-only and the split step")
    p.add_argument("--score-all", action="store_true", help="every scorer on every clip")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    return run(args.real, args.runner, args.score_all, args.split_only, argv, args.json)
