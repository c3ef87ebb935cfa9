"""``vidloom bench scale`` times each operation in a fresh interpreter (bench/scale.py ``run_op``):
the code it hands that interpreter must run (a broken import there once failed every operation)."""

from __future__ import annotations

from pathlib import Path

from bench import scale as bench_scale


def test_each_operation_runs_in_its_own_process(tmp_path: Path) -> None:
    db = tmp_path / "catalog.duckdb"
    bench_scale.build_catalog(db, 2000, seed=3)
    decided = bench_scale.run_op("rescore_default", db)
    assert decided["clips"] == 2000 and 0 < decided["kept"] < 2000, decided
    assert decided["seconds"] > 0 and decided["peak_rss_mb"] > 0
    selected = bench_scale.run_op("export", db)
    assert 0 < selected["selected"] <= decided["kept"], selected
