"""``vidloom bench filters``: clips/s of each scorer and of the whole filter stage, on this machine.

The cached bench videos (bench/curate.py) are curated once with the sequential runner,
every step timed. Then, in the same process, each scorer is run again alone over every clip
(its model set up first, outside the timing) from the frames the decode pass left: the
scorers never decode, so this is their whole cost. Reported:

    clips/s per scorer and for the filter stage (score + filter steps of the run),
    each scorer's share of the curate run's wall time,
    the run's throughput against decode-only (PyAV decode + tiny downscale of the same files).

See bench/README.md.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import time

from bench import record as bench_record
from bench.curate import bench_precision, decode_only, make_inputs, rates, run_once
from bench.split import cpu_s, loadavg, n_cores, print_rows


def time_scorers(out: str, cores: int) -> tuple[int, dict[str, dict[str, float]]]:
    """Each scorer alone over every clip of the run in ``out``: (clips, {scorer: timings})."""
    from bench.curate import bench_config
    from curation.db import Catalog
    from pipelines.curate import Paths, split_hash
    from pipelines.score_step import build_scorers, clip_tasks_from_catalog

    cfg = bench_config("sequential", cores)
    paths = Paths(out)
    with Catalog(paths.catalog, read_only=True) as cat:
        tasks = clip_tasks_from_catalog(cat, paths.frames, split_hash(cfg))
    results = {}
    for scorer in build_scorers(cfg)[0]:
        t0 = time.perf_counter()
        scorer.setup()
        setup_s = time.perf_counter() - t0
        fresh = [copy.deepcopy(t) for t in tasks]
        w, c = time.perf_counter(), cpu_s()
        for t in fresh:
            scorer.process(t)
        wall, cpu = time.perf_counter() - w, cpu_s() - c
        results[scorer.name] = {
            "setup_s": round(setup_s, 3),
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "clips_per_s": round(len(tasks) / wall, 2) if wall > 0 else None,
        }
    return len(tasks), results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidloom bench filters", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=150.0, help="total seconds of generated video (3 files)")
    p.add_argument("--repeats", type=int, default=2, help="decode-only runs per file; the best is kept")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cores = n_cores()
    record = bench_record.provenance("vidloom bench filters", argv, *bench_precision(cores))
    info = record["machine"]
    paths, video_s, frames = make_inputs(args.seconds)
    dec = decode_only(paths, args.repeats)
    run = run_once("sequential", [str(x) for x in paths], cores, keep=True)
    try:
        n_clips, scorers = time_scorers(run["out"], cores)
    finally:
        shutil.rmtree(run["out"], ignore_errors=True)
    steps = run["steps"]
    stage_wall = steps["score"]["wall_s"] + steps["filter"]["wall_s"]
    base, this = (
        rates(video_s, dec["wall_s"], dec["cpu_s"], cores),
        rates(video_s, run["wall_s"], run["cpu_s"], cores),
    )
    r = {
        "machine": {**info, "cores": cores, "loadavg_end": loadavg()},
        "video": {"seconds": round(video_s, 2), "frames": frames, "clips": n_clips},
        "scorers": scorers,
        "filter_stage": {"wall_s": round(stage_wall, 3), "clips_per_s": round(n_clips / stage_wall, 2)},
        "run": {
            "steps": {k: round(v["wall_s"], 3) for k, v in steps.items()},
            "wall_s": round(run["wall_s"], 2),
            "catalog": run["catalog"],
        },
        "decode_only": base,
        "curate": this,
        "vs_decode_only": round(this["video_h_per_core_h"] / base["video_h_per_core_h"], 4),
    }
    print(
        f"\nvidloom bench filters: {len(paths)} files, {video_s:.1f} s of video, {n_clips} clips; "
        f"{cores} cores, "
        f"load average {info['loadavg_1_5_15']} at start, {r['machine']['loadavg_end']} at end"
    )
    rows = [
        [
            name,
            f"{s['clips_per_s']}",
            f"{s['wall_s']:.2f}",
            f"{s['setup_s']:.2f}",
            f"{s['wall_s'] / run['wall_s']:.1%}",
        ]
        for name, s in scorers.items()
    ]
    rows.append(
        [
            "filter stage (score + filter steps)",
            f"{r['filter_stage']['clips_per_s']}",
            f"{stage_wall:.2f}",
            "-",
            f"{stage_wall / run['wall_s']:.1%}",
        ]
    )
    print_rows(["scorer", "clips/s", "wall s", "setup s", "share of curate wall"], rows)
    print_rows(
        ["curate step", "wall s", "share"],
        [[k, f"{v['wall_s']:.2f}", f"{v['wall_s'] / run['wall_s']:.1%}"] for k, v in steps.items()],
    )
    print(
        f"\ncurate (sequential) {run['wall_s']:.1f} s vs decode-only {dec['wall_s']:.1f} s: "
        f"{r['vs_decode_only']:.3f}x decode-only throughput (target >= 0.3x); catalog {run['catalog']}"
    )
    if args.json:
        bench_record.write_result(args.json, record, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
