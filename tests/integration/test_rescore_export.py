"""The catalog is the source of truth: --rescore re-decides without decoding, export --where
writes exactly the selected clips, deterministic and resumable, and the report matches the catalog."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from curation.db import Catalog
from pipelines.config import load_config
from pipelines.curate import run_curate
from pipelines.dataset_versions import resolve

SUBSET = ("demo_defects_640x360.mp4", "demo_cuts_640x360.mp4", "demo_text_en_640x360.mp4")


def vidloom(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidloom.cli", *args], capture_output=True, text=True, timeout=300
    )


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def curated(demo_samples: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sequential curate run over three demo videos whose sources are then moved away:
    anything that tried to decode a video afterwards would fail."""
    src, _ = demo_samples
    inputs = tmp_path_factory.mktemp("inputs")
    for name in SUBSET:
        shutil.copy(src / name, inputs / name)
    out = tmp_path_factory.mktemp("rescore") / "out"
    cfg = load_config("tiny")
    cfg.runtime.runner, cfg.runtime.quiet = "sequential", True
    run_curate([str(inputs)], out, cfg)
    return out


def counts(out: Path) -> dict[str, int]:
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        return dict(cat.query("SELECT coalesce(reject_reason, 'kept'), count(*) FROM clips GROUP BY 1")[1])


def test_rescore_changes_decisions_without_decoding(curated: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(curated, out)
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        sources = [Path(r[0]) for r in cat.query("SELECT path FROM videos")[1]]
        kept_blur = sorted(r[0] for r in cat.query("SELECT blur FROM clips WHERE status = 'kept'")[1])
    hidden = [p.rename(p.with_name(p.name + ".gone")) for p in sources]  # no source can be decoded now
    frames_before = tree_digest(out / ".work" / "frames")
    try:
        before = counts(out)
        threshold = (kept_blur[0] + kept_blur[1]) / 2  # above the two least sharp kept clips' blur
        res = vidloom(
            "curate",
            *map(str, sources),
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--no-prefect",
            "--runner",
            "sequential",
            "--quiet",
            "--rescore",
            "--set",
            f"filters.min_blur={threshold}",
        )
        assert res.returncode == 0, res.stderr
        after = counts(out)
    finally:
        for p in hidden:
            p.rename(p.with_name(p.name.removesuffix(".gone")))
    assert after["kept"] == before["kept"] - 1
    assert after["blurry"] == before["blurry"] + 1
    assert sum(after.values()) == sum(before.values())
    assert tree_digest(out / ".work" / "frames") == frames_before  # nothing was decoded again
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        (n,) = cat.query("SELECT count(*) FROM clips WHERE status = 'kept' AND blur < ?", [threshold])[1][0]
    assert n == 0


def test_export_where_writes_exactly_the_selection(curated: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(curated, out)
    db = out / "catalog.duckdb"
    # rejected clips were never cut: exporting them cuts them first
    where = "reject_reason IN ('text', 'letterbox') OR (status = 'kept' AND motion > 0.05)"
    with Catalog(db, read_only=True) as cat:
        want = {r[0] for r in cat.query(f"SELECT clip_id FROM clips WHERE {where}")[1]}
        uncut = {r[0] for r in cat.query(f"SELECT clip_id FROM clips WHERE ({where}) AND path IS NULL")[1]}
    assert want and uncut
    a, b = tmp_path / "a", tmp_path / "b"
    for target in (a, b):
        res = vidloom("export", str(db), "--where", where, "--out", str(target))
        assert res.returncode == 0, res.stderr
    import webdataset as wds

    version = resolve(a)  # a/<dataset_hash>, which a/latest points at
    manifest = json.loads((version / "manifest.json").read_text())
    urls = [str(version / e["shard"]) for e in manifest["shards"]]
    keys = [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False)]
    assert sorted(keys) == sorted(want) and len(keys) == len(set(keys))
    assert tree_digest(a) == tree_digest(b)  # same query, same bytes
    assert manifest["selection"] == where
    with Catalog(db, read_only=True) as cat:
        rows = cat.dicts("SELECT * FROM shards WHERE export_root = ?", [str(a.resolve())])
        assert {r["dataset"] for r in rows} == {manifest["dataset_hash"]}
        assert sum(r["n_samples"] for r in rows) == len(want)
        assert not cat.query(
            "SELECT count(*) FROM clips WHERE clip_id IN (SELECT unnest(?)) AND path IS NULL", [sorted(uncut)]
        )[1][0][0]


def test_export_resumes_after_a_kill(curated: Path, tmp_path: Path) -> None:
    """A killed export (half the shards written in its staging directory, no manifest, nothing
    published) rerun gives the clean run's bytes, and the dead export's staging directory goes."""
    from pipelines import dataset_versions as dv

    out = tmp_path / "out"
    shutil.copytree(curated, out)
    db = out / "catalog.duckdb"
    ref, target = tmp_path / "ref", tmp_path / "target"
    assert (
        vidloom("export", str(db), "--out", str(ref), "--set", "shards.target_bytes=300000").returncode == 0
    )
    staging = target / f"{dv.STAGING_PREFIX}{dv._host()}-999999999-dead"  # a pid that is not running
    shutil.copytree(resolve(ref), staging)
    (staging / "manifest.json").unlink()
    tars = sorted(staging.rglob("*.tar"))
    assert len(tars) > 2
    tars[-1].unlink()
    tars[-2].write_bytes(tars[-2].read_bytes()[:1000])  # a torn shard
    res = vidloom("export", str(db), "--out", str(target), "--set", "shards.target_bytes=300000")
    assert res.returncode == 0, res.stderr
    assert tree_digest(target) == tree_digest(ref)


def test_bad_where_is_a_clear_error(curated: Path) -> None:
    res = vidloom(
        "export", str(curated / "catalog.duckdb"), "--where", "no_such_column > 1", "--out", "/tmp/x"
    )
    assert res.returncode != 0 and "no_such_column" in res.stderr
    res = vidloom(
        "export", str(curated / "catalog.duckdb"), "--where", "1=1; DROP TABLE clips", "--out", "/tmp/x"
    )
    assert res.returncode != 0
    with Catalog(curated / "catalog.duckdb", read_only=True) as cat:
        assert cat.query("SELECT count(*) FROM clips")[1][0][0] > 0


def test_report_funnel_matches_the_catalog(curated: Path, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    res = vidloom("report", str(curated / "catalog.duckdb"), "--out", str(html))
    assert res.returncode == 0, res.stderr
    text = html.read_text()
    with Catalog(curated / "catalog.duckdb", read_only=True) as cat:
        kept = cat.query("SELECT count(*) FROM clips WHERE status = 'kept'")[1][0][0]
        reasons = cat.query("SELECT reject_reason, count(*) FROM clips WHERE status = 'rejected' GROUP BY 1")[
            1
        ]
    assert f'data-count="clips_kept">{kept}<' in text
    for reason, n in reasons:
        assert f'data-count="rejected:{reason}">{n}<' in text
    assert "http://" not in text and "https://" not in text
