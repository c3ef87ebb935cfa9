"""Dedup keeps the best technical copy, whatever the files are called.

A real clip (the Sintel trailer's desert pan, tests/data/real/sintel_title.mp4, CC-BY, cut
inside its letterbox bars), its x264 crf 45 re-encode and a 176x144 downscale go through the
real curate pipeline (sequential runner, a real DuckDB catalog) under the names a.mp4,
b.mp4 and c.mp4 in every assignment. The clean copy is kept every time; the others point at
it with ``dup_of`` when they take part in dedup.
"""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path
from typing import Any

import pytest

TITLE = Path(__file__).parent / "data" / "real" / "sintel_title.mp4"
X264 = ["-an", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-threads", "1"]
COPIES: dict[str, list[str]] = {  # what each copy is -> its ffmpeg filters and encoder settings
    "clean": ["-vf", "crop=640:272:0:44", *X264, "-crf", "18"],
    "crf45": ["-vf", "crop=640:272:0:44", *X264, "-crf", "45"],
    "small": ["-vf", "crop=640:272:0:44,scale=176:144", *X264, "-crf", "18"],  # same settings as clean
}


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("copies")
    out = {}
    for kind, args in COPIES.items():
        out[kind] = d / f"{kind}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-t", "3", "-i", str(TITLE), *args, str(out[kind])],
                       check=True)
    return out


def curate(
    copies: dict[str, Path], names: tuple[str, ...], root: Path, **filters: Any
) -> dict[str, dict[str, Any]]:
    """Curate the copies under ``names`` (in COPIES order); kind -> its clip row."""
    from curation.db import Catalog
    from pipelines.config import load_config
    from pipelines.curate import run_curate

    src = root / "src"
    src.mkdir(parents=True)
    for kind, name in zip(COPIES, names, strict=True):
        (src / name).write_bytes(copies[kind].read_bytes())
    cfg = load_config("tiny")
    cfg.runtime.runner, cfg.runtime.quiet = "sequential", True
    cfg.scores.text.enabled = False  # no text in the desert; OCR would only cost time
    cfg.split.detector = "content"  # one shot per file: the cheap detector finds it as well
    for key, value in filters.items():
        setattr(cfg.filters, key, value)
    run_curate([str(src)], root / "out", cfg)
    with Catalog(root / "out" / "catalog.duckdb", read_only=True) as cat:
        rows = cat.dicts("SELECT c.*, v.path FROM clips c JOIN videos v USING (video_id)")
    kind_of = dict(zip(names, COPIES, strict=True))
    by_kind = {kind_of[Path(r["path"]).name]: r for r in rows}
    assert len(rows) == len(by_kind) == 3, rows  # one clip per copy
    return by_kind


@pytest.mark.parametrize("names", list(itertools.permutations(("a.mp4", "b.mp4", "c.mp4"))))
def test_the_clean_copy_is_kept_under_any_names(copies: dict[str, Path], names: tuple[str, ...],
                                                 tmp_path: Path) -> None:
    """Default filters: the crushed copy is 'compressed' before dedup; the downscale (made with
    the clean copy's settings: no artifacts either, and more bits per pixel) loses on pixels."""
    rows = curate(copies, names, tmp_path)
    clean, crushed, small = rows["clean"], rows["crf45"], rows["small"]
    assert clean["status"] == "kept", clean
    assert crushed["reject_reason"] == "compressed", crushed
    assert small["reject_reason"] == "duplicate" and small["dup_of"] == clean["clip_id"], small
    assert small["artifacts"] < 0.05 and clean["artifacts"] < 0.05
    assert small["bits_per_pixel"] > clean["bits_per_pixel"]  # bits per pixel rise as frames shrink


@pytest.mark.parametrize("names", [("a.mp4", "b.mp4", "c.mp4"), ("c.mp4", "b.mp4", "a.mp4")])
def test_with_every_copy_in_dedup_the_fewest_artifacts_win(copies: dict[str, Path], names: tuple[str, ...],
                                                           tmp_path: Path) -> None:
    """With the compressed and blurry rules opened, all three copies meet in dedup: the crushed
    one (most pixels with the clean one, fewest bits) and the downscale both point at the clean one."""
    rows = curate(copies, names, tmp_path, max_artifacts=1.0, min_blur=0.0)
    clean = rows["clean"]
    assert clean["status"] == "kept", clean
    for kind in ("crf45", "small"):
        row = rows[kind]
        assert row["reject_reason"] == "duplicate" and row["dup_of"] == clean["clip_id"], row
    assert rows["crf45"]["artifacts"] > 0.5
