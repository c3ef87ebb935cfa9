"""User SQL is sandboxed: no file is read or written, nothing is changed, each refusal is clear.

Every attack runs alone and stacked behind ``;`` and ``)``, through ``vidloom query``, through
``--where`` (``vidloom export``, and the selection behind ``sft``/``refine-sft`` and their flows),
and nested in a ``--where`` subquery. Each must fail with exit code 2 or an error naming the
cause, read nothing (a secret file's contents never appear) and write nothing (no new file
anywhere under the test's directory, the catalog unchanged).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.db import Catalog
from curation.sandbox import UnsafeSQL, check_where, run_query, select_clip_ids, write_query
from vidloom.cli import main

SECRET = "s3cr3t-hostname-7731"


@pytest.fixture()
def world(tmp_path: Path) -> dict[str, Path]:
    """A catalog, a secret text file, a Parquet file and a DuckDB file outside it."""
    db = tmp_path / "out" / "catalog.duckdb"
    with Catalog(db) as cat:
        cat.upsert("clips", [{"clip_id": "a", "status": "kept"}, {"clip_id": "b", "status": "rejected"}])
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"clip_id": [SECRET]}), other)
    return {"db": db, "secret": secret, "other": other, "root": tmp_path}


def attacks(w: dict[str, Path]) -> list[str]:
    t = w["root"]
    return [
        f"COPY (SELECT 42) TO '{t}/copied.csv'",
        f"COPY clips TO '{t}/clips.parquet' (FORMAT parquet)",
        f"SELECT content FROM read_text('{w['secret']}')",
        f"SELECT * FROM read_csv('{w['secret']}')",
        f"SELECT * FROM read_parquet('{w['other']}')",
        f"SELECT * FROM '{w['other']}'",
        f"SELECT * FROM glob('{t}/*')",
        f"ATTACH '{t}/attached.duckdb' AS x",
        f"EXPORT DATABASE '{t}/exported'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "PRAGMA threads = 1",
        "CREATE TABLE t AS SELECT 1",
        "CREATE TEMP TABLE t AS SELECT 1",
        "DROP TABLE clips",
        "UPDATE clips SET status = 'kept'",
        "DELETE FROM clips",
        "INSERT INTO clips (clip_id) VALUES ('z')",
    ]


def snapshot_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def assert_untouched(w: dict[str, Path], before: dict[str, str]) -> None:
    assert snapshot_tree(w["root"]) == before
    assert run_query(w["db"], "SELECT clip_id, status FROM clips ORDER BY 1") == (
        ["clip_id", "status"], [("a", "kept"), ("b", "rejected")])


def test_query_refuses_every_attack_alone_and_stacked(world: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot_tree(world["root"])
    for attack in attacks(world):
        for sql in (attack, f"SELECT 1; {attack}", f"{attack}; SELECT 1", f"SELECT 1); {attack}; (SELECT 1"):
            assert main(["query", str(world["db"]), sql]) == 2, sql
            captured = capsys.readouterr()
            assert SECRET not in captured.out + captured.err, sql
            assert captured.err.startswith("vidloom query: "), sql
            assert len(captured.err.strip()) > 20, sql  # says why
        out = world["root"] / "result.csv"
        assert main(["query", str(world["db"]), attack, "--out", str(out)]) == 2, attack
        assert SECRET not in capsys.readouterr().out
    assert_untouched(world, before)


def test_file_reads_fail_as_permission_errors(world: dict[str, Path]) -> None:
    import duckdb

    with pytest.raises(duckdb.PermissionException, match="disabled"):
        run_query(world["db"], f"SELECT content FROM read_text('{world['secret']}')")
    with pytest.raises(UnsafeSQL, match="COPY statement"):
        run_query(world["db"], f"COPY (SELECT 42) TO '{world['root']}/x.csv'")
    with pytest.raises(UnsafeSQL, match="exactly one statement"):
        run_query(world["db"], "SELECT 1; SELECT 2")


def test_where_refuses_every_attack(world: dict[str, Path]) -> None:
    before = snapshot_tree(world["root"])
    for attack in attacks(world):
        for where in (
            f"TRUE); {attack}; SELECT clip_id FROM clips WHERE (TRUE",
            f"TRUE; {attack}",
            f"TRUE) UNION ALL ({attack.replace('SELECT * FROM', 'SELECT clip_id FROM')}",
        ):
            with pytest.raises(UnsafeSQL) as err:
                select_clip_ids(world["db"], where)
            assert SECRET not in str(err.value)
    # a subquery inside the predicate runs, but inside the sandbox
    import duckdb

    with pytest.raises(duckdb.PermissionException):
        select_clip_ids(world["db"], f"clip_id IN (SELECT content FROM read_text('{world['secret']}'))")
    with pytest.raises(duckdb.PermissionException):
        select_clip_ids(world["db"], f"clip_id IN (SELECT clip_id FROM read_parquet('{world['other']}'))")
    assert_untouched(world, before)


@pytest.mark.parametrize("where", [
    "TRUE ORDER BY 1", "TRUE LIMIT 1", "TRUE UNION SELECT 'x'", "TRUE GROUP BY clip_id",
    "TRUE; SELECT 1", "", "   ", "TRUE) OR (TRUE",
])
def test_where_must_be_one_expression_over_clips(where: str) -> None:
    with pytest.raises(UnsafeSQL):
        check_where(where)


def test_good_predicates_still_select(world: dict[str, Path]) -> None:
    assert select_clip_ids(world["db"], "status = 'kept'") == ["a"]
    assert select_clip_ids(world["db"], "status = 'kept' -- a trailing comment") == ["a"]
    sub = "clip_id IN (SELECT clip_id FROM clips WHERE status <> 'kept')"
    assert select_clip_ids(world["db"], sub) == ["b"]
    assert select_clip_ids(world["db"], "TRUE") == ["a", "b"]


def test_export_where_attack_writes_nothing(world: dict[str, Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot_tree(world["root"])
    target = world["root"] / "pwned.csv"
    where = f"TRUE); COPY (SELECT 43) TO '{target}'; SELECT clip_id FROM clips WHERE (TRUE"
    assert main(["export", str(world["db"]), "--where", where, "--out", str(world["root"] / "shards")]) == 2
    assert "bad --where" in capsys.readouterr().err
    assert not target.exists()
    assert_untouched(world, before)


def test_sft_selection_uses_the_sandbox(world: dict[str, Path]) -> None:
    from training.post.sft import export_selection

    before = snapshot_tree(world["root"])
    with pytest.raises(ValueError, match="single boolean expression|not a SQL expression"):
        where = f"TRUE; COPY (SELECT 1) TO '{world['root']}/x.csv'"
        export_selection(world["db"], where, world["root"] / "d")
    assert_untouched(world, before)


def test_query_out_writes_parquet_csv_and_jsonl(world: dict[str, Path]) -> None:
    sql = "SELECT clip_id, status FROM clips ORDER BY clip_id"
    for suffix in ("parquet", "csv", "jsonl"):
        out = world["root"] / "res" / f"q.{suffix}"
        assert main(["query", str(world["db"]), sql, "--out", str(out)]) == 0
        if suffix == "parquet":
            assert pq.read_table(out).to_pylist() == [{"clip_id": "a", "status": "kept"},
                                                      {"clip_id": "b", "status": "rejected"}]
        else:
            text = out.read_text()
            assert "rejected" in text and text.count("\n") == (3 if suffix == "csv" else 2)
    with pytest.raises(ValueError, match="parquet, csv, jsonl"):
        write_query(world["db"], sql, world["root"] / "q.xlsx")


def test_the_writers_live_file_is_not_queryable(world: dict[str, Path]) -> None:
    live = world["db"].with_name(".catalog.duckdb.live")
    assert live.exists()
    with pytest.raises(ValueError, match="query .*catalog.duckdb"):
        run_query(live, "SELECT 1")
