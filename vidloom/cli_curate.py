"""What ``vidloom curate`` checks before and after a run, so its exit status tells the truth.

Before: the sources must name at least one video file (``ingest.extensions``), else nothing is
started (exit 1). After: each input file's outcome is read from the catalog (``files`` joined to
``videos``). When no input could be processed (every file errored: unreadable, absurd, failed to
decode) the command exits 1; a partial failure exits 0 and lists the failed files. A file whose
bytes equal another input's ('duplicate') counts as processed when that content was.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

MAX_LISTED = 20  # failures printed by name; the rest are counted


@dataclass
class Outcome:
    """Per-input results of one curate run."""

    ok: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, error)

    @property
    def nothing_processed(self) -> bool:
        return not self.ok


def input_files(sources: list[str], cfg: Any) -> list[str]:
    """The files and URLs a run over ``sources`` ingests (the ingest step's own discovery)."""
    from pipelines.remote_inputs import discover_sources

    return discover_sources(sources, cfg.ingest.extensions).paths


def read_outcome(db: str | Path, files: list[str]) -> Outcome:
    """Each of ``files``' outcome in the catalog at ``db`` (opened read-only, after the run)."""
    from curation.db import Catalog

    with Catalog(db, read_only=True) as cat:
        rows = {r["path"]: r for r in cat.dicts(
            "SELECT f.path, f.status, f.error, v.status AS video_status, v.error AS video_error "
            "FROM files f LEFT JOIN videos v USING (video_id)")}
    out = Outcome()
    for path in files:
        r = rows.get(path)
        if r is None:
            out.failed.append((path, "not ingested"))
        elif r["status"] in ("ok", "duplicate") and r["video_status"] == "ok":
            out.ok.append(path)
        else:
            out.failed.append((path, r["error"] or r["video_error"] or f"status {r['status']}"))
    return out


def print_outcome(outcome: Outcome, db: str | Path, out: TextIO) -> None:
    """The failed inputs, by name (at most MAX_LISTED), after the run summary."""
    n = len(outcome.ok) + len(outcome.failed)
    print(f"  inputs      {n} files: {len(outcome.ok)} processed, {len(outcome.failed)} failed", file=out)
    for path, error in outcome.failed[:MAX_LISTED]:
        print(f"    failed    {path}: {error}", file=out)
    if len(outcome.failed) > MAX_LISTED:
        print(f"    ... and {len(outcome.failed) - MAX_LISTED} more: vidloom query {db} "
              "\"SELECT path, error FROM files WHERE status = 'error'\"", file=out)


EXAMPLE_QUERIES = [
    "SELECT status, reject_reason, count(*) FROM clips GROUP BY ALL ORDER BY 3 DESC",
    "SELECT clip_id, blur, luma, motion, camera_motion FROM clips WHERE status = 'kept' LIMIT 5",
    "SELECT clip_id, ocr_text, text_area, text_stable FROM clips WHERE text_area > 0",
    "SELECT clip_id, dup_of FROM clips WHERE dup_of IS NOT NULL",
    "SELECT status, count(*) FROM videos GROUP BY status",
    "SELECT path, error FROM files WHERE status <> 'ok'",
    "SELECT video_id, shot_index, start_frame, end_frame, transition FROM shots ORDER BY 1, 2 LIMIT 20",
    "SELECT bucket, count(*) AS shards, sum(n_samples) AS samples FROM shards GROUP BY bucket",
]


def print_summary(out_dir: str, counts: dict[str, Any], outcome: Any = None) -> None:
    """The run's catalog counts; with ``outcome`` this run's inputs too; then example queries."""
    db = os.path.join(out_dir, "catalog.duckdb")
    print("\nvidloom curate: done")
    print(f"  videos      ok {counts['videos_ok']}, error {counts['videos_error']}")
    print(f"  shots       {counts['shots']}")
    rej = counts["clips_rejected"]
    rej_s = ", ".join(f"{k} {v}" for k, v in rej.items()) or "none"
    print(f"  clips       kept {counts['clips_kept']}, rejected {sum(rej.values())} ({rej_s})")
    print(f"  shards      {counts['shards']} ({counts['shard_samples']} samples) in {out_dir}/shards")
    print(f"  catalog     {db}")
    if outcome is not None:
        print_outcome(outcome, db, sys.stdout)
    print("\nTry:")
    for q in EXAMPLE_QUERIES[:3]:
        print(f'  vidloom query {db} "{q}"')
