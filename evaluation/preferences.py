"""The annotation tables in DuckDB: ``annotation_tasks`` (what to label) and ``preferences`` (the labels).

Other modules (the eval harness's ``evaluation.scoring.human_scores``, ``vidloom reward-train``) read
``preferences``; this module is the one place that knows its schema::

    annotation_tasks(task_id VARCHAR PRIMARY KEY, prompt VARCHAR, video_ids VARCHAR[],
                     video_paths VARCHAR[], source VARCHAR, created_at TIMESTAMP)
    preferences(label_id VARCHAR PRIMARY KEY, task_id VARCHAR, labeller VARCHAR, prompt VARCHAR,
                video_ids VARCHAR[], scores JSON, best VARCHAR, worst VARCHAR, skipped BOOLEAN,
                created_at TIMESTAMP)

- ``video_ids`` are stable ids of generated videos (``evaluation/annotate_tasks.py``: the index's
  ``video_id`` when it has one, else the path relative to the videos directory, ``/``-separated);
  ``video_paths`` are relative to the ``--videos`` directory that ``annotate serve`` is given.
- ``scores`` maps video id -> {"motion", "structure", "fidelity", "alignment"} -> 1..5 (``RUBRIC``);
  a skipped task has NULL scores, best and worst.
- **One row per (task, labeller).** ``label_id`` is a function of the pair (``label_id``), so a second
  submission of the same task by the same labeller (a double click, a resent form, two tabs) hits the
  primary key and is refused as "already recorded": the first submission stands. A skip is a
  submission too.
- ``created_at`` is UTC (naive TIMESTAMP).

Connections are short-lived (one per call): ``annotate serve`` then never holds the file, so the
report, ``reward-train`` and the eval harness can open it between requests. Opening waits (bounded)
while another process holds the lock (``curation.snapshot.connect_retrying``).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from curation.snapshot import connect_retrying

RUBRIC: tuple[str, ...] = ("motion", "structure", "fidelity", "alignment")

# Shown on the page next to every score. 5 and 1 are the wording (Seedance's rubric).
RUBRIC_TEXT: dict[str, dict[str, Any]] = {
    "motion": {
        "title": "Motion naturalness",
        "levels": {5: "fully physical: smooth, plausible motion",
                   4: "natural, a small hitch or slightly floaty moment",
                   3: "noticeable jitter, sliding or unnatural speed",
                   2: "frequent implausible motion, things morph as they move",
                   1: "severely broken: chaotic, frozen or impossible motion"}},
    "structure": {
        "title": "Structural coherence",
        "levels": {5: "perfectly consistent: shapes, bodies and objects stay intact",
                   4: "consistent, a minor transient deformation",
                   3: "visible deformation or a part appears/vanishes",
                   2: "objects lose their shape often, identity drifts",
                   1: "severely broken: melting, merging, no stable structure"}},
    "fidelity": {
        "title": "Visual fidelity",
        "levels": {5: "sharp and detailed, clean textures and lighting",
                   4: "mostly sharp, small artefacts or slight blur",
                   3: "soft or noisy, artefacts clearly visible",
                   2: "blurry, blotchy or heavily artefacted",
                   1: "severely broken: unrecognisable noise or colour fields"}},
    "alignment": {
        "title": "Prompt alignment",
        "levels": {5: "everything the prompt asks for: subjects, counts, colours, layout, action",
                   4: "the main subject and action, one detail off",
                   3: "partly: a subject, count, colour or relation is wrong",
                   2: "only loosely related to the prompt",
                   1: "severely broken: unrelated to the prompt"}},
}

TASKS_DDL = """CREATE TABLE IF NOT EXISTS annotation_tasks (
    task_id VARCHAR PRIMARY KEY, prompt VARCHAR, video_ids VARCHAR[], video_paths VARCHAR[],
    source VARCHAR, created_at TIMESTAMP)"""
PREFERENCES_DDL = """CREATE TABLE IF NOT EXISTS preferences (
    label_id VARCHAR PRIMARY KEY, task_id VARCHAR, labeller VARCHAR, prompt VARCHAR,
    video_ids VARCHAR[], scores JSON, best VARCHAR, worst VARCHAR, skipped BOOLEAN,
    created_at TIMESTAMP)"""


class AlreadyRecorded(Exception):
    """The (task, labeller) pair already has a row; ``row`` is that row."""

    def __init__(self, row: dict[str, Any]) -> None:
        super().__init__(f"already recorded: task {row['task_id']} by {row['labeller']} "
                         f"at {row['created_at']}")
        self.row = row


def utcnow() -> datetime.datetime:
    """Now in UTC, naive (DuckDB TIMESTAMP)."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def label_id(task_id: str, labeller: str) -> str:
    """The primary key of (task, labeller)'s row: 16 hex digits of sha256(task_id NUL labeller)."""
    return hashlib.sha256(f"{task_id}\0{labeller}".encode()).hexdigest()[:16]


