"""End to end: the real Prefect flow over real Ray on the demo videos, read back as a trainer would.

One flow run (module fixture) on every demo file: planted cuts, a byte-identical copy, a
re-encoded near-duplicate, a corrupt file, a unicode name. The tests then read the shards
with WebDataset and hold them against the manifest, the catalog and the files on disk.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from curation.db import Catalog
from pipelines.config import load_config, to_dict
from pipelines.dataset_versions import resolve

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def curated(
    ray_cluster: Any, demo_samples: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    from prefect.testing.utilities import prefect_test_harness

    from flows.curate_flow import curate_flow
    from pipelines.curate import split_hash

    src, manifest = demo_samples
    out = tmp_path_factory.mktemp("e2e") / "out"
    cfg = load_config("tiny")
    cfg.runtime.runner, cfg.runtime.quiet = "ray", True
    # A temporary Prefect server (SQLite under a temp dir), stopped while pytest's output is open.
    with prefect_test_harness(server_startup_timeout=120):
        summary = curate_flow(sources=[str(src)], out=str(out), config=to_dict(cfg))
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        kept = cat.clips("status = 'kept' AND split_hash = ?", [split_hash(cfg)])
        files = {Path(r["path"]).name: r for r in cat.dicts("SELECT * FROM files")}
        videos = {v.video_id: v for v in cat.videos()}
        shots = {vid: cat.shots(vid) for vid in videos}
        shard_rows = cat.dicts("SELECT * FROM shards ORDER BY shard")
        n_clips = cat.query("SELECT count(*) FROM clips")[1][0][0]
        clips = cat.dicts("SELECT c.*, f.path AS file FROM clips c JOIN files f USING (video_id) "
                          "WHERE f.status = 'ok' AND c.split_hash = ?", [split_hash(cfg)])
    return {
        "src": src,
        "manifest": manifest,
        "out": out,
        "summary": summary,
        "kept": kept,
        "files": files,
        "videos": videos,
        "shots": shots,
        "shard_rows": shard_rows,
        "n_clips": n_clips,
        "clips": clips,
    }


@pytest.fixture(scope="module")
def shard_manifest(curated: dict[str, Any]) -> dict[str, Any]:
    return json.loads((resolve(curated["out"] / "shards") / "manifest.json").read_text())


@pytest.fixture(scope="module")
def samples(curated: dict[str, Any], shard_manifest: dict[str, Any]) -> list[dict[str, Any]]:
    import webdataset as wds

    shards = resolve(curated["out"] / "shards")
    urls = [str(shards / e["shard"]) for e in shard_manifest["shards"]]
    return list(wds.WebDataset(urls, shardshuffle=False))


def test_flow_summary(curated: dict[str, Any]) -> None:
    s = curated["summary"]
    # Eleven distinct byte contents (the copy shares its original's row); only the corrupt one fails.
    assert (s["videos_ok"], s["videos_error"]) == (10, 1)
    assert s["clips_kept"] == len(curated["kept"]) > 0
    assert s["shard_samples"] == s["clips_kept"]


def test_shard_keys_are_exactly_the_kept_clips(
    curated: dict[str, Any], samples: list[dict[str, Any]]
) -> None:
    keys = [s["__key__"] for s in samples]
    assert len(keys) == len(set(keys))  # no clip twice
    assert set(keys) == {c.clip_id for c in curated["kept"]}


def test_every_sample_is_complete(curated: dict[str, Any], samples: list[dict[str, Any]]) -> None:
    by_id = {c.clip_id: c for c in curated["kept"]}
    for s in samples:
        assert {"mp4", "json", "jpg"} <= set(s), s["__key__"]
        clip = by_id[s["__key__"]]
        meta = json.loads(s["json"])
        assert (meta["clip_id"], meta["status"], meta["video_id"]) == (clip.clip_id, "kept", clip.video_id)
        assert (meta["start_frame"], meta["end_frame"]) == (clip.start_frame, clip.end_frame)
        assert s["mp4"] == (curated["out"] / clip.path).read_bytes()  # the extracted clip, verbatim
        assert s["jpg"][:2] == b"\xff\xd8"


def test_manifest_catalog_and_files_agree(
    curated: dict[str, Any], shard_manifest: dict[str, Any], samples: list[dict[str, Any]]
) -> None:
    version = shard_manifest["dataset_hash"]
    shards = curated["out"].resolve() / "shards" / version  # one version, and latest points at it
    assert sorted(p.name for p in shards.parent.iterdir()) == sorted([version, "latest"])
    assert resolve(shards.parent) == shards
    fields = ("shard", "bucket", "n_samples", "bytes", "sha256")
    listed = [tuple(e[f] for f in fields) for e in shard_manifest["shards"]]
    # the catalog names a shard by its path under the output root
    in_catalog = [tuple(r[f] for f in fields) for r in curated["shard_rows"]]
    assert [(f"shards/{version}/" + e[0], *e[1:]) for e in listed] == in_catalog
    assert {r["dataset"] for r in curated["shard_rows"]} == {shard_manifest["dataset_hash"]}
    on_disk = sorted(p.relative_to(shards).as_posix() for p in shards.rglob("*") if p.is_file())
    assert on_disk == sorted([e[0] for e in listed] + ["manifest.json"])  # no stale or temp files
    per_shard: dict[str, int] = {}
    for s in samples:
        rel = Path(s["__url__"]).relative_to(shards).as_posix()
        per_shard[rel] = per_shard.get(rel, 0) + 1
    for shard, bucket, n_samples, size, digest in listed:
        path = shards / shard
        assert (path.stat().st_size, sha256(path)) == (size, digest), shard
        assert per_shard[shard] == n_samples, shard
        assert shard.startswith(bucket + "/")
    assert shard_manifest["n_samples"] == len(samples)
    assert {r["path"] for r in curated["shard_rows"]} == {str(shards / e[0]) for e in listed}


def test_every_input_file_has_a_row(curated: dict[str, Any]) -> None:
    src, manifest, files = curated["src"], curated["manifest"], curated["files"]
    inputs = {p.name for p in src.rglob("*") if p.is_file() and p.suffix in (".mp4", ".mkv")}
    assert set(files) == inputs == set(manifest)
    assert all(r["status"] in ("ok", "duplicate", "error") for r in files.values())
    assert {n for n, r in files.items() if r["status"] != "ok"} == {"demo_cuts_copy.mp4", "demo_corrupt.mp4"}


def test_exact_duplicate_is_marked(curated: dict[str, Any]) -> None:
    copy, orig = curated["files"]["demo_cuts_copy.mp4"], curated["files"]["demo_cuts_640x360.mp4"]
    assert copy["status"] == "duplicate" and orig["status"] == "ok"
    assert copy["video_id"] == orig["video_id"]
    assert copy["error"] and "demo_cuts_640x360.mp4" in copy["error"]
    # One videos row for both paths, owned by the first path; the near-duplicate has other bytes.
    assert curated["videos"][orig["video_id"]].path == orig["path"]
    assert curated["files"]["demo_cuts_near_dup_480x270.mp4"]["video_id"] != orig["video_id"]


def test_corrupt_file_has_a_readable_error(curated: dict[str, Any]) -> None:
    row = curated["files"]["demo_corrupt.mp4"]
    video = curated["videos"][row["video_id"]]
    assert row["status"] == video.status == "error"
    for err in (row["error"], video.error):
        assert err and 5 < len(err) < 500 and "\n" not in err and "Traceback" not in err
    assert not curated["shots"][row["video_id"]]
    assert not [c for c in curated["kept"] if c.video_id == row["video_id"]]


def test_planted_cuts_are_found_exactly(curated: dict[str, Any]) -> None:
    """Hard cuts of every demo video at the planted frames; demo_cuts' shots tile it exactly."""
    manifest, files = curated["manifest"], curated["files"]
    for name, meta in manifest.items():
        if meta["kind"] not in ("video", "near_duplicate"):
            continue
        shots = curated["shots"][files[name]["video_id"]]
        assert [s.start_frame for s in shots if s.transition == "cut"] == meta["cuts"], name
        assert len([s for s in shots if s.transition in ("dissolve", "fade")]) == len(meta["gradual"]), name
        assert shots[-1].end_frame == meta["n_frames"], name
    cuts = manifest["demo_cuts_640x360.mp4"]
    shots = curated["shots"][files["demo_cuts_640x360.mp4"]["video_id"]]
    bounds = [0, *cuts["cuts"], cuts["n_frames"]]
    assert [(s.start_frame, s.end_frame) for s in shots] == list(itertools.pairwise(bounds))
    assert [s.shot_index for s in shots] == list(range(len(shots)))
    assert [s.transition for s in shots] == ["start"] + ["cut"] * len(cuts["cuts"])
    # Every clip lies inside its shot.
    by_shot = {s.shot_index: s for s in shots}
    for c in curated["kept"]:
        if c.video_id == files["demo_cuts_640x360.mp4"]["video_id"]:
            shot = by_shot[c.shot_index]
            assert shot.start_frame <= c.start_frame < c.end_frame <= shot.end_frame


