"""How many dev-set clips each reject reason takes, from a finished ``vidloom curate`` run.

    vidloom curate <folder of links to the 30 real dev-set videos> --out OUT --runner sequential \\
        --set filters.min_duration_s=0.5
    python bench/filters_devset.py OUT [--sheets DIR] [--json bench/results/filters_devset.json] \\
        [--before OLD.json]

Per reason: the clips it rejects and the videos they come from; per video: its clips by reason
and the median of the score columns the rules read. ``--sheets`` writes one contact sheet per
reason (PNG: three sparse frames of each rejected clip, start / middle / end, labelled with the
clip and its score) to check the rejections by eye. ``--before``: an earlier result of this
script; its counts are kept in the new file as ``before`` (the calibration's starting point).
``min_duration_s`` is lowered in the run so that short clips get scored and counted too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import record as bench_record  # noqa: E402  (after the path insert)

# reason -> the score column it reads (drawn on the contact sheet)
SCORE_OF = {
    "black": "black_frac",
    "dark": "luma",
    "overexposed": "luma",
    "compressed": "artifacts",
    "blurry": "blur",
    "letterbox": "black_border",
    "frozen": "frozen",
    "text": "text_area",
    "static": "motion",
    "too_fast": "motion",
}
COLUMNS = ("luma", "artifacts", "blur", "frozen", "motion", "text_area")


def clip_rows(out: Path) -> list[dict[str, Any]]:
    """Every clip of the run with its video's file name and frames folder."""
    from curation.db import Catalog

    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        cur = cat.con.execute(
            "SELECT c.*, v.path AS video_path FROM clips c JOIN videos v USING (video_id) "
            "ORDER BY v.path, c.start_frame"
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def counts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """{reason: {clips, videos: {name: n}}} ('kept' for kept clips), and per-video medians."""
    by_reason: dict[str, dict[str, Any]] = {}
    by_video: dict[str, dict[str, Any]] = {}
    for r in rows:
        reason, name = r["reject_reason"] or "kept", Path(r["video_path"]).name
        entry = by_reason.setdefault(reason, {"clips": 0, "videos": {}})
        entry["clips"] += 1
        entry["videos"][name] = entry["videos"].get(name, 0) + 1
        by_video.setdefault(name, {"reasons": {}, "rows": []})
        by_video[name]["reasons"][reason] = by_video[name]["reasons"].get(reason, 0) + 1
        by_video[name]["rows"].append(r)
    videos = {}
    for name, v in sorted(by_video.items()):
        med = {}
        for col in COLUMNS:
            vals = [x[col] for x in v["rows"] if x.get(col) is not None]
            med[col] = round(float(np.median(vals)), 4) if vals else None
        videos[name] = {"clips": len(v["rows"]), "reasons": v["reasons"], "median": med}
    return {"reasons": dict(sorted(by_reason.items(), key=lambda kv: -kv[1]["clips"])), "videos": videos}


def contact_sheets(out: Path, rows: list[dict[str, Any]], sheets: Path, per_sheet: int = 24) -> list[str]:
    """One PNG per reason: start / middle / end sparse frames of its clips, one clip a row."""
    import cv2

    sheets.mkdir(parents=True, exist_ok=True)
    written = []
    reasons = sorted({r["reject_reason"] for r in rows if r["reject_reason"]})
    for reason in reasons:
        picked = [r for r in rows if r["reject_reason"] == reason][:per_sheet]
        lines = []
        for r in picked:
            d = out / ".work" / "frames" / r["video_id"]
            try:
                idx, sparse = np.load(d / "sparse_idx.npy"), np.load(d / "sparse.npy", mmap_mode="r")
            except OSError:
                continue
            inside = np.flatnonzero((idx >= r["start_frame"]) & (idx < r["end_frame"]))
            if len(inside) == 0:
                continue
            frames = [np.asarray(sparse[inside[i]]) for i in (0, len(inside) // 2, len(inside) - 1)]
            line = np.concatenate(frames, axis=1)[..., ::-1].copy()  # RGB -> BGR for cv2
            col = SCORE_OF.get(reason)
            value = r.get(col) if col else None
            label = f"{Path(r['video_path']).name} {r['start_s']:.1f}-{r['end_s']:.1f}s"
            label += f" {col}={value:.4g}" if value is not None else ""
            cv2.putText(line, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
            cv2.putText(line, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
            lines.append(line)
        if lines:
            width = max(x.shape[1] for x in lines)
            lines = [np.pad(x, ((0, 2), (0, width - x.shape[1]), (0, 0))) for x in lines]
            path = sheets / f"{reason}.png"
            cv2.imwrite(str(path), np.concatenate(lines, axis=0))
            written.append(str(path))
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="the output root of a finished curate run")
    p.add_argument("--sheets", type=Path, help="write one contact sheet per reason here")
    p.add_argument("--json", type=Path, help="write the counts here")
    p.add_argument("--before", type=Path, help="an earlier result of this script: kept as 'before'")
    p.add_argument("--curate-command", default="", help="the curate command of the run, recorded")
    args = p.parse_args(argv)
    rows = clip_rows(args.out)
    result: dict[str, Any] = {
        **bench_record.provenance("python bench/filters_devset.py", argv,
                                  "n/a (counts from the catalog of the curate run)", "n/a"),
        "curate_command": args.curate_command,
        "clips": len(rows),
        **counts(rows),
    }
    if args.before:
        old = json.loads(args.before.read_text())
        result["before"] = {
            "date": old["date"],
            "curate_command": old.get("curate_command", ""),
            "reasons": {k: v["clips"] for k, v in old["reasons"].items()},
        }
    before = result.get("before", {}).get("reasons", {})
    names = sorted(set(result["reasons"]) | set(before))
    print(f"{len(rows)} clips")
    for name in names:
        now = result["reasons"].get(name, {"clips": 0, "videos": {}})
        was = f"{before.get(name, 0):>4} -> " if before else ""
        print(f"{name:<14} {was}{now['clips']:>4}  {now['videos']}")
    if args.sheets:
        result["sheets"] = contact_sheets(args.out, rows, args.sheets)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
