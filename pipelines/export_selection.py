"""Export a SQL selection of a catalog: the one path behind ``vidloom export`` and SFT's
``--catalog DB --where SQL`` (training/post/sft.py).

The selection is one predicate over ``clips``, run sandboxed (curation/sandbox.py); a bad or
refused predicate is a ``ValueError`` naming it. The config is the one the catalog was curated
with (``config.yaml`` beside it) plus overrides, and the shards go to a local directory or an
object-store URL (pipelines/remote_export.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from curation.db import Catalog
from pipelines.config import CurateConfig, load_config
from pipelines.export_step import export, select_clip_ids
from pipelines.remote import is_url
from pipelines.remote_export import export_to_url
from pipelines.runner import make_runner


def catalog_file(catalog: str | Path) -> Path:
    """The catalog file: ``catalog`` itself, or ``catalog/catalog.duckdb`` for an output root."""
    db = Path(catalog)
    if db.is_dir():
        db = db / "catalog.duckdb"
    if not db.is_file():
        raise FileNotFoundError(f"no catalog at {catalog}")
    return db


def catalog_config(db: str | Path, preset: str = "default", overrides: Sequence[str] = ()) -> CurateConfig:
    """The config ``db`` was curated with (``config.yaml`` beside it, else ``preset``), then overrides."""
    saved = Path(db).resolve().parent / "config.yaml"
    return load_config(preset, saved if saved.is_file() else None, list(overrides))


def selected_clip_ids(db: str | Path, where: str) -> list[str]:
    """The clip ids ``where`` selects; a predicate DuckDB rejects or the sandbox refuses is a
    ``ValueError`` ("bad --where ...")."""
    try:
        return select_clip_ids(Path(db), where)
    except (duckdb.Error, ValueError) as e:  # curation.sandbox.UnsafeSQL is a ValueError
        raise ValueError(f"bad --where {where!r}: {e}") from e


def export_selection(db: str | Path, cfg: CurateConfig, clip_ids: list[str], out: str | Path,
                     where: str) -> dict[str, Any]:
    """Shards of ``clip_ids`` as a new dataset version under ``out`` (a directory or a URL); the
    clips' files missing on disk are cut first. Returns the export counts."""
    root = Path(db).resolve().parent
    with Catalog(db) as cat:
        if is_url(str(out)):
            return export_to_url(root, cfg, make_runner(cfg.runtime), cat, clip_ids, str(out), where)
        return export(root, cfg, make_runner(cfg.runtime), cat, clip_ids, Path(out), where)
