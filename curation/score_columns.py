"""The score columns of the ``clips`` table, by scorer: the data half of the scorer registry.

A scorer's columns are catalog columns. This module is what the data contract reads them from:
:class:`curation.schema.ClipScores` (which attributes a clip's scores have), the catalog's DDL
and its migration of an older file (``curation/db.py``), the journal's Parquet schema and the
report's histograms. It imports nothing from ``pipelines`` (the catalog sits below the stages),
so the built-in scorers' columns are declared here, by scorer (the tables below), and a scorer
defined anywhere else declares its own with :func:`register_columns` from its own file
(``pipelines/scorers.py`` does it for a :class:`ScorerSpec` that carries :class:`ScoreColumn`
objects). Every registration bumps :func:`generation`, so the catalog and the journal notice a
column added after they were imported.

A score that was not measured is NULL (None): it never rejects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

SQL_TYPES = ("DOUBLE", "INTEGER", "BIGINT", "BOOLEAN", "VARCHAR", "JSON")
NUMERIC_TYPES = ("DOUBLE", "INTEGER", "BIGINT")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class ScoreColumn:
    """One score column: its name, DuckDB type and what it means (units, range, source)."""

    name: str
    sql_type: str
    meaning: str
    scorer: str = ""


# Built-in columns, in catalog order (the order ClipScores had). pipelines/stages/*_scorer.py
# claim them by scorer name; 'filter' is the filter step (dup_of), not a scorer.
BUILTIN: dict[str, tuple[tuple[str, str, str], ...]] = {
    "quality": (  # pipelines/quality.py
        ("blur", "DOUBLE", "variance of the Laplacian of the luma, median over sampled frames "
                           "(sharp > ~100)"),
        ("luma", "DOUBLE", "mean luma, 0-255"),
        ("luma_high", "DOUBLE", "99th-percentile luma, 0-255: how bright the brightest parts are"),
        ("clipped", "DOUBLE", "fraction of pixels at the ends of the luma range (<= 4 or >= 251)"),
        ("black_frac", "DOUBLE", "fraction of sampled frames that are black"),
        ("black_border", "DOUBLE", "fraction of the frame area taken by letterbox/pillarbox bars"),
        ("crop_x", "INTEGER", "the picture inside the bars: left, source pixels"),
        ("crop_y", "INTEGER", "the picture inside the bars: top, source pixels"),
        ("crop_w", "INTEGER", "the picture inside the bars: width, source pixels"),
        ("crop_h", "INTEGER", "the picture inside the bars: height, source pixels"),
        ("frozen", "DOUBLE", "fraction of consecutive frame pairs that are identical, in runs of >= 0.25 s "
                             "(tiny frames)"),
    ),
    "artifacts": (  # pipelines/artifacts.py: packet sizes and full-resolution luma edge profiles
        ("artifacts", "DOUBLE", "compression damage, 0 = clean ... 1 = severe (blockiness amplified when "
                                "the clip is starved of bits)"),
        ("bits_per_pixel", "DOUBLE", "compressed bits of the clip's packets per frame pixel"),
        ("blockiness", "DOUBLE", "excess luma step on the codec's block grid (2/4/8/16 px) over the "
                                 "picture's own gradient (0 = none; x264 crf 45-51 about 0.2-0.45)"),
    ),
    "motion": (  # pipelines/motion.py
        ("motion", "DOUBLE", "median optical-flow magnitude, in frame widths per second"),
        ("camera_motion", "VARCHAR", "'static', 'pan_left', 'pan_right', 'tilt_up', 'tilt_down', 'zoom_in', "
                                     "'zoom_out' or 'mixed'"),
    ),
    "overlay_text": (  # pipelines/overlay_text.py
        ("text_area", "DOUBLE", "mean fraction of the frame covered by text boxes"),
        ("ocr_text", "VARCHAR", "the recognised text, distinct lines joined by ' | '"),
        ("text_stable", "BOOLEAN", "the same text box recurs in most sampled frames (subtitle, watermark)"),
        ("text_boxes", "VARCHAR", "JSON [[x0, y0, x1, y1], ...], the text boxes of all sampled frames pooled "
                                  "(fractions of the frame); the filter step crops them away"),
    ),
    "aesthetic": (  # models/aesthetic.py
        ("aesthetic", "DOUBLE", "LAION-style aesthetic score, about 1-10"),
        ("embedding", "VARCHAR", "the clip's unit CLIP image embedding, base64 float16 (semantic dedup)"),
    ),
    "hash": (  # pipelines/dedup.py
        ("content_hash", "VARCHAR", "sha256 of the clip's decoded tiny frames (exact duplicates)"),
        ("phash", "VARCHAR", "64-bit DCT perceptual hashes of the first, middle and last sparse frame, hex"),
    ),
    "filter": (("dup_of", "VARCHAR", "the clip_id this clip duplicates (set by the filter step)"),),
}

_COLUMNS: dict[str, ScoreColumn] = {}
_generation = [0]


def register_columns(
    scorer: str, columns: Iterable[ScoreColumn | tuple[str, str, str]], reserved: Iterable[str] = ()
) -> tuple[str, ...]:
    """Add ``scorer``'s columns (again: replaces its earlier ones); returns their names.

    Raises ValueError for a bad name or type, or a name another scorer or the clip row owns
    (``reserved``: the clip row's own columns, passed by the caller).
    """
    cols = [c if isinstance(c, ScoreColumn) else ScoreColumn(*c) for c in columns]
    reserved = set(reserved)
    for c in cols:
        if not _NAME.match(c.name):
            raise ValueError(f"score column {c.name!r}: use lower_case letters, digits and '_'")
        if c.sql_type not in SQL_TYPES:
            raise ValueError(f"score column {c.name!r}: type {c.sql_type!r} is not one of "
                             f"{', '.join(SQL_TYPES)}")
        owner = _COLUMNS.get(c.name)
        if c.name in reserved or (owner is not None and owner.scorer != scorer):
            who = "the clip row" if c.name in reserved else f"scorer {owner.scorer!r}"  # type: ignore[union-attr]
            raise ValueError(f"score column {c.name!r} of {scorer!r} is already a column of {who}")
    for name in [n for n, c in _COLUMNS.items() if c.scorer == scorer]:
        del _COLUMNS[name]
    for c in cols:
        _COLUMNS[c.name] = ScoreColumn(c.name, c.sql_type, c.meaning, scorer)
    _generation[0] += 1
    return tuple(c.name for c in cols)


def unregister_columns(scorer: str) -> None:
    """Forget ``scorer``'s columns (tests; a catalog keeps the column it already has)."""
    for name in [n for n, c in _COLUMNS.items() if c.scorer == scorer]:
        del _COLUMNS[name]
    _generation[0] += 1


def columns() -> tuple[ScoreColumn, ...]:
    """Every registered score column, built-ins first, in catalog order."""
    return tuple(_COLUMNS.values())


def names() -> tuple[str, ...]:
    return tuple(_COLUMNS)


def get(name: str) -> ScoreColumn | None:
    return _COLUMNS.get(name)


def numeric() -> tuple[str, ...]:
    """The numeric score columns (the report draws a histogram of each)."""
    return tuple(c.name for c in _COLUMNS.values() if c.sql_type in NUMERIC_TYPES)


def generation() -> int:
    """A counter bumped by every registration: caches of the column set key on it."""
    return _generation[0]


def _register_builtin() -> None:
    for scorer, cols in BUILTIN.items():
        for name, sql_type, meaning in cols:
            _COLUMNS[name] = ScoreColumn(name, sql_type, meaning, scorer)


_register_builtin()
