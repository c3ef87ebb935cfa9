"""Balanced exports: targets per view from YAML / --set, the balanced subset and sampling weights
on a skewed pool in a real DuckDB catalog, the weighted loader's epochs, and the CLI end to end
(tiny real mp4 clips, shards, manifest, ``balance_counts``, ``dup_clusters``, the HTML report)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curation import schema
from curation.balance import tv_distance
from curation.db import Catalog
from pipelines.balance_export import (
    BalanceSpec,
    export_classes,
    load_spec,
    plan,
    pool_rows,
)
from training.data.weighted_order import weighted_order

OK_CHECKS = json.dumps({name: {"ok": True} for name in ("lang", "length", "numbers", "colours")})
SPLIT = "cd" * 8

# Skewed pool: class -> probability, far from the targets in every view.
CONTENT = {"nature": 0.08, "people": 0.6, "objects": 0.22, "animation": 0.1}
DURATION_S = {3.0: 0.65, 8.0: 0.27, 20.0: 0.08}  # 2-5s, 5-15s, 15-30s
SHORT_SIDE = {480: 0.6, 720: 0.3, 1080: 0.1}
FPS = {24.0: 0.1, 30.0: 0.8, 60.0: 0.1}
LANGUAGE = {"zh": 0.1, "en": 0.75, "fr": 0.15}
MOTION = {0.005: 0.7, 0.03: 0.2, 0.1: 0.1}  # static, moderate, dynamic


def _pick(rng: np.random.Generator, dist: dict[Any, float]) -> Any:
    keys = list(dist)
    return keys[rng.choice(len(keys), p=np.array(list(dist.values())) / sum(dist.values()))]


def _catalog(root: Path, n: int, seed: int = 3, content: bool = True, files: Path | None = None) -> list[str]:
    """A catalog of ``n`` kept clips drawn from the skewed distributions above (videos carry the
    source language in ``source_meta``, captions the content class). With ``files``, each clip gets
    a copy of that mp4 as its extracted file."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    videos, clips, caps = [], [], []
    for v in range(max(n // 10, 1)):
        videos.append(schema.Video(f"{v:016x}", f"v{v}.mp4", f"{v:064x}",
                                   source_meta=json.dumps({"language": _pick(rng, LANGUAGE)})))
    for i in range(n):
        video = videos[i % len(videos)]
        dur, side, fps = _pick(rng, DURATION_S), _pick(rng, SHORT_SIDE), _pick(rng, FPS)
        a = i * 1000
        b = a + int(dur * fps)
        cid = schema.clip_id_for(video.video_id, a, b, SPLIT)
        clip = schema.Clip(cid, video.video_id, 0, a, b, a / fps, a / fps + dur, side * 16 // 9, side, fps,
                           split_hash=SPLIT, status="kept",
                           scores=schema.ClipScores(motion=_pick(rng, MOTION)))
        if files is not None:
            clip.path = f"clips/{video.video_id}/{cid}.mp4"
            (root / clip.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(files, root / clip.path)
        clips.append(clip)
        klass = _pick(rng, CONTENT) if content else None
        for lang in ("en", "zh"):
            caps.append(schema.Caption(cid, lang, f"{lang} caption {i}", checks=OK_CHECKS,  # type: ignore[arg-type]
                                       content_class=klass))
    with Catalog(root / "catalog.duckdb") as cat:  # arrow inserts: executemany is slow at this size
        for table, objs in (("videos", videos), ("clips", clips), ("captions", caps)):
            cat.update_columns(table, [schema.row(o) for o in objs])
    return sorted(c.clip_id for c in clips)


ALL_VIEWS = {"motion": {"static": 3, "moderate": 4, "dynamic": 3}}


@pytest.fixture(scope="module")
def skewed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("skewed")
    ids = _catalog(root, 3000)
    with Catalog(root / "catalog.duckdb", read_only=True) as cat:
        return root, pool_rows(cat, ids)


def test_pool_rows_read_content_class_and_language(skewed: tuple[Path, list[dict[str, Any]]]) -> None:
    _, rows = skewed
    labels = [export_classes(r) for r in rows]
    content = Counter(lab["content"] for lab in labels)
    language = Counter(lab["language"] for lab in labels)
    assert set(content) == {"nature", "people", "objects", "animation"}
    assert set(language) == {"zh", "en", "other"}  # 'fr' of source_meta is 'other'
    assert content["people"] > 2 * content["objects"] > 2 * content["nature"]
    assert {lab["duration"] for lab in labels} == {"2-5s", "5-15s", "15-30s"}
    assert {lab["resolution"] for lab in labels} == {"480p", "720p", "1080p+"}
    assert {lab["fps"] for lab in labels} == {"24", "30", "60"}


@pytest.mark.parametrize("mode", ["subset", "weights"])
def test_skewed_pool_balanced_below_002_on_every_view(
        skewed: tuple[Path, list[dict[str, Any]]], mode: str) -> None:
    _, rows = skewed
    spec = BalanceSpec(mode=mode)
    spec.targets.update(ALL_VIEWS)
    chosen, record = plan(rows, spec)
    views = record["views"]
    assert set(k for k, v in views.items() if v["tv"] is not None) == {
        "content", "duration", "resolution", "fps", "language", "motion"}
    for view, info in views.items():
        assert info["tv_pool"] > 0.1, view  # the pool is skewed in every view
        assert info["tv"] < 0.02, (view, info)
    assert record["skipped_views"] == [] and record["unreachable"] == []
    by_id = {r["clip_id"]: export_classes(r) for r in rows}
    assert all(by_id[c]["content"] != "animation" for c in chosen)  # no target share: left out
    if mode == "subset":
        assert 60 < len(chosen) < len(rows)
        achieved = Counter(by_id[c]["duration"] for c in chosen)
        shares = {k: v / len(chosen) for k, v in achieved.items()}
        assert tv_distance(shares, views["duration"]["target"]) < 0.02
    else:
        weights = record["weights"]
        assert set(weights) == set(chosen) and len(chosen) == sum(
            1 for lab in by_id.values() if lab["content"] != "animation")
        total = sum(weights.values())
        fps = Counter()
        for c, w in weights.items():
            fps[by_id[c]["fps"]] += w / total
        assert tv_distance(fps, views["fps"]["target"]) < 0.02


def test_subset_is_deterministic_and_seeded(skewed: tuple[Path, list[dict[str, Any]]]) -> None:
    _, rows = skewed
    a = plan(rows, BalanceSpec(seed=1, n=80))[0]
    assert a == plan(list(reversed(rows)), BalanceSpec(seed=1, n=80))[0]
    assert len(a) == 80 and a != plan(rows, BalanceSpec(seed=2, n=80))[0]


def test_unknown_content_class_skips_the_view(tmp_path: Path) -> None:
    ids = _catalog(tmp_path, 2000, content=False)
    with Catalog(tmp_path / "catalog.duckdb", read_only=True) as cat:
        rows = pool_rows(cat, ids)
    chosen, record = plan(rows, BalanceSpec())
    assert record["skipped_views"] == ["content"] and record["views"]["content"]["tv"] is None
    assert chosen and record["views"]["duration"]["tv"] < 0.02


def test_spec_from_yaml_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "b.yaml"
    f.write_text("balance:\n  mode: weights\n  seed: 5\n  targets:\n    fps: {'24': 1, '30': 1}\n"
                 "    language: null\n    content: {nature: 1, animation: 1}\n", encoding="utf-8")
    spec = load_spec(str(f), ["balance.targets.fps.60=2", "balance.n=40"])
    assert spec.mode == "weights" and spec.seed == 5 and spec.n == 40
    assert spec.targets["fps"] == {"24": 1.0, "30": 1.0, "60": 2.0}
    assert "language" not in spec.targets and spec.targets["content"] == {"nature": 1.0, "animation": 1.0}
    assert spec.targets["duration"] == {"2-5s": 3.0, "5-15s": 4.0, "15-30s": 3.0}  # untouched default
    assert load_spec(None, [], "subset").mode == "subset"
    for bad in (["balance.targets.fps.25=1"], ["balance.targets.colour.red=1"], ["balance.mode=random"],
                ["balance.targets.fps.24=-1"], ["balance.bogus=1"], ["fps=1"]):
        with pytest.raises(ValueError):
            load_spec(None, bad)


def test_weighted_order_matches_weights_and_is_a_function_of_seed_epoch() -> None:
    rng = np.random.default_rng(0)
    w = rng.gamma(0.7, size=5000)
    w[rng.random(5000) < 0.1] = 0.0
    order = weighted_order(w, 11, 3, 16)
    assert len(order) == 5000 and np.array_equal(order, weighted_order(w, 11, 3, 16))
    assert not np.array_equal(order, weighted_order(w, 11, 4, 16))
    counts = np.bincount(order, minlength=5000)
    expected = 5000 * w / w.sum()
    assert np.abs(counts - expected).max() < 1.0  # each sample drawn floor or ceil of its expectation
    assert counts[w == 0].sum() == 0
    classes = rng.integers(0, 5, 5000)
    got = np.bincount(classes[order], minlength=5) / 5000
    want = np.bincount(classes, weights=w, minlength=5) / w.sum()
    assert 0.5 * np.abs(got - want).sum() < 0.005
    with pytest.raises(ValueError):
        weighted_order(np.zeros(3), 0, 0, 4)


def _tiny_mp4(path: Path) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=32x32:rate=8",
                    "-t", "0.5", "-pix_fmt", "yuv420p", "-c:v", "libx264", str(path)], check=True)
    return path


def _epoch_keys(loader: Any, limit: int | None = None) -> list[str]:
    keys: list[str] = []
    for i, batch in enumerate(loader.global_batches()):
        keys += [k for micro in batch for k in micro["key"]]
        if limit is not None and i + 1 == limit:  # the state counts a batch once it is handed out
            break
    return keys


def test_cli_weights_export_loader_report(tmp_path: Path) -> None:
    from curation.report import write_report
    from training.data.loader import StreamingLoader
    from vidloom.cli import main

    root = tmp_path / "out"
    ids = _catalog(root, 80, seed=5, files=_tiny_mp4(tmp_path / "t.mp4"))
    with Catalog(root / "catalog.duckdb") as cat:  # two duplicates of the first clip
        cat.update_columns("clips", [{"clip_id": ids[1], "dup_of": ids[0]},
                                     {"clip_id": ids[2], "dup_of": ids[0]}])
    spec = tmp_path / "balance.yaml"
    spec.write_text("targets:\n  fps: null\n  resolution: null\n  language: null\n", encoding="utf-8")
    shards = tmp_path / "shards"
    db = str(root / "catalog.duckdb")
    assert main(["export", db, "--balance", str(spec), "--balance-mode", "weights", "--out", str(shards),
                 "--set", "balance.targets.content.animation=0"]) == 0
    manifest = json.loads((shards / "latest" / "manifest.json").read_text(encoding="utf-8"))
    bal = manifest["balance"]
    assert bal["mode"] == "weights" and bal["views"]["fps"]["tv"] is None
    weights = bal["weights"]
    # animation has weight 0: left out
    assert sum(e["n_samples"] for e in manifest["shards"]) == len(weights) < 80
    for view in ("content", "duration"):
        assert bal["views"][view]["tv"] < bal["views"][view]["tv_pool"]

    with Catalog(db, read_only=True) as cat:
        counts = cat.dicts("SELECT * FROM balance_counts WHERE view_name = 'content' ORDER BY class_name")
        clusters = cat.dicts("SELECT * FROM dup_clusters")
    assert {r["class_name"]: r["target"] for r in counts if r["target"]} == pytest.approx(
        {"nature": 0.4, "people": 0.3, "objects": 0.3})
    assert sum(r["pool_clips"] for r in counts) == 80
    assert clusters == [{"cluster": ids[0], "members": 3, "kept": 3, "clip_ids": ids[:3]}]
    numbers = write_report(db, tmp_path / "report.html")["balanced_exports"]
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert numbers[str(shards.resolve())]["tv"]["content"] == pytest.approx(bal["views"]["content"]["tv"])
    assert 'data-distance-export="duration"' in html

    def loader() -> StreamingLoader:
        return StreamingLoader(shards, seed=7, global_batch=8, n_frames=2, fps=8.0, size=(16, 16))

    first = loader()
    epoch0 = _epoch_keys(first)
    n = len(epoch0)
    assert n == len(weights)
    total = sum(weights.values())
    got = Counter(epoch0)
    assert max(abs(got[k] - n * w / total) for k, w in weights.items()) < 1.0
    assert _epoch_keys(first) != epoch0  # epoch 1: another draw
    assert _epoch_keys(loader()) == epoch0  # deterministic
    part = loader()
    head = _epoch_keys(part, limit=3)
    resumed = loader()
    resumed.load_state_dict(part.state_dict())
    assert head + _epoch_keys(resumed) == epoch0  # resumable mid-epoch


def test_cli_subset_export_and_bad_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vidloom.cli import main

    root = tmp_path / "out"
    _catalog(root, 60, seed=9, files=_tiny_mp4(tmp_path / "t.mp4"))
    db = str(root / "catalog.duckdb")
    assert main(["export", db, "--balance", "--out", str(tmp_path / "s"), "--set", "balance.mode=weights",
                 "--set", "balance.targets.nope.x=1"]) == 2
    assert "unknown view 'nope'" in capsys.readouterr().err
    assert main(["export", db, "--balance", "--out", str(tmp_path / "s"), "--set", "balance.targets.fps=null",
                 "--set", "balance.targets.resolution=null", "--set", "balance.targets.language=null"]) == 0
    manifest = json.loads((tmp_path / "s" / "latest" / "manifest.json").read_text(encoding="utf-8"))
    bal = manifest["balance"]
    assert bal["mode"] == "subset" and "weights" not in bal
    assert sum(e["n_samples"] for e in manifest["shards"]) == bal["selected"] < 60
    assert "TV distance" in capsys.readouterr().out
