"""Resume and idempotence (docs/architecture.md "Crash safety", "Determinism") on real videos.

(a) A rerun over a finished output changes nothing and recomputes nothing.
(b) ``vidloom curate`` killed with SIGKILL at several points, then rerun with the same
    command, ends byte-identical (shards, clips) and row-identical (catalog) to a clean run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from curation.db import Catalog
from pipelines.config import load_config
from pipelines.curate import run_curate

# Two usable videos (one with a fade), a byte-identical copy and a corrupt file.
SUBSET = ("demo_cuts_640x360.mp4", "demo_cuts_copy.mp4", "demo_corrupt.mp4", "街景 sample 01.mp4")
TIMESTAMPS = {"ingested_at", "finished_at", "started_at", "created_at"}
RUN_TIMEOUT_S = 300

Snapshot = dict[str, list[tuple[Any, ...]]]


def catalog_snapshot(out: Path) -> Snapshot:
    """Every table but ``runs``, without timestamp columns, rows sorted; the output root as '<OUT>'."""
    root = str(out.resolve())
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        tables = [
            r[0]
            for r in cat.query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1"
            )[1]
        ]
        snap: Snapshot = {}
        for table in tables:
            if table == "runs":
                continue
            cols = [
                r[0]
                for r in cat.query(
                    "SELECT column_name FROM information_schema.columns WHERE "
                    "table_name = ? ORDER BY ordinal_position",
                    [table],
                )[1]
            ]
            keep = ", ".join(f'"{c}"' for c in cols if c not in TIMESTAMPS)
            rows = cat.query(f"SELECT {keep} FROM {table}")[1]
            snap[table] = sorted(
                (tuple(v.replace(root, "<OUT>") if isinstance(v, str) else v for v in r) for r in rows),
                key=repr,
            )
    return snap


def assert_no_duplicate_rows(out: Path) -> None:
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        pks = cat.query(
            "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
            "WHERE constraint_type = 'PRIMARY KEY'"
        )[1]
        assert {t for t, _ in pks} >= {"videos", "files", "shots", "clips", "shards", "stage_done"}
        for table, cols in pks:
            key = ", ".join(f'"{c}"' for c in cols)
            total, distinct = cat.query(f"SELECT count(*), count(DISTINCT ({key})) FROM {table}")[1][0]
            assert total == distinct, f"{table}: {total} rows for {distinct} keys"


def tree_sha256(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` (hidden temp files included)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def outputs(out: Path) -> dict[str, Any]:
    return {
        "catalog": catalog_snapshot(out),
        "shards": tree_sha256(out / "shards"),
        "clips": tree_sha256(out / "clips"),
    }


def last_run_steps(out: Path) -> dict[str, Any]:
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        counts = cat.query("SELECT counts FROM runs ORDER BY started_at DESC LIMIT 1")[1][0][0]
    return json.loads(counts)["steps"]


def curate_cmd(src: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "vidloom.cli",
        "curate",
        str(src),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--no-prefect",
        "--runner",
        "sequential",
        "--quiet",
    ]


@pytest.fixture(scope="module")
def subset(demo_samples: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("resume_src")
    for name in SUBSET:
        shutil.copy2(demo_samples[0] / name, src / name)
    return src


@pytest.fixture(scope="module")
def clean(subset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted CLI run: the reference every other run must reproduce."""
    out = tmp_path_factory.mktemp("resume_clean") / "out"
    proc = subprocess.run(curate_cmd(subset, out), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = outputs(out)
    version = (out / "shards" / "latest").readlink().as_posix()  # the one published version
    assert result["shards"] and result["clips"] and f"{version}/manifest.json" in result["shards"]
    return result


def test_rerun_is_idempotent(subset: Path, clean: dict[str, Any], tmp_path: Path) -> None:
    cfg = load_config("tiny")
    cfg.runtime.runner, cfg.runtime.quiet = "sequential", True
    out = tmp_path / "out"
    first_counts = run_curate([str(subset)], out, cfg)
    first = outputs(out)
    assert_same(first, clean)  # in-process == CLI subprocess: same ids, rows and bytes
    second_counts = run_curate([str(subset)], out, cfg)
    assert outputs(out) == first
    assert second_counts == first_counts
    assert_no_duplicate_rows(out)
    steps = last_run_steps(out)
    for step in ("ingest", "split", "score"):  # nothing recomputed, everything skipped
        assert steps[step]["submitted"] == 0 and steps[step]["skipped"] > 0, (step, steps[step])
    assert steps["clips"]["written"] == 0 and steps["clips"]["spans"] > 0
    assert steps["extract"]["submitted"] == 0


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Equality, reporting the first differing catalog row or file."""
    for table, rows in want["catalog"].items():
        for a, b in zip(got["catalog"].get(table, []), rows, strict=False):
            assert a == b, (table, a, b)
        assert len(got["catalog"].get(table, [])) == len(rows), table
    assert got == want


def _published(paths: list[Path]) -> list[Path]:
    return [p for p in paths if not p.name.startswith(".")]


# Kill points: a predicate on the output root, true once some but not all of the work is done.
KILL_POINTS: dict[str, Callable[[Path], bool]] = {
    # The first video's single decode pass is published; its split (and the other video's) are not in.
    "split": lambda out: bool(_published(list((out / ".work" / "frames").glob("*")))),
    # A few clips extracted, the rest (and export) still to do.
    "clips": lambda out: len(_published(list((out / "clips").glob("*/*.mp4")))) >= 3,
}


def run_and_kill(cmd: list[str], out: Path, ready: Callable[[Path], bool]) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while proc.poll() is None and not ready(out) and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(
            f"the run ended (rc {proc.returncode}) before the kill point: "
            f"{stderr.decode(errors='replace')[-2000:]}"
        )


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_run_resumes_to_the_same_result(
    subset: Path, clean: dict[str, Any], tmp_path: Path, point: str
) -> None:
    out = tmp_path / "out"
    run_and_kill(curate_cmd(subset, out), out, KILL_POINTS[point])
    assert not (out / "shards" / "latest").exists()  # killed before the end: no version published

    proc = subprocess.run(curate_cmd(subset, out), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = outputs(out)
    assert_same({**resumed, "shards": clean["shards"], "clips": clean["clips"]}, clean)
    assert resumed["shards"] == clean["shards"]
    assert resumed["clips"] == clean["clips"]
    assert_no_duplicate_rows(out)
    assert not list((out / ".work" / "parts").rglob("*.parquet"))  # every journal part committed