@contextmanager
def connect(db: str | Path, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection; writable ones create the two tables if they are missing."""
    path = Path(db)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    con = connect_retrying(path, read_only=read_only)
    try:
        if not read_only:
            con.execute(TASKS_DDL)
            con.execute(PREFERENCES_DDL)
        yield con
    finally:
        con.close()


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                      [name]).fetchone()
    return bool(row and row[0])


def _rows(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description or []]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    if isinstance(row.get("scores"), str):
        row["scores"] = json.loads(row["scores"])
    return row


def read_preferences(db: str | Path, include_skipped: bool = True) -> list[dict[str, Any]]:
    """Every ``preferences`` row as a dict (``scores`` parsed from JSON), oldest first.

    A missing file or table gives []. Skipped rows (``skipped`` true, ``scores`` None) are included
    unless ``include_skipped`` is False.
    """
    if not Path(db).is_file():
        return []
    with connect(db, read_only=True) as con:
        if not _has_table(con, "preferences"):
            return []
        where = "" if include_skipped else "WHERE NOT coalesce(skipped, false)"
        rows = _rows(con.execute(f"SELECT * FROM preferences {where} ORDER BY created_at, label_id"))
    return [_decode(r) for r in rows]


def read_tasks(db: str | Path) -> list[dict[str, Any]]:
    """Every ``annotation_tasks`` row, in creation order (a missing file or table gives [])."""
    if not Path(db).is_file():
        return []
    with connect(db, read_only=True) as con:
        if not _has_table(con, "annotation_tasks"):
            return []
        return _rows(con.execute("SELECT * FROM annotation_tasks ORDER BY created_at, task_id"))


def get_task(db: str | Path, task_id: str) -> dict[str, Any] | None:
    with connect(db) as con:
        rows = _rows(con.execute("SELECT * FROM annotation_tasks WHERE task_id = ?", [task_id]))
    return rows[0] if rows else None


def insert_tasks(db: str | Path, tasks: Sequence[dict[str, Any]]) -> int:
    """Insert the tasks whose ``task_id`` is new (in one transaction); returns how many were added."""
    with connect(db) as con:
        have = {r[0] for r in con.execute("SELECT task_id FROM annotation_tasks").fetchall()}
        new = [t for t in tasks if t["task_id"] not in have]
        now = utcnow()
        con.execute("BEGIN")
        for i, t in enumerate(new):  # a microsecond apart: labellers see them in the given order
            when = t.get("created_at") or now + datetime.timedelta(microseconds=i)
            con.execute("INSERT INTO annotation_tasks VALUES (?, ?, ?, ?, ?, ?)",
                        [t["task_id"], t["prompt"], list(t["video_ids"]), list(t["video_paths"]),
                         t.get("source", ""), when])
        con.execute("COMMIT")
    return len(new)


def insert_label(db: str | Path, task: dict[str, Any], labeller: str,
                 scores: dict[str, dict[str, int]] | None, best: str | None, worst: str | None,
                 skipped: bool) -> dict[str, Any]:
    """Write (task, labeller)'s row and return it.

    Raises:
        AlreadyRecorded: the pair has a row already (nothing is written; the existing row is attached).
    """
    lid = label_id(task["task_id"], labeller)
    row = {"label_id": lid, "task_id": task["task_id"], "labeller": labeller, "prompt": task["prompt"],
           "video_ids": list(task["video_ids"]), "scores": scores, "best": best, "worst": worst,
           "skipped": bool(skipped), "created_at": utcnow()}
    with connect(db) as con:
        try:
            con.execute("INSERT INTO preferences VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [lid, row["task_id"], labeller, row["prompt"], row["video_ids"],
                         None if scores is None else json.dumps(scores, sort_keys=True), best, worst,
                         row["skipped"], row["created_at"]])
        except duckdb.ConstraintException:
            existing = _rows(con.execute("SELECT * FROM preferences WHERE label_id = ?", [lid]))
            raise AlreadyRecorded(_decode(existing[0])) from None
    return row


def get_label(db: str | Path, task_id: str, labeller: str) -> dict[str, Any] | None:
    with connect(db) as con:
        rows = _rows(con.execute("SELECT * FROM preferences WHERE label_id = ?",
                                 [label_id(task_id, labeller)]))
    return _decode(rows[0]) if rows else None


def progress(db: str | Path, labeller: str) -> dict[str, int]:
    """{"total" tasks, "labelled" and "skipped" by ``labeller``, "remaining"}."""
    with connect(db) as con:
        total = con.execute("SELECT count(*) FROM annotation_tasks").fetchone()
        done = con.execute("SELECT count(*) FILTER (WHERE NOT skipped), count(*) FILTER (WHERE skipped) "
                           "FROM preferences p JOIN annotation_tasks t USING (task_id) WHERE labeller = ?",
                           [labeller]).fetchone()
    n_total = int(total[0]) if total else 0
    labelled, skipped = (int(done[0] or 0), int(done[1] or 0)) if done else (0, 0)
    return {"total": n_total, "labelled": labelled, "skipped": skipped,
            "remaining": n_total - labelled - skipped}


def next_task(db: str | Path, labeller: str) -> dict[str, Any] | None:
    """The oldest task ``labeller`` has neither labelled nor skipped (None when all are done)."""
    with connect(db) as con:
        rows = _rows(con.execute(
            "SELECT * FROM annotation_tasks t WHERE NOT EXISTS (SELECT 1 FROM preferences p "
            "WHERE p.task_id = t.task_id AND p.labeller = ?) ORDER BY created_at, task_id LIMIT 1",
            [labeller]))
    return rows[0] if rows else None
