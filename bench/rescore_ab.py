"""``--rescore`` of one decided bench catalog under two code revisions: seconds and decisions.

Builds (or reuses) a bench scale catalog (bench/scale.py: synthetic clips, then the filter step
under the default thresholds), then, alternating the revisions ``--repeats`` times, copies the
decided catalog, runs bench/scale.py's ``rescore`` op on the copy in a fresh process from that
revision's tree (``git archive``), and digests every clip's (clip_id, status, reject_reason,
dup_of, crop) ordered by clip_id. The revisions must decide identically: the digests are compared.

Run directly: ``python bench/rescore_ab.py --clips 1e6 --revs OLD,NEW --dir D --json F``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import record as bench_record  # noqa: E402

DIGEST_SQL = (
    "SELECT clip_id, status, reject_reason, dup_of, crop_reason, extract_crop_x, extract_crop_y, "
    "extract_crop_w, extract_crop_h FROM clips ORDER BY clip_id"
)


def digest(path: Path) -> str:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    h = hashlib.sha256()
    try:
        for rb in con.sql(DIGEST_SQL).to_arrow_reader(1 << 20):
            for col in rb.columns:
                h.update(json.dumps(col.to_pylist()).encode())
    finally:
        con.close()
    return h.hexdigest()


def tree(rev: str, root: Path) -> Path:
    """The repository's files at ``rev`` (its sha as the folder name)."""
    sha = subprocess.run(
        ["git", "rev-parse", rev], cwd=bench_record.REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    out = root / sha[:12]
    if not out.exists():
        out.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", sha], cwd=bench_record.REPO, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out


def rescore(code: Path, base: Path, work: Path) -> dict[str, Any]:
    subprocess.run(["rm", "-rf", str(work)], check=True)
    subprocess.run(["cp", "-a", str(base), str(work)], check=True)
    prog = (
        "import json, time; from pathlib import Path; from bench import scale as b; "
        f"t = time.perf_counter(); out = b.op_rescore(Path({str(work / 'catalog.duckdb')!r})); "
        "s = time.perf_counter() - t; print(json.dumps({'seconds': round(s, 2), "
        "'peak_rss_mb': round(b.peak_rss_mb()), **out}))"
    )
    res = subprocess.run([sys.executable, "-c", prog], cwd=code, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    out["digest"] = digest(work / "catalog.duckdb")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", default="1e6")
    p.add_argument("--revs", required=True, help="two git revisions, comma-separated: before,after")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--dir", required=True, help="where the catalog and the code trees go (kept)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    from bench import scale

    n, root = int(float(args.clips)), Path(args.dir)
    rec = bench_record.provenance("python bench/rescore_ab.py", argv, "fp64 (scores), uint64 (hashes)",
                                  {"duckdb": bench_record.n_cores(), "numpy": 1})
    base = root / f"base-{n}"
    if not (base / "catalog.duckdb").exists():
        base.mkdir(parents=True, exist_ok=True)
        scale.run_op(f"build:{n}", base / "catalog.duckdb")
        scale.run_op("rescore_default", base / "catalog.duckdb")
    revs = args.revs.split(",")
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        codes = {r: tree(r, Path(tmp)) for r in revs}
        runs: dict[str, list[dict[str, Any]]] = {r: [] for r in revs}
        for _ in range(args.repeats):
            for r in revs:
                runs[r].append(rescore(codes[r], base, root / "work"))
                runs[r][-1]["loadavg"] = bench_record.loadavg()
                print(r, runs[r][-1], flush=True)
    digests = {x["digest"] for rs in runs.values() for x in rs}
    best = {r: min(x["seconds"] for x in runs[r]) for r in revs}
    result = {
        "clips": n,
        "rescore_change": scale.RESCORE,
        "revisions": {r: codes[r].name for r in revs},
        "runs": runs,
        "best_seconds": best,
        "speedup": round(best[revs[0]] / best[revs[-1]], 2),
        "same_decisions": len(digests) == 1,
    }
    print(json.dumps({k: result[k] for k in ("best_seconds", "speedup", "same_decisions")}))
    if args.json:
        bench_record.write_result(args.json, rec, result)
    return 0 if len(digests) == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
