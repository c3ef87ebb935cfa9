"""Catalog operations at 10^5..10^7 clips: dedup, rescore, export selection and the report's queries.

``vidloom bench scale --clips 1e5,1e6,1e7 --json bench/results/scale.json`` builds, for each size, a
synthetic catalog (a real DuckDB file through curation.db.Catalog, bulk-loaded from Arrow; no
video): scores drawn from realistic distributions (about a third of the clips fail a default rule),
keyframe pHashes with planted near-duplicate groups (copies whose keyframes differ from the
original's by a few bits: :func:`synthetic_hashes`) and planted exact copies. On each it times,
every operation in its own process so that each peak RSS is its own:

    dedup       the filter step's dedup (keep order, exact copies, LSH near pairs, greedy)
    rescore     ``curate --rescore`` after a threshold change (the filter step: rules + dedup + write)
    export      ``export --where`` selection without cutting (curation/sandbox.py select_clip_ids)
    report      the report's catalog queries (curation/report.py funnel and buckets; the histogram
                and balance queries fetched as Arrow)

and fits the growth exponent (the slope of log time against log clips) of each. On the smallest
size it also measures the recall of LSH dedup against all-pairs (``--recall-max``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import record as bench_record

SPLIT = "synthetic"
SIZES = [(1920, 1080), (1280, 720), (854, 480), (640, 360), (426, 240), (176, 144)]
SIZE_P = [0.3, 0.35, 0.15, 0.12, 0.05, 0.03]
WHERE = "status = 'kept' AND aesthetic > 5.0 AND motion > 0.002"
RESCORE = {"min_blur": 60.0, "max_artifacts": 0.12}  # the threshold change the rescore applies


def splitmix(x: np.ndarray) -> np.ndarray:
    """A bijection of uint64 (ids that are unique and look random)."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hex_strings(words: np.ndarray) -> Any:
    """pyarrow strings: each row of uint64 [n, k] as 16*k lowercase hex digits (no Python objects)."""
    import pyarrow as pa

    words = np.atleast_2d(words.T).T if words.ndim == 1 else words
    n, k = words.shape
    b = np.ascontiguousarray(words.astype(">u8")).view(np.uint8).reshape(n, 8 * k)
    lut = np.frombuffer(b"0123456789abcdef", np.uint8)
    chars = np.empty((n, 16 * k), np.uint8)
    chars[:, 0::2], chars[:, 1::2] = lut[b >> 4], lut[b & 15]
    offsets = np.arange(0, 16 * k * (n + 1), 16 * k, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes())).cast(
        pa.string()
    )


