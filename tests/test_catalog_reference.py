"""docs/catalog.md is what ``curation.catalog_reference`` renders from the catalog's DDL now."""

from __future__ import annotations

from pathlib import Path

from curation import catalog_reference

ROOT = Path(__file__).resolve().parent.parent


def test_the_catalog_reference_is_current() -> None:
    stored = (ROOT / "docs" / "catalog.md").read_text(encoding="utf-8")
    assert stored == catalog_reference.render(), (
        "docs/catalog.md is stale: python -m curation.catalog_reference --out docs/catalog.md")


def test_every_table_and_column_has_a_meaning() -> None:
    tables = catalog_reference.describe()
    assert {"videos", "files", "shots", "clips", "captions", "caption_checks", "shards", "balance_counts",
            "dup_clusters", "runs", "stage_done"} <= set(tables)
    assert {"camera_movement", "fields", "subjects"} <= {c for c, _ in tables["captions"]}  # the fields
    missing = [f"{t}.{c}" for t, cols in tables.items() for c, _ in cols
               if not catalog_reference.meaning(t, c)]
    assert not missing, f"columns without a meaning (curation/catalog_reference.py MEANINGS): {missing}"
    assert all(catalog_reference.TABLE_MEANINGS.get(t) for t in tables), set(tables) - set(
        catalog_reference.TABLE_MEANINGS)


def test_a_column_without_a_meaning_is_caught(monkeypatch) -> None:
    monkeypatch.setitem(catalog_reference.MEANINGS, "files", {})
    assert catalog_reference.meaning("files", "path") == ""
    assert catalog_reference.meaning("clips", "blur")  # a score column: the scorer's meaning
