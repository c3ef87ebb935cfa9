"""The crash-safe step journal (docs/architecture.md "Crash safety").

Results reach the catalog in two moves. First a *part* is written: a directory
``<work_dir>/parts/<step>/<part_id>/`` holding one ``<table>.parquet`` per catalog
table, built in a temp directory and renamed into place, so a part either exists
whole or not at all. Then the driver commits all pending parts into DuckDB in one
transaction and deletes them. A kill between the two leaves parts that the next
run commits first; a kill after the transaction but before the deletion
re-ingests identical rows, which the primary keys turn into replacements.

Completion travels with the data: each part carries the ``stage_done`` rows of
the items whose results it holds, so an item is marked done exactly when its rows
land in the catalog.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation import score_columns
from curation.db import TABLE_COLUMNS, Catalog, ddl
from curation.schema import short_hash
from curation.snapshot import fsync_path
from pipelines.runner import Runner
from pipelines.stage import Stage

TMP_PREFIX = ".tmp-"
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

_ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "DOUBLE": pa.float64(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us"),
}

# a long step publishes its finished items this often, so the catalog's readers see progress
COMMIT_EVERY_S = 30.0

StageKey = tuple[str, int, str]  # (stage name, version, params hash)


def arrow_schema(table: str) -> pa.Schema:
    """The Parquet schema of a catalog table: ``TABLE_COLUMNS`` typed by the DuckDB DDL.

    Explicit types keep a part's schema stable when a column is None in every row. The clips
    table's score columns are the registered scorers' (curation/score_columns.py): the cache
    keys on the registry's generation, so a scorer registered later gets its columns.
    """
    return _arrow_schema(table, score_columns.generation())


@functools.cache
def _arrow_schema(table: str, _generation: int) -> pa.Schema:
    body = re.search(rf"CREATE TABLE IF NOT EXISTS {table} \((.*?)\n\);", ddl(), re.DOTALL)
    if body is None:
        raise KeyError(f"no DDL for table {table!r}")
    ddl_types = dict(re.findall(r"(\w+) (VARCHAR|JSON|DOUBLE|BIGINT|INTEGER|BOOLEAN|TIMESTAMP)\b", body[1]))
    missing = [c for c in TABLE_COLUMNS[table] if c not in ddl_types]
    if missing:
        raise KeyError(f"columns {missing} of {table!r} are not in the DDL")
    return pa.schema([(c, _ARROW_TYPES[ddl_types[c]]) for c in TABLE_COLUMNS[table]])


def _to_arrow(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    """The rows as a typed table of the columns they carry (a row without a column gets NULL).

    A part may carry only some columns of a table (a scorer writes its own score columns):
    committing it updates those columns and leaves the others as they are.
    """
    full = arrow_schema(table)
    present = {k for r in rows for k in r}
    unknown = present - set(full.names)
    if unknown:
        raise ValueError(f"unknown columns for {table!r}: {sorted(unknown)}")
    schema = pa.schema([f for f in full if f.name in present])
    columns = {f.name: pa.array([_cell(r.get(f.name)) for r in rows], type=f.type) for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)


def _cell(v: Any) -> Any:
    """JSON columns take dicts and lists, as ``Catalog.upsert`` does."""
    if isinstance(v, dict | list):
        return json.dumps(v, sort_keys=True, ensure_ascii=False)
    return v


class StepJournal:
    """Parquet parts of one step under ``<work_dir>/parts/<step>/``."""

    def __init__(self, work_dir: Path, step: str) -> None:
        self.step = step
        self.dir = Path(work_dir) / "parts" / step

    def write_part(self, part_id: str, tables: dict[str, list[dict[str, Any]]]) -> Path:
        """Write one part atomically; the same ``part_id`` replaces an earlier part.

        Args:
            part_id: deterministic name (e.g. the item id), so a rerun overwrites.
            tables: catalog table name -> rows (dicts keyed by column name).
        """
        if not part_id or part_id.startswith(".") or "/" in part_id:
            raise ValueError(f"bad part id {part_id!r}")
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f"{TMP_PREFIX}{part_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        for table, rows in tables.items():
            if table not in TABLE_COLUMNS:
                raise ValueError(f"unknown catalog table {table!r}")
            if rows:
                pq.write_table(_to_arrow(table, rows), tmp / f"{table}.parquet")
                fsync_path(tmp / f"{table}.parquet")
        final = self.dir / part_id
        if final.exists():  # os.replace cannot replace a non-empty directory: move the old one aside
            old = self.dir / f"{TMP_PREFIX}old-{part_id}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
        fsync_path(self.dir)
        return final

    def pending_parts(self) -> list[Path]:
        """Complete parts, sorted by name; removes leftover temp dirs of killed writers.

        Call it only while no writer is active on this step.
        """
        if not self.dir.exists():
            return []
        parts = []
        for d in sorted(self.dir.iterdir()):
            if d.name.startswith(TMP_PREFIX):
                shutil.rmtree(d, ignore_errors=True)
            elif d.is_dir():
                parts.append(d)
        return parts

    def commit(self, catalog: Catalog) -> int:
        """Ingest every pending part in one transaction, then delete them. Returns parts committed."""
        parts = self.pending_parts()
        if not parts:
            return 0
        with catalog.transaction():
            catalog.ingest_parts(parts)
        for d in parts:
            shutil.rmtree(d)
        return len(parts)


def done_rows(stage_key: StageKey, item_ids: Iterable[str]) -> list[dict[str, Any]]:
    name, version, phash = stage_key
    return [{"item_id": i, "stage": name, "version": version, "params_hash": phash} for i in item_ids]


def part_name(item_ids: list[str]) -> str:
    """A deterministic, file-safe part id: the item id itself when it is a plain name."""
    if len(item_ids) == 1 and _SAFE_ID.fullmatch(item_ids[0]):
        return item_ids[0]
    return short_hash(*sorted(item_ids))


Tables = dict[str, list[dict[str, Any]]]


def run_step(
    catalog: Catalog,
    journal: StepJournal,
    runner: Runner,
    stages: list[Stage[Any, Any]],
    tasks: Iterable[Any],
    item_id: Callable[[Any], str],
    to_tables: Callable[[Any], Tables],
    stage_key: StageKey,
    batch_parts: int = 1,
    retry_errors: bool = False,
    progress: bool = False,
    commit_every_s: float = COMMIT_EVERY_S,
) -> dict[str, int]:
    """Run one resumable step: skip done items, journal results as they stream, commit.

    Contract: the last stage yields exactly one task per input item, carrying all of
    that item's results, and ``item_id`` gives the same id for an input task and its
    output task (fan-out happens between steps, through the catalog, or is gathered
    back into one task by the last stage). A second output for one item is an error,
    because that item's part would already have marked it done.

    Args:
        item_id: the id of an input or output task (e.g. the path or clip id).
        to_tables: an output task -> catalog rows ({table: [row, ...]}); it is called on
            tasks with ``error`` set too, and should record the error (e.g. a 'error' row).
        stage_key: (stage name, version, params hash) recorded in ``stage_done``.
        batch_parts: items per part (fewer, larger Parquet files).
        retry_errors: leave items whose task has ``error`` set unmarked, so a rerun retries
            them; by default the error is their recorded outcome.
        commit_every_s: commit the parts written so far (and so publish them to readers of the
            catalog) at most this often during the step, not only at its end.

    Returns:
        Counts: recovered (parts of a killed run committed first), skipped (already done),
        submitted, written (output tasks), errors, dropped (no output; marked done), parts.
    """
    counts = {
        "recovered": journal.commit(catalog),
        "skipped": 0,
        "submitted": 0,
        "written": 0,
        "errors": 0,
        "dropped": 0,
        "parts": 0,
    }
    done = catalog.done_items(*stage_key)
    submitted: set[str] = set()
    finished: set[str] = set()
    batch: list[tuple[str, Tables]] = []

    def todo() -> Iterator[Any]:
        for t in tasks:
            i = item_id(t)
            if i in done or i in submitted:
                counts["skipped"] += 1
                continue
            submitted.add(i)
            yield t

    def flush() -> None:
        if batch:
            merged: Tables = {}
            for _, tables in batch:
                for table, rows in tables.items():
                    merged.setdefault(table, []).extend(rows)
            journal.write_part(part_name([i for i, _ in batch]), merged)
            counts["parts"] += 1
            batch.clear()

    # closing(): if anything below raises, the runner stops its pipeline instead of running on.
    last_commit = time.monotonic()
    with contextlib.closing(runner.run(stages, todo(), progress=progress, desc=stage_key[0])) as outs:
        for out in outs:
            i = item_id(out)
            if i not in submitted or i in finished:
                raise ValueError(
                    f"{stage_key[0]}: unexpected output for item {i!r}; the last stage "
                    "must return exactly one task per input item"
                )
            finished.add(i)
            tables = dict(to_tables(out))
            failed = bool(getattr(out, "error", None))
            counts["written"] += 1
            counts["errors"] += failed
            if not (failed and retry_errors):
                tables["stage_done"] = [*tables.get("stage_done", []), *done_rows(stage_key, [i])]
            batch.append((i, tables))
            if len(batch) >= batch_parts:
                flush()
                if time.monotonic() - last_commit >= commit_every_s:
                    journal.commit(catalog)  # a data engineer's query sees the step's progress
                    last_commit = time.monotonic()
    flush()
    counts["submitted"] = len(submitted)
    dropped = sorted(submitted - finished)
    if dropped:  # a drop is a decision the run completed: record it, or every rerun recomputes it
        journal.write_part(f"dropped-{part_name(dropped)}", {"stage_done": done_rows(stage_key, dropped)})
        counts["dropped"] = len(dropped)
        counts["parts"] += 1
    journal.commit(catalog)
    return counts