def _flip(h: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """h with about ``counts`` random bits flipped per element (a bit drawn twice flips once)."""
    mask = np.zeros(h.shape, np.uint64)
    for j in range(int(counts.max(initial=0))):
        bit = np.uint64(1) << rng.integers(0, 64, h.shape, dtype=np.uint64)
        mask |= np.where(counts > j, bit, np.uint64(0))
    return h ^ mask


def synthetic_hashes(
    n: int, seed: int = 0, dup_frac: float = 0.1, exact_frac: float = 0.02, groups: list[Any] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keyframe hashes uint64 [n, 3], keyframe validity [n, 3] and content hashes uint64 [n, 4].

    Keyframes of one clip differ by ~16 bits (one shot, different moments). ``dup_frac`` of the
    clips are copies of an original (1-3 copies each) whose keyframes differ by Poisson-many bits
    per keyframe, the copy's noise level drawn from 0.5 (remux, re-encode), 1.5 (rescale) and 3.5
    (heavy re-encode, crop): near pairs span 0-10+ bits, and copies of one original are near
    each other too. ``exact_frac`` are exact copies (same content hash and phash). 1 % of the
    clips are short (one keyframe) and 0.5 % have no hash. ``groups``: when given, the planted
    (originals, copies) row arrays are appended to it.
    """
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    var = lambda: (
        rng.integers(0, 2**64 - 1, n, dtype=np.uint64)
        & rng.integers(  # noqa: E731
            0, 2**64 - 1, n, dtype=np.uint64
        )
    )
    h = np.stack([base, base ^ var(), base ^ var() ^ var()], 1)
    content = rng.integers(0, 2**64 - 1, (n, 4), dtype=np.uint64, endpoint=True)
    perm = rng.permutation(n)
    n_orig = int(n * dup_frac / 2)
    n_copies = rng.integers(1, 4, n_orig)
    orig = np.repeat(perm[:n_orig], n_copies)
    copies = perm[n_orig : n_orig + len(orig)]
    orig = orig[: len(copies)]
    level = rng.choice([0.5, 1.5, 3.5], len(copies), p=[0.4, 0.4, 0.2])
    h[copies] = _flip(h[orig], rng.poisson(level[:, None], (len(copies), 3)), rng)
    if groups is not None:
        groups.append((orig.copy(), copies.copy()))
    rest = perm[n_orig + len(copies) :]
    n_exact = min(int(n * exact_frac), len(rest) // 2)
    src, dst = rest[:n_exact], rest[n_exact : 2 * n_exact]
    h[dst], content[dst] = h[src], content[src]
    valid = np.ones((n, 3), bool)
    short = rest[2 * n_exact : 2 * n_exact + n // 100]
    valid[short, 1:] = False
    valid[rest[2 * n_exact + n // 100 : 2 * n_exact + n // 100 + n // 200]] = False
    return h, valid, content


def phash_column(h: np.ndarray, valid: np.ndarray) -> Any:
    """The stored phash strings (16 hex digits per valid keyframe, null without any)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    full = hex_strings(h)
    one = pc.utf8_slice_codeunits(full, 0, 16)
    out = pc.if_else(pa.array(valid[:, 1]), full, one)
    return pc.if_else(pa.array(valid[:, 0]), out, pa.nulls(len(h), pa.string()))


def synthetic_clips(n: int, seed: int = 0) -> tuple[Any, Any]:
    """The (videos, clips) Arrow tables of a synthetic catalog of ``n`` clips (20 per video)."""
    import pyarrow as pa

    rng = np.random.default_rng(seed + 1)
    n_videos = max(1, n // 20)
    size = rng.choice(len(SIZES), n_videos, p=SIZE_P)
    vw, vh = np.array(SIZES)[size].T
    video_ids = hex_strings(splitmix(np.arange(n_videos, dtype=np.uint64) + np.uint64(1 << 40)))
    videos = pa.table(
        {
            "video_id": video_ids,
            "path": pa.array([f"v/{i}.mp4" for i in range(n_videos)]),
            "status": pa.array(["ok"] * n_videos),
            "width": vw.astype(np.int32),
            "height": vh.astype(np.int32),
            "fps": np.full(n_videos, 25.0),
        }
    )
    vid = rng.integers(0, n_videos, n)
    dur = np.clip(rng.lognormal(np.log(5.0), 0.6, n), 0.5, 60.0)
    start_s = np.round(rng.uniform(0, 600, n), 2)
    end_s = start_s + dur
    h, valid, content = synthetic_hashes(n, seed)
    luma = np.clip(rng.normal(110, 35, n), 0, 255)
    text_area = np.where(rng.random(n) < 0.1, rng.beta(1, 40, n), 0.0)
    boxes = np.where((text_area > 0.02) & (rng.random(n) < 0.3), "[[0.05,0.86,0.95,0.96]]", None)
    cols = {
        "clip_id": hex_strings(splitmix(np.arange(n, dtype=np.uint64))),
        "video_id": video_ids.take(pa.array(vid)),
        "shot_index": rng.integers(0, 50, n).astype(np.int32),
        "start_frame": np.round(start_s * 25).astype(np.int64),
        "end_frame": np.round(end_s * 25).astype(np.int64),
        "start_s": start_s,
        "end_s": end_s,
        "width": vw[vid].astype(np.int32),
        "height": vh[vid].astype(np.int32),
        "fps": np.full(n, 25.0),
        "status": pa.array(np.full(n, "kept", object)),
        "split_hash": pa.array(np.full(n, SPLIT, object)),
        "blur": rng.lognormal(np.log(150), 0.8, n),
        "luma": luma,
        "luma_high": np.clip(luma + np.abs(rng.normal(60, 30, n)), 0, 255),
        "clipped": rng.beta(0.5, 20, n),
        "black_frac": rng.beta(0.3, 15, n),
        "black_border": np.where(rng.random(n) < 0.08, rng.uniform(0.05, 0.3, n), 0.0),
        "frozen": rng.beta(0.5, 8, n),
        "motion": rng.lognormal(np.log(0.01), 1.2, n),
        "artifacts": rng.beta(1.2, 25, n),
        "bits_per_pixel": rng.lognormal(np.log(0.08), 0.6, n),
        "text_area": text_area,
        "text_boxes": pa.array(boxes, pa.string()),
        "aesthetic": rng.normal(5.2, 0.7, n),
        "content_hash": hex_strings(content),
        "phash": phash_column(h, valid),
    }
    return videos, pa.table(cols)


def build_catalog(path: Path, n: int, seed: int = 0) -> dict[str, Any]:
    """Write the synthetic catalog of ``n`` clips at ``path`` and run the filter step once."""
    from curation.db import Catalog

    t0 = time.perf_counter()
    videos, clips = synthetic_clips(n, seed)
    t_gen = time.perf_counter() - t0
    with Catalog(path) as cat:
        with cat.transaction():
            for name, table in (("videos", videos), ("clips", clips)):
                cat.con.register("_bench_rows", table)
                cat.con.execute(
                    f"INSERT INTO {name} ({', '.join(table.column_names)}) "
                    f"SELECT {', '.join(table.column_names)} FROM _bench_rows"
                )
                cat.con.unregister("_bench_rows")
    return {"generate_s": round(t_gen, 2), "load_s": round(time.perf_counter() - t0 - t_gen, 2)}


def _config(change: bool) -> Any:
    from pipelines.config import load_config

    cfg = load_config("tiny")
    if change:
        for k, v in RESCORE.items():
            setattr(cfg.filters, k, v)
    return cfg


def op_dedup(path: Path) -> dict[str, Any]:
    """The filter step's dedup over every clip: load columns, keep order, exact + near duplicates."""
    from curation.db import Catalog
    from pipelines.decide_columns import KEEP_KEYS, load_columns
    from pipelines.dedup import duplicate_index, keep_rank

    kinds = {k: "num" for k in KEEP_KEYS} | {
        "clip_id": "key",
        "video_id": "key",
        "content_hash": "content",
        "phash": "phash",
    }
    with Catalog(path, read_only=True) as cat:
        cols = load_columns(cat.con, f"SELECT {', '.join(kinds)} FROM clips", [], kinds)
    rank = keep_rank({k: cols[k] for k in KEEP_KEYS})
    (words, present), (h, valid) = cols["content_hash"], cols["phash"]
    dup = duplicate_index(
        (words[rank], present[rank]),
        (h[rank], valid[rank]),
        _config(False).filters.phash_max_distance,
        method="lsh",
    )
    return {"duplicates": int((dup >= 0).sum())}


def op_rescore(path: Path, change: bool = True) -> dict[str, Any]:
    """``curate --rescore``: the filter step (pipelines/score_step.py decide) with changed thresholds."""
    from curation.db import Catalog
    from pipelines.score_step import decide

    with Catalog(path) as cat:
        return decide(cat, _config(change), SPLIT)


def op_export(path: Path) -> dict[str, Any]:
    from curation.sandbox import select_clip_ids

    return {"selected": len(select_clip_ids(path, WHERE))}


def op_report(path: Path) -> dict[str, Any]:
    """The report's catalog queries: funnel and buckets as the report runs them; the histogram and
    balance inputs (which write_report reads as row dicts) fetched as Arrow."""
    from curation import report
    from curation.db import Catalog

    with Catalog(path, read_only=True) as cat:
        funnel = report._funnel(cat)
        report._buckets(cat)
        scores = ", ".join(report.NUMERIC_SCORES)
        hist = cat.con.sql(f"SELECT status, {scores} FROM clips ORDER BY clip_id").to_arrow_table()
        kept = cat.con.sql(
            "SELECT clip_id, motion, start_s, end_s, width, height, fps FROM clips "
            "WHERE status = 'kept' ORDER BY clip_id"
        ).to_arrow_table()
    return {"clips": funnel["counts"]["clips"], "hist_rows": hist.num_rows, "kept_rows": kept.num_rows}


OPS = {"dedup": op_dedup, "rescore": op_rescore, "export": op_export, "report": op_report}


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which keeps the forking
    parent's)."""
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024


def run_op(op: str, path: Path) -> dict[str, Any]:
    """Run one operation in a fresh process; its seconds, peak RSS and what it returned."""
    code = (
        "import json, time; from pathlib import Path; from bench import scale as b; "
        f"t = time.perf_counter(); out = b.OPS_ALL[{op!r}](Path({str(path)!r})); "
        "s = time.perf_counter() - t; "
        "print(json.dumps({'seconds': s, 'peak_rss_mb': b.peak_rss_mb(), 'result': out}))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=bench_record.REPO
    )
    if res.returncode != 0:
        raise RuntimeError(f"{op} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return {"seconds": round(out["seconds"], 2), "peak_rss_mb": round(out["peak_rss_mb"]), **out["result"]}


def recall(n: int, seed: int = 0, max_distance: float = 10.0) -> dict[str, Any]:
    """LSH dedup against all-pairs on ``n`` synthetic clips (the hashes the bench catalog holds)."""
    from pipelines import dedup_bands as db

    h, valid, _ = synthetic_hashes(n, seed)
    t = time.perf_counter()
    a, b = db.phash_pairs(h, valid, max_distance, "lsh")
    t_lsh = time.perf_counter() - t
    t = time.perf_counter()
    ea, eb = db.phash_pairs(h, valid, max_distance, "exact")
    t_exact = time.perf_counter() - t
    truth, found = (
        set(zip(ea.tolist(), eb.tolist(), strict=True)),
        set(zip(a.tolist(), b.tolist(), strict=True)),
    )
    dist = db.pair_distance(h, valid, ea, eb)
    by = {}
    for lo, hi in ((0, 4), (4, 7), (7, 10.001)):
        sel = [
            (x, y) for x, y, d in zip(ea.tolist(), eb.tolist(), dist.tolist(), strict=True) if lo <= d < hi
        ]
        by[f"{lo}-{min(hi, 10):g}"] = {
            "pairs": len(sel),
            "recall": round(sum(p in found for p in sel) / max(1, len(sel)), 4),
        }
    dup_exact, dup_lsh = db.greedy_dup_of(n, ea, eb), db.greedy_dup_of(n, a, b)
    flagged = dup_exact >= 0
    return {
        "clips": n,
        "true_pairs": len(truth),
        "found_pairs": len(found),
        "false_pairs": len(found - truth),
        "pair_recall": round(len(truth & found) / max(1, len(truth)), 4),
        "pair_recall_by_distance": by,
        "duplicate_recall": round(float((dup_lsh[flagged] >= 0).mean()), 4),
        "same_dup_of": round(float((dup_lsh[flagged] == dup_exact[flagged]).mean()), 4),
        "lsh_s": round(t_lsh, 2),
        "all_pairs_s": round(t_exact, 2),
    }


def planted_recall(n: int, seed: int = 0, max_distance: float = 10.0) -> dict[str, Any]:
    """LSH recall on the planted pairs alone (original-copy and copy-copy of one group), for sizes
    where all-pairs is out of reach: the pairs within ``max_distance`` that LSH reports."""
    from pipelines import dedup_bands as db

    groups: list[Any] = []
    h, valid, _ = synthetic_hashes(n, seed, groups=groups)
    orig, copies = groups[0]
    order = np.argsort(orig, kind="stable")
    orig, copies = orig[order], copies[order]
    a, b = [orig], [copies]
    same = orig[1:] == orig[:-1]
    for lag in (1, 2):  # copies of one original (up to 3) are near each other too
        ok = same if lag == 1 else same[:-1] & same[1:]
        a.append(copies[:-lag][ok])
        b.append(copies[lag:][ok])
    pa_, pb_ = np.concatenate(a), np.concatenate(b)
    pa_, pb_ = np.minimum(pa_, pb_), np.maximum(pa_, pb_)
    dist = db.pair_distance(h, valid, pa_, pb_)
    near = dist <= max_distance
    pa_, pb_, dist = pa_[near], pb_[near], dist[near]
    t = time.perf_counter()
    fa, fb = db.phash_pairs(h, valid, max_distance, "lsh")
    t_lsh = time.perf_counter() - t
    found = np.isin(pa_ * n + pb_, fa * n + fb)
    by = {
        f"{lo}-{min(hi, 10):g}": {
            "pairs": int(((dist >= lo) & (dist < hi)).sum()),
            "recall": round(float(found[(dist >= lo) & (dist < hi)].mean()), 4),
        }
        for lo, hi in ((0, 4), (4, 7), (7, 10.001))
        if ((dist >= lo) & (dist < hi)).any()
    }
    return {
        "clips": n,
        "planted_pairs": int(len(pa_)),
        "recall": round(float(found.mean()), 4),
        "recall_by_distance": by,
        "pairs_reported": int(len(fa)),
        "lsh_s": round(t_lsh, 2),
    }


def growth(sizes: list[int], seconds: list[float]) -> float | None:
    """The slope of log(seconds) against log(clips): 1 is linear, n log n reads ~1.1 over 10^5-10^7."""
    if len(sizes) < 2:
        return None
    return round(float(np.polyfit(np.log(sizes), np.log(np.maximum(seconds, 1e-3)), 1)[0]), 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidloom bench scale", description=__doc__.splitlines()[0])
    p.add_argument("--clips", default="1e5,1e6,1e7", help="catalog sizes, comma-separated (1e5 notation)")
    p.add_argument("--ops", default=",".join(OPS), help="operations to time")
    p.add_argument("--recall-max", type=float, default=1e5, help="measure recall on the sizes up to this")
    p.add_argument("--dir", help="where the catalogs go (default: a temporary directory, removed)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--planted-only", action="store_true",
                   help="only LSH recall on the planted pairs at each size "
                        "(no catalog; all-pairs is out of reach)")
    args = p.parse_args(argv)
    if args.planted_only:
        rec = bench_record.provenance("vidloom bench scale", argv, "uint64 (hashes)", {"numpy": 1})
        out = {"planted_recall": [planted_recall(int(float(x))) for x in args.clips.split(",")]}
        print(json.dumps(out))
        if args.json:
            bench_record.write_result(args.json, rec, out)
        return 0
    sizes = [int(float(x)) for x in args.clips.split(",")]
    ops = [o for o in args.ops.split(",") if o]
    record = bench_record.provenance(
        "vidloom bench scale",
        argv,
        "fp64 (scores), uint64 (hashes)",
        {"duckdb": bench_record.n_cores(), "numpy": 1},
    )
    tmp = tempfile.TemporaryDirectory(dir=args.dir) if not args.dir else None
    root = Path(tmp.name if tmp else args.dir)
    runs: list[dict[str, Any]] = []
    try:
        for n in sizes:
            path = root / f"scale-{n}" / "catalog.duckdb"
            if path.parent.exists():
                subprocess.run(["rm", "-rf", str(path.parent)], check=True)
            entry: dict[str, Any] = {"clips": n, "loadavg_start": bench_record.loadavg()}
            entry["build"] = run_op(f"build:{n}", path)
            entry["build"]["first_decide"] = _initial_decide(path)
            entry["catalog_mb"] = round(sum(f.stat().st_size for f in path.parent.glob("*.duckdb")) / 2**20)
            for op in ops:
                entry[op] = run_op(op, path)
                print(
                    f"{n:>10} {op:8} {entry[op]['seconds']:8.2f} s  {entry[op]['peak_rss_mb']:6} MB",
                    flush=True,
                )
            if n <= args.recall_max:
                entry["recall"] = recall(n)
                print(f"{n:>10} recall {entry['recall']}", flush=True)
            entry["loadavg_end"] = bench_record.loadavg()
            runs.append(entry)
            subprocess.run(["rm", "-rf", str(path.parent)], check=True)
    finally:
        if tmp:
            tmp.cleanup()
    result = {
        "runs": runs,
        "where": WHERE,
        "rescore_change": RESCORE,
        "growth_exponent": {
            op: growth([r["clips"] for r in runs], [r[op]["seconds"] for r in runs]) for op in ops
        },
    }
    print(json.dumps(result["growth_exponent"]))
    if args.json:
        bench_record.write_result(args.json, record, result)
    return 0


def _initial_decide(path: Path) -> dict[str, Any]:
    """The filter step under the default thresholds, so that rescore starts from a decided catalog."""
    out = run_op("rescore_default", path)
    return {"seconds": out["seconds"], "peak_rss_mb": out["peak_rss_mb"], "kept": out.get("kept")}


class _Ops(dict):  # type: ignore[type-arg]
    """OPS, the initial filter step and ``build:<n>`` (each run in its own process by run_op)."""

    def __missing__(self, key: str) -> Any:
        if key.startswith("build:"):
            return lambda path: build_catalog(path, int(key.split(":", 1)[1]))
        raise KeyError(key)


OPS_ALL = _Ops({**OPS, "rescore_default": lambda path: op_rescore(path, change=False)})


if __name__ == "__main__":
    raise SystemExit(main())