def test_each_planted_defect_is_caught_with_its_reason(curated: dict[str, Any]) -> None:
    """Every clip inside a planted shot has the shot's expected outcome (samples.json 'expect'),
    the first failing filter as its reason; the copies' kept shots are duplicates of the original's.

    The Matroska remux decodes to the original's very frames from the same packets: nothing
    about picture quality tells the two apart, so dedup's content tie-break (video_id, the
    sha256 of the bytes) picks one; each kept shot of the pair is kept in exactly one of them
    and the other's clip points at it."""
    by_file: dict[str, list[dict[str, Any]]] = {}
    for c in curated["clips"]:
        by_file.setdefault(Path(c["file"]).name, []).append(c)
    twins = {"demo_cuts_640x360.mp4", "demo_cuts_remux.mkv"}
    seen: dict[str, int] = {}
    for name, meta in curated["manifest"].items():
        if meta["kind"] in ("corrupt", "duplicate"):  # no clips of their own (files rows, tested above)
            continue
        for seg in meta["segments"]:
            inside = [c for c in by_file[name]
                      if seg["start"] <= c["start_frame"] < c["end_frame"] <= seg["end"]]
            assert inside, (name, seg)
            for c in inside:
                got = "kept" if c["status"] == "kept" else c["reject_reason"]
                scores = {k: c[k] for k in ("blur", "luma", "motion", "text_area", "artifacts")}
                if name in twins and {got, seg["expect"]} == {"kept", "duplicate"}:
                    got = seg["expect"]  # the twin won this tie (checked pairwise below)
                assert got == seg["expect"], (name, seg, scores)
                seen[got] = seen.get(got, 0) + 1
    planted = {"blurry", "dark", "letterbox", "frozen", "black", "static", "text", "duplicate",
               "low_resolution", "bad_aspect", "too_short", "overexposed", "kept"}
    assert planted <= set(seen), planted - set(seen)
    span = lambda c: (c["start_frame"], c["end_frame"])  # noqa: E731
    pairs = {span(c): c for c in by_file["demo_cuts_640x360.mp4"]}
    for twin in by_file["demo_cuts_remux.mkv"]:
        a, b = pairs[span(twin)], twin
        if "kept" in (a["status"], b["status"]):
            kept, dup = (a, b) if a["status"] == "kept" else (b, a)
            assert dup["reject_reason"] == "duplicate" and dup["dup_of"] == kept["clip_id"], (a, b)
    originals = {c["clip_id"] for name in twins for c in by_file[name]}
    dups = [c for c in curated["clips"] if c["reject_reason"] == "duplicate"]
    assert dups and all(c["dup_of"] in originals for c in dups)


