"""What ``vidloom curate`` checks before and after a run, so its exit status tells the truth.

Before: the sources must name at least one video file (``ingest.extensions``), else nothing is
started (exit 1). After: each input file's outcome is read from the catalog (``files`` joined to
``videos``). When no input could be processed (every file errored: unreadable, absurd, failed to
decode) the command exits 1; a partial failure exits 0 and lists the failed files. A file whose
bytes equal another input's ('duplicate') counts as processed when that content was.
"""

from __future__ import annotations

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
