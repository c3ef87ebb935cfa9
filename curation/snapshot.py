"""A catalog that can be read while a run writes it: a private live file, published snapshots.

DuckDB lets one process hold a database file read-write, and while it does no other process can
open that file at all, not even read-only; a reader's open connection in turn keeps every writer
out. So vidloom's writers (the driver of each curation step, ``vidloom export``, ``vidloom sft``)
never open ``catalog.duckdb`` itself. They work on a private *live* file beside it,
``.catalog.duckdb.live``, and publish ``catalog.duckdb`` from it after every commit:
``CHECKPOINT`` (the WAL folded into the file), a copy to a temporary name, ``fsync``, then
``os.replace`` over ``catalog.duckdb``.

What readers get:
- ``vidloom query``, the ``duckdb`` CLI (``duckdb -readonly out/catalog.duckdb``) and
  ``duckdb.connect(path, read_only=True)`` open ``catalog.duckdb`` at any time and see the last
  committed state: never a half-written step.
- A reader that keeps its connection open keeps the version it opened (the replaced file lives
  on until it closes) and blocks no writer.
- The published file is for reading. Writes made to it directly are replaced by the next
  publish: change the catalog through vidloom.

Chosen over holding the write connection only while committing (a reader that keeps a notebook
connection open would then stall the run) and over DuckLake (a second storage format for the
same tables). The cost is one file copy per commit, and a second copy of the catalog on disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import duckdb

LOCK_WAIT_S = 30.0  # how long an open waits for another process's lock before it fails


def live_path(published: Path) -> Path:
    """The writers' private file for the catalog published at ``published``."""
    return published.with_name(f".{published.name}.live")


def connect_retrying(path: Path, read_only: bool, wait_s: float | None = None) -> duckdb.DuckDBPyConnection:
    """A connection to ``path``, waiting (bounded) while another process holds its lock.

    Read-only, it is a fresh in-memory DuckDB with the file attached (``READ_ONLY``) as the
    default database, not ``duckdb.connect(path, read_only=True)``: DuckDB hands a process that
    already has the path open its cached instance, which shows the file as it was when first
    opened and shares its settings, so a sandbox's locked settings would leak into it.
    """
    wait = LOCK_WAIT_S if wait_s is None else wait_s
    deadline = time.monotonic() + wait
    delay = 0.05
    while True:
        try:
            if not read_only:
                return duckdb.connect(str(path))
            con = duckdb.connect(":memory:")
            try:
                con.execute(f"ATTACH '{_sql_string(path)}' AS catalog (READ_ONLY)")
                con.execute("USE catalog")
            except BaseException:
                con.close()
                raise
            return con
        except duckdb.IOException as e:
            if "lock" not in str(e).lower():
                raise
            if time.monotonic() >= deadline:
                who = "another vidloom run or export is writing it" if not read_only else (
                    "a process holds it open read-write (open the catalog with `duckdb -readonly`)")
                raise CatalogBusy(
                    f"catalog {path} is locked after {wait:.0f} s: {who}. DuckDB said: {e}"
                ) from e
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _sql_string(path: Path) -> str:
    """``path`` inside a single-quoted SQL literal (ATTACH takes no parameters)."""
    return str(path).replace("'", "''")


class CatalogBusy(RuntimeError):
    """The catalog stayed locked by another process for longer than the wait allows."""


def adopt(published: Path) -> None:
    """Make the live file from a catalog that has none (one written before snapshots, or a copy).

    A catalog left with a WAL by a killed writer is opened once read-write first, so DuckDB
    replays the WAL into it before it is copied.
    """
    live = live_path(published)
    wal = published.with_name(published.name + ".wal")
    if wal.exists():
        connect_retrying(published, read_only=False).close()
    tmp = live.with_name(f"{live.name}.tmp-{uuid.uuid4().hex[:8]}")
    shutil.copyfile(published, tmp)
    fsync_path(tmp)
    os.replace(tmp, live)


def publish(con: duckdb.DuckDBPyConnection, published: Path) -> None:
    """Checkpoint the live connection and atomically replace ``published`` with a copy of it.

    Nothing is copied when the published file is strictly newer than the checkpointed live file
    (no write since the last publish: a step that only read, a commit of nothing). Strictly: file
    times tick coarsely, so a write in the tick of the last copy still publishes.
    """
    con.execute("CHECKPOINT")
    live = live_path(published)
    if published.exists() and published.stat().st_mtime_ns > live.stat().st_mtime_ns:
        return
    tmp = published.with_name(f".{published.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        copy_without_opening(live, tmp)
        fsync_path(tmp)
        # a WAL beside the published file belongs to someone who wrote to a snapshot; DuckDB would
        # replay it onto the new file
        published.with_name(published.name + ".wal").unlink(missing_ok=True)
        os.replace(tmp, published)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(published.parent)


def copy_without_opening(src: Path, dst: Path) -> None:
    """Copy ``src`` in a child process: this process must never open the live file itself.

    DuckDB locks its file with POSIX record locks, and POSIX drops every lock a process holds on
    a file as soon as that process closes *any* descriptor of it: a ``shutil.copyfile`` here would
    silently unlock the live file and let a second writer in.
    """
    res = subprocess.run(["cp", "--", str(src), str(dst)], capture_output=True, text=True, timeout=3600)
    if res.returncode != 0:
        raise OSError(f"could not copy {src} to {dst}: {res.stderr.strip()}")


def is_stale(published: Path) -> bool:
    """True when the published file is missing or older than the live one (a kill before publish)."""
    live = live_path(published)
    if not published.exists():
        return True
    return live.exists() and published.stat().st_mtime_ns < live.stat().st_mtime_ns


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (so a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
