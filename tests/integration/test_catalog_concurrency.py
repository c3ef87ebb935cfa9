"""The catalog can be read at any time during a run, and a reader never holds the run up.

A real ``vidloom curate`` runs in a subprocess while this process polls the catalog the three ways
a data engineer would: ``vidloom query`` (in-process ``main``), ``duckdb.connect(path,
read_only=True)``, and one read-only connection kept open from the start of the run to its end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from curation.db import Catalog
from vidloom.cli import main

SUBSET = ("demo_cuts_640x360.mp4",)


def read_elsewhere(db: Path, sql: str) -> str:
    """One value of ``sql``, read by ``duckdb.connect(db, read_only=True)`` in a new process."""
    script = (f"import duckdb; con = duckdb.connect({str(db)!r}, read_only=True); "
              f"print(con.execute({sql!r}).fetchone()[0])")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def test_writer_publishes_and_readers_never_block_it(tmp_path: Path) -> None:
    db = tmp_path / "catalog.duckdb"
    writer = Catalog(db)
    try:
        held = duckdb.connect(str(db), read_only=True)  # a notebook's connection, kept open
        with writer.transaction():
            writer.upsert("clips", [{"clip_id": "a", "status": "kept"}])
        # the held reader keeps the version it opened; a new reader (another process: DuckDB
        # hands a process that still has the path open its cached instance) sees the commit
        assert held.execute("SELECT count(*) FROM clips").fetchone()[0] == 0
        assert read_elsewhere(db, "SELECT string_agg(clip_id) FROM clips") == "a"
        writer.upsert("clips", [{"clip_id": "b", "status": "kept"}])  # autocommit, published at close
        held.close()
    finally:
        writer.close()
    with duckdb.connect(str(db), read_only=True) as fresh:
        assert fresh.execute("SELECT count(*) FROM clips").fetchone()[0] == 2


def test_a_writer_that_changes_nothing_publishes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "catalog.duckdb"
    with Catalog(db) as cat:
        cat.upsert("clips", [{"clip_id": "a", "status": "kept"}])
    time.sleep(0.05)  # past the file-time tick of that publish
    first = db.stat().st_ino
    with Catalog(db) as cat:  # reads only
        assert cat.query("SELECT count(*) FROM clips")[1] == [(1,)]
    assert db.stat().st_ino == first  # not replaced: no copy was made
    with Catalog(db) as cat:
        cat.upsert("clips", [{"clip_id": "b", "status": "kept"}])
    assert db.stat().st_ino != first
    assert read_elsewhere(db, "SELECT count(*) FROM clips") == "2"


def test_a_second_writer_waits_then_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from curation import snapshot

    db = tmp_path / "catalog.duckdb"
    script = (
        "import sys, time\nfrom curation.db import Catalog\n"
        f"c = Catalog({str(db)!r})\nprint('open', flush=True)\ntime.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
        monkeypatch.setattr(snapshot, "LOCK_WAIT_S", 1.0)
        t0 = time.monotonic()
        with pytest.raises(snapshot.CatalogBusy, match="another vidloom run or export is writing it"):
            Catalog(db)
        assert 0.9 < time.monotonic() - t0 < 10
        with duckdb.connect(str(db), read_only=True) as reader:  # reading still works meanwhile
            assert reader.execute("SELECT count(*) FROM clips").fetchone()[0] == 0
    finally:
        proc.kill()
        proc.wait()


def test_an_older_catalog_is_adopted(tmp_path: Path) -> None:
    """A catalog written before snapshots (one file, opened directly) keeps its rows."""
    from curation.db import DDL

    db = tmp_path / "catalog.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(DDL)
        con.execute("INSERT INTO clips (clip_id, status) VALUES ('old', 'kept')")
    with Catalog(db) as cat:
        assert cat.query("SELECT clip_id FROM clips")[1] == [("old",)]
        cat.upsert("clips", [{"clip_id": "new", "status": "kept"}])
    with Catalog(db, read_only=True) as cat:
        assert cat.query("SELECT clip_id FROM clips ORDER BY 1")[1] == [("new",), ("old",)]


def test_catalog_is_queryable_throughout_a_curate_run(
    demo_inputs: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = demo_inputs(SUBSET)
    out = tmp_path / "out"
    db = out / "catalog.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidloom.cli", "curate", str(inputs), "--out", str(out), "--preset", "tiny",
         "--no-prefect", "--runner", "sequential", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    held: duckdb.DuckDBPyConnection | None = None
    seen: list[tuple[int, int, int]] = []  # (videos, clips, shards) per poll
    failures: list[str] = []
    counts = ("SELECT (SELECT count(*) FROM videos) || ',' || (SELECT count(*) FROM clips) || ',' || "
              "(SELECT count(*) FROM shards) AS n")
    try:
        while proc.poll() is None:
            if db.exists():
                if held is None:  # a notebook's connection, kept open for the whole run
                    held = duckdb.connect(str(db), read_only=True)
                if len(seen) % 4 == 3:  # a user's own process: duckdb.connect(path, read_only=True)
                    try:
                        text = read_elsewhere(db, counts)
                    except subprocess.CalledProcessError as e:
                        failures.append(e.stderr)
                        continue
                elif main(["query", str(db), counts, "--json"]) == 0:
                    text = json.loads(capsys.readouterr().out)[0]["n"]
                else:
                    failures.append(capsys.readouterr().err)
                    continue
                seen.append(tuple(int(x) for x in text.split(",")))
            time.sleep(0.1)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        if held is not None:
            held.close()
    assert proc.returncode == 0, err[-3000:]
    assert failures == []
    assert len(seen) >= 5
    assert seen == sorted(seen)  # the published state only moves forward
    assert any(v > 0 and s == 0 for v, _, s in seen)  # read mid-run: videos in, no shards yet
    final = tuple(int(x) for x in read_elsewhere(db, counts).split(","))
    assert final[2] > 0 and final == max(seen + [final])
