"""The CLI's catalog and config surface: read-only queries, config overrides, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation import schema
from curation.db import Catalog
from pipelines.config import load_config, to_yaml
from vidloom.cli import main


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.duckdb"
    with Catalog(path) as cat:
        cat.upsert_objects(
            "videos",
            [
                schema.Video("a" * 16, "/in/ok.mp4", "x", fps=25.0, n_frames=50),
                schema.Video("b" * 16, "/in/bad.mp4", "y", status="error", error="empty file"),
            ],
        )
    return path


def test_query_prints_a_table(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", str(db), "SELECT status, count(*) AS n FROM videos GROUP BY 1 ORDER BY 1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["status", "|", "n"]
    assert [line.split()[0] for line in out[2:4]] == ["error", "ok"]
    assert out[-1] == "(2 rows)"


def test_query_json_and_read_only(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", str(db), "SELECT path, error FROM videos WHERE status = 'error'", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"path": "/in/bad.mp4", "error": "empty file"}]
    assert main(["query", str(db), "DELETE FROM videos"]) == 2
    assert "read-only" in capsys.readouterr().err.lower()
    with Catalog(db, read_only=True) as cat:
        assert len(cat.videos()) == 2


def test_query_missing_catalog_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", str(tmp_path / "none.duckdb"), "SELECT 1"]) == 2
    assert "no catalog" in capsys.readouterr().err


def test_config_layers_preset_file_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("clips: {max_s: 6}\nsplit: {detector: adaptive}\n")
    cfg = load_config("tiny", f, ["clips.min_s=1.5", "extract.stream_copy=false"])
    assert (cfg.clips.max_s, cfg.clips.min_s, cfg.split.detector) == (6.0, 1.5, "adaptive")
    assert cfg.extract.stream_copy is False
    assert "max_s: 6.0" in to_yaml(cfg)
    with pytest.raises(ValueError, match="unknown config key"):
        load_config("default", None, ["clips.max_seconds=3"])
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("huge")