def test_text_is_read_in_both_languages(curated: dict[str, Any]) -> None:
    texts = " ".join(c["ocr_text"] or "" for c in curated["clips"])
    assert "DEMO" in texts and "SCENE" in texts
    assert "北京" in texts or "你好" in texts


@pytest.mark.usefixtures("one_thread")  # a tiny model: see conftest.one_thread
def test_tiny_preset_learns_on_the_demo_shards(curated: dict[str, Any], tmp_path: Path) -> None:
    """`vidloom train --preset tiny` on these shards: VAE reconstruction error and the DiT's held-out
    flow-matching loss (fixed samples, timesteps and noise) fall clearly within a CI-sized run."""
    from training.config import load_train_config
    from training.loop.run import train

    cfg = load_train_config("tiny", overrides=["vae_steps=80", "steps=120", "ckpt_every=60"])
    summary = train(cfg, curated["out"] / "shards", tmp_path / "run", progress=False)
    vae_eval = {row["when"]: row["eval_l1"] for row in summary["vae"]["eval"]}
    assert vae_eval["end"] < 0.8 * vae_eval["start"], vae_eval
    dit_eval = summary["dit"]["eval"]
    first, last = dit_eval[0]["eval_loss"], dit_eval[-1]["eval_loss"]
    assert last < 0.75 * first, dit_eval
    for start, end in zip(dit_eval[::2], dit_eval[1::2], strict=True):  # every stage improves on its own
        assert start["stage"] == end["stage"] and end["eval_loss"] < start["eval_loss"], (start, end)
    assert Path(summary["checkpoint"]).name == "step_0000120.pt"
