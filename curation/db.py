"""The catalog: the only module that opens DuckDB.

One file per output root (``<out>/catalog.duckdb``). Only the driver of a step
writes it (DuckDB allows one writer per file); workers produce Parquet parts that
:func:`Catalog.ingest_parts` upserts. Every table has a primary key, so a rerun
replaces rows instead of duplicating them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from curation import schema, score_columns, snapshot

_DDL_TEMPLATE = """
CREATE TABLE IF NOT EXISTS videos (
    video_id VARCHAR PRIMARY KEY, path VARCHAR, sha256 VARCHAR, status VARCHAR, error VARCHAR,
    duration_s DOUBLE, fps DOUBLE, n_frames BIGINT, width INTEGER, height INTEGER, codec VARCHAR,
    rotation INTEGER, has_audio BOOLEAN, vfr BOOLEAN, size_bytes BIGINT, source_meta JSON,
    ingested_at TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS files (
    path VARCHAR PRIMARY KEY, video_id VARCHAR, size_bytes BIGINT, status VARCHAR, error VARCHAR
);
CREATE TABLE IF NOT EXISTS shots (
    video_id VARCHAR, shot_index INTEGER, start_frame BIGINT, end_frame BIGINT,
    start_s DOUBLE, end_s DOUBLE, detector VARCHAR, transition VARCHAR,
    transition_start BIGINT, transition_end BIGINT, transition_score DOUBLE,
    PRIMARY KEY (video_id, shot_index)
);
CREATE TABLE IF NOT EXISTS clips (
    clip_id VARCHAR PRIMARY KEY, video_id VARCHAR, shot_index INTEGER,
    start_frame BIGINT, end_frame BIGINT, start_s DOUBLE, end_s DOUBLE,
    width INTEGER, height INTEGER, fps DOUBLE, path VARCHAR, status VARCHAR, reject_reason VARCHAR,
    codec VARCHAR, extract_mode VARCHAR, n_frames BIGINT, bytes BIGINT, split_hash VARCHAR,
    score_error VARCHAR, not_scored VARCHAR, extract_error VARCHAR, caption_error VARCHAR,
    caption_failed VARCHAR,
    extract_crop_x INTEGER, extract_crop_y INTEGER, extract_crop_w INTEGER, extract_crop_h INTEGER,
    crop_reason VARCHAR,
    {score_columns}
);
CREATE TABLE IF NOT EXISTS captions (
    clip_id VARCHAR, lang VARCHAR, text VARCHAR, kind VARCHAR, model VARCHAR, prompt_sha VARCHAR,
    backend VARCHAR, tokens INTEGER, finish_reason VARCHAR, checks JSON, revision VARCHAR, params JSON,
    prompt_tokens INTEGER, created_at TIMESTAMP DEFAULT current_timestamp,
    fields_version VARCHAR, content_class VARCHAR, camera_movement VARCHAR, camera_speed VARCHAR,
    shot_size VARCHAR, camera_angle VARCHAR, lighting VARCHAR, light_source VARCHAR, style VARCHAR,
    scene VARCHAR, shot_count INTEGER, subjects JSON, actions JSON, text_overlays JSON, fields JSON,
    PRIMARY KEY (clip_id, lang, kind)
);
CREATE TABLE IF NOT EXISTS caption_checks (
    clip_id VARCHAR, field VARCHAR, captioned VARCHAR, measured VARCHAR, agree BOOLEAN,
    detail VARCHAR, backend VARCHAR,
    PRIMARY KEY (clip_id, field)
);
CREATE TABLE IF NOT EXISTS shards (
    shard VARCHAR PRIMARY KEY, path VARCHAR, n_samples BIGINT, bytes BIGINT, sha256 VARCHAR,
    bucket VARCHAR, dataset VARCHAR, export_root VARCHAR, selection VARCHAR
);
CREATE TABLE IF NOT EXISTS balance_counts (
    export_root VARCHAR, dataset VARCHAR, mode VARCHAR, view_name VARCHAR, class_name VARCHAR,
    target DOUBLE, pool_clips BIGINT, pool_share DOUBLE, achieved_share DOUBLE, tv DOUBLE,
    PRIMARY KEY (export_root, view_name, class_name)
);
CREATE VIEW IF NOT EXISTS dup_clusters AS
    SELECT coalesce(dup_of, clip_id) AS cluster, count(*) AS members,
           count(*) FILTER (WHERE status = 'kept') AS kept, list(clip_id ORDER BY clip_id) AS clip_ids
    FROM clips GROUP BY 1 HAVING count(*) > 1;
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, started_at TIMESTAMP, finished_at TIMESTAMP, config_yaml VARCHAR,
    git_sha VARCHAR, counts JSON, flow_run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS stage_done (
    item_id VARCHAR, stage VARCHAR, version INTEGER, params_hash VARCHAR,
    finished_at TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (item_id, stage, version, params_hash)
);
"""


def ddl() -> str:
    """The catalog's DDL; the clips table's score columns are the registered scorers'
    (curation/score_columns.py), so a scorer added from its own file gets its columns."""
    cols = ", ".join(f"{c.name} {c.sql_type}" for c in score_columns.columns())
    return _DDL_TEMPLATE.replace("{score_columns}", cols)


DDL = ddl()  # as of import (the built-in scorers); ddl() has the columns registered since


def column_types() -> dict[str, str]:
    """column -> DuckDB type, as the DDL declares it (for adding columns to an older catalog)."""
    return dict(re.findall(r"(\w+) (VARCHAR|JSON|DOUBLE|BIGINT|INTEGER|BOOLEAN|TIMESTAMP)\b", ddl()))


_CLIP_ROW = tuple(k for k in schema.clip_row(schema.Clip("", "", 0, 0, 0, 0.0, 0.0, 0, 0, 0.0)) if k not in
                  score_columns.names())


class _TableColumns(Mapping[str, tuple[str, ...]]):
    """table -> its columns; the clips table's end with the registered score columns (live)."""

    _static: dict[str, tuple[str, ...]] = {
        "videos": tuple(f.name for f in dataclasses.fields(schema.Video)),
        "files": tuple(f.name for f in dataclasses.fields(schema.InputFile)),
        "shots": tuple(f.name for f in dataclasses.fields(schema.Shot)),
        "clips": (),
        "captions": tuple(f.name for f in dataclasses.fields(schema.Caption)),
        "caption_checks": tuple(f.name for f in dataclasses.fields(schema.CaptionCheck)),
        "shards": tuple(f.name for f in dataclasses.fields(schema.ShardInfo)),
        "stage_done": ("item_id", "stage", "version", "params_hash"),
        "runs": ("run_id", "started_at", "finished_at", "config_yaml", "git_sha", "counts", "flow_run_id"),
    }

    def __getitem__(self, table: str) -> tuple[str, ...]:
        if table == "clips":
            return (*_CLIP_ROW, *score_columns.names())
        return self._static[table]

    def __iter__(self) -> Iterator[str]:
        return iter(self._static)

    def __len__(self) -> int:
        return len(self._static)


TABLE_COLUMNS: Mapping[str, tuple[str, ...]] = _TableColumns()


class Catalog:
    """A DuckDB catalog. Use as a context manager; ``read_only`` for queries.

    ``path`` is the published catalog (``<out>/catalog.duckdb``). A writer works on the private
    live file beside it and publishes after every commit and when it closes; a reader opens the
    published file (curation/snapshot.py). Either waits, bounded, for another process's lock.
    """

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only:
            if not self.path.exists():
                hint = " (a run is starting: it publishes after its first commit)" if (
                    snapshot.live_path(self.path).exists()) else ""
                raise FileNotFoundError(f"no catalog at {self.path}{hint}")
            self.con = snapshot.connect_retrying(self.path, read_only=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        live = snapshot.live_path(self.path)
        if self.path.exists() and not live.exists():
            snapshot.adopt(self.path)
        self.con = snapshot.connect_retrying(live, read_only=False)
        self.con.execute(ddl())
        self._add_missing_columns()
        if snapshot.is_stale(self.path):
            self.publish()

    def _add_missing_columns(self) -> None:
        """A catalog made by an older vidloom, or before a scorer registered, gets the columns
        added since (as NULLs)."""
        self._columns_generation = score_columns.generation()
        types = column_types()
        for table, cols in TABLE_COLUMNS.items():
            have = {r[0] for r in self.con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
            ).fetchall()}
            for c in cols:
                if c not in have:
                    self.con.execute(f"ALTER TABLE {table} ADD COLUMN {c} {types.get(c, 'VARCHAR')}")

    def sync_columns(self) -> None:
        """Add the score columns a scorer registered since this catalog was opened (a writer)."""
        if not self.read_only and self._columns_generation != score_columns.generation():
            self._add_missing_columns()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close; a writer publishes first (also after a failed step: what it committed stays)."""
        try:
            if not self.read_only:
                self.publish()
        finally:
            self.con.close()

    def publish(self) -> None:
        """Make everything committed so far visible to readers of ``path``."""
        snapshot.publish(self.con, self.path)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all; readers see them once committed."""
        self.con.begin()
        try:
            yield
        except BaseException:
            self.con.rollback()
            raise
        self.con.commit()
        self.publish()

    # --- writes -----------------------------------------------------------------
    def upsert(self, table: str, rows: Sequence[dict[str, Any]]) -> int:
        """Insert or replace rows (by primary key). Returns the number written."""
        if not rows:
            return 0
        self.sync_columns()
        cols = TABLE_COLUMNS[table]
        placeholders = ", ".join("?" for _ in cols)
        values = [[_sql_value(r.get(c)) for c in cols] for r in rows]
        self.con.executemany(
            f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES ({placeholders})", values
        )
        return len(rows)

    def upsert_objects(self, table: str, objs: Iterable[Any]) -> int:
        return self.upsert(table, [schema.row(o) for o in objs])

    def ingest_parts(self, part_dirs: Sequence[Path]) -> int:
        """Upsert every ``<part>/<table>.parquet`` of the given part directories.

        A part file may hold a subset of a table's columns (a scorer's own): only those columns
        are written, the row's others are left as they are (DuckDB's INSERT OR REPLACE updates
        the listed columns). Files are grouped by their column set, in part-name order.
        """
        import pyarrow.parquet as pq

        self.sync_columns()
        n = 0
        for table, cols in TABLE_COLUMNS.items():
            files = sorted(
                str(d / f"{table}.parquet") for d in part_dirs if (d / f"{table}.parquet").exists()
            )
            groups: dict[tuple[str, ...], list[str]] = {}
            for f in files:
                names = set(pq.read_schema(f).names)
                groups.setdefault(tuple(c for c in cols if c in names), []).append(f)
            for present, group in groups.items():
                col_list = ", ".join(present)
                self.con.execute(
                    f"INSERT OR REPLACE INTO {table} ({col_list}) "
                    f"SELECT {col_list} FROM read_parquet(?, union_by_name=true)",
                    [group],
                )
                n += len(group)
        return n

    def mark_done(self, stage: str, version: int, params_hash: str, item_ids: Iterable[str]) -> None:
        self.upsert(
            "stage_done",
            [
                {"item_id": i, "stage": stage, "version": version, "params_hash": params_hash}
                for i in item_ids
            ],
        )

    def resolve_duplicate_files(self) -> None:
        """Identical bytes under several paths: the first path (sorted) owns the ``videos`` row,
        the others are ``files`` rows with status 'duplicate'. Deterministic whatever the order."""
        first = "SELECT video_id, min(path) AS first FROM files GROUP BY video_id"
        self.con.execute(f"""
            UPDATE videos SET path = f.first FROM ({first}) f
            WHERE videos.video_id = f.video_id AND videos.path <> f.first""")
        self.con.execute(f"""
            UPDATE files SET status = 'duplicate', error = 'same bytes as ' || f.first FROM ({first}) f
            WHERE files.video_id = f.video_id AND files.path <> f.first AND files.status = 'ok'""")

    def replace_shards(self, infos: Sequence[schema.ShardInfo], export_root: str) -> None:
        """The shards of ``export_root`` become exactly ``infos``: the version its ``latest`` now points at
        (rows of earlier versions go; their files stay until ``vidloom gc``)."""
        with self.transaction():
            self.con.execute("DELETE FROM shards WHERE export_root = ? OR export_root IS NULL", [export_root])
            self.upsert_objects("shards", infos)

    def update_columns(self, table: str, rows: Sequence[dict[str, Any]]) -> int:
        """Set the given columns of existing rows (by primary key); other columns keep their values."""
        if not rows:
            return 0
        import pyarrow as pa

        self.sync_columns()
        cols = [c for c in TABLE_COLUMNS[table] if c in rows[0]]
        data = pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows])
        self.con.register("_vidloom_update", data)
        try:
            self.con.execute(
                f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) "
                f"SELECT {', '.join(cols)} FROM _vidloom_update"
            )
        finally:
            self.con.unregister("_vidloom_update")
        return len(rows)

    def record_run(
        self,
        run_id: str,
        started_at: Any,
        finished_at: Any,
        config_yaml: str,
        git_sha: str,
        counts: dict[str, Any],
        flow_run_id: str | None = None,
    ) -> None:
        """One row per curation run; ``flow_run_id`` is the Prefect flow run's id (None without Prefect)."""
        self.con.execute(
            f"INSERT OR REPLACE INTO runs ({', '.join(TABLE_COLUMNS['runs'])}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [run_id, started_at, finished_at, config_yaml, git_sha, json.dumps(counts, sort_keys=True),
             flow_run_id],
        )

    # --- reads ------------------------------------------------------------------
    def done_items(self, stage: str, version: int, params_hash: str) -> set[str]:
        rows = self.con.execute(
            "SELECT item_id FROM stage_done WHERE stage = ? AND version = ? AND params_hash = ?",
            [stage, version, params_hash],
        ).fetchall()
        return {r[0] for r in rows}

    def query(self, sql: str, params: Sequence[Any] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self.con.execute(sql, params or [])
        cols = [d[0] for d in cur.description] if cur.description else []
        return cols, cur.fetchall()

    def dicts(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        cols, rows = self.query(sql, params)
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def videos(self, status: str | None = None) -> list[schema.Video]:
        where = "WHERE status = ?" if status else ""
        rows = self.dicts(f"SELECT * FROM videos {where} ORDER BY video_id", [status] if status else None)
        return [_build(schema.Video, r) for r in rows]

    def shots(self, video_id: str) -> list[schema.Shot]:
        rows = self.dicts("SELECT * FROM shots WHERE video_id = ? ORDER BY shot_index", [video_id])
        return [_build(schema.Shot, r) for r in rows]

    def clips(self, where: str = "TRUE", params: Sequence[Any] | None = None) -> list[schema.Clip]:
        rows = self.dicts(f"SELECT * FROM clips WHERE {where} ORDER BY clip_id", params)
        out = []
        for r in rows:
            scores = schema.ClipScores(**{k: r.pop(k, None) for k in score_columns.names()})
            out.append(_build(schema.Clip, r, scores=scores))
        return out

    def captions(self, clip_id: str) -> list[schema.Caption]:
        rows = self.dicts("SELECT * FROM captions WHERE clip_id = ? ORDER BY lang, kind", [clip_id])
        for r in rows:
            for col in ("checks", "subjects", "actions", "text_overlays", "fields"):
                if r.get(col) is not None and not isinstance(r[col], str):
                    r[col] = json.dumps(r[col], ensure_ascii=False, sort_keys=True)
        return [_build(schema.Caption, r) for r in rows]

    def counts(self) -> dict[str, Any]:
        """The run summary: videos ok/error, shots, clips kept/rejected per reason, shards."""
        one = lambda sql: self.con.execute(sql).fetchone()[0]  # noqa: E731
        reasons = self.con.execute(
            "SELECT coalesce(reject_reason, '?'), count(*) FROM clips WHERE status = 'rejected' "
            "GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall()
        return {
            "videos_ok": one("SELECT count(*) FROM videos WHERE status = 'ok'"),
            "videos_error": one("SELECT count(*) FROM videos WHERE status = 'error'"),
            "shots": one("SELECT count(*) FROM shots"),
            "clips_kept": one("SELECT count(*) FROM clips WHERE status = 'kept'"),
            "clips_rejected": dict(reasons),
            "shards": one("SELECT count(*) FROM shards"),
            "shard_samples": one("SELECT coalesce(sum(n_samples), 0) FROM shards"),
        }


def _sql_value(v: Any) -> Any:
    if isinstance(v, dict | list):
        return json.dumps(v, sort_keys=True, ensure_ascii=False)
    return v


def _build(cls: type, r: dict[str, Any], **extra: Any) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in r.items() if k in names}, **extra)


def query_readonly(db_path: str | Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one user SQL statement on a catalog, sandboxed (``vidloom query``; curation/sandbox.py)."""
    from curation.sandbox import run_query

    return run_query(db_path, sql)
