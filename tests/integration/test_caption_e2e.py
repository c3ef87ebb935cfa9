"""Captioning against a real local OpenAI-protocol server that misbehaves on purpose.

Every kept clip must end with its zh + en captions or a recorded failure; retries happen where
they should (5xx, timeouts) and not where they should not (4xx); failed checks are recorded;
the run completes, and a rerun retries exactly the failed clips. The signals backend (the
default) is covered too: deterministic captions that pass the lingua checks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from captioner.fake_server import FakeOpenAI, Reply
from curation.db import Catalog
from pipelines.config import load_config
from pipelines.curate import run_step_by_name

SUBSET = ("街景 sample 01.mp4", "demo_defects_640x360.mp4", "demo_static_480x270.mp4")
BEFORE_CAPTION = ("ingest", "split", "clips", "score", "filter", "extract")


def config(url: str | None = None) -> Any:
    cfg = load_config("tiny")
    cfg.runtime.runner, cfg.runtime.quiet = "sequential", True
    if url:
        cfg.caption.backend, cfg.caption.base_url = "openai", url
        cfg.caption.timeout_s, cfg.caption.max_retries, cfg.caption.n_frames = 1.0, 1, 4
    return cfg


@pytest.fixture(scope="module")
def prepared(demo_samples: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("cap_src")
    for name in SUBSET:
        shutil.copy(demo_samples[0] / name, src / name)
    out = tmp_path_factory.mktemp("cap") / "out"
    for step in BEFORE_CAPTION:
        run_step_by_name(step, [str(src)], out, config())
    return out


def kept_ids(out: Path) -> list[str]:
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        return [
            r[0] for r in cat.query("SELECT clip_id FROM clips WHERE status = 'kept' ORDER BY clip_id")[1]
        ]


def outcome(out: Path) -> dict[str, dict[str, Any]]:
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        clips = cat.dicts("SELECT clip_id, caption_error, caption_failed FROM clips WHERE status = 'kept'")
        caps = cat.dicts("SELECT * FROM captions")
    by_clip: dict[str, dict[str, Any]] = {c["clip_id"]: {**c, "captions": {}} for c in clips}
    for c in caps:
        if c["clip_id"] in by_clip:
            by_clip[c["clip_id"]]["captions"][(c["kind"], c["lang"])] = c
    return by_clip


def test_every_clip_ends_captioned_or_with_a_recorded_failure(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    ids = kept_ids(out)
    assert len(ids) >= 6
    plan = {  # (clip, request kind) -> behaviour; everything else is good
        (ids[0], "dense_en"): "error500",  # always: fails after its retries
        (ids[1], "dense_en"): "flaky",  # one 500, then good
        (ids[2], "dense_zh"): "wrong_language",  # the translation comes back in French
        (ids[3], "dense_en"): "truncated",
        (ids[4], "short_en"): "hang",  # past the client timeout, every attempt
        (ids[5], "dense_en"): "error400",  # a client error: no retry
    }

    def script(body: dict[str, Any], attempt: int) -> str | Reply:
        clip, kind = body["user"].split(":")
        mode = plan.get((clip, kind), "good")
        if mode == "flaky":
            return "error500" if attempt == 1 else "good"
        return mode

    with FakeOpenAI(script, hang_s=3.0) as fake:
        counts = run_step_by_name("caption", [], out, config(fake.url))
        attempts = {key: fake.attempts(key) for key in {b["user"] for b in fake.requests}}
    res = outcome(out)
    assert set(res) == set(ids)
    for cid, r in res.items():  # a caption pair, or a failure on record: never nothing
        assert ("dense", "en") in r["captions"] or r["caption_error"], cid
    assert "500" in res[ids[0]]["caption_error"] and attempts[f"{ids[0]}:dense_en"] == 2  # 1 + 1 retry
    assert res[ids[1]]["caption_error"] is None and attempts[f"{ids[1]}:dense_en"] == 2
    assert {("dense", "en"), ("dense", "zh"), ("short", "en"), ("short", "zh")} <= set(
        res[ids[1]]["captions"]
    )
    # a reply that fails its checks is retried, then recorded as a failed caption with its checks
    assert {"lang_zh", "reply_zh"} <= set(res[ids[2]]["caption_failed"].split(","))
    assert "dense_zh: invalid reply: lang (detected fr)" in res[ids[2]]["caption_error"]
    assert attempts[f"{ids[2]}:dense_zh"] == 2
    assert {"finish_en", "reply_en"} <= set(res[ids[3]]["caption_failed"].split(","))
    assert res[ids[3]]["captions"][("dense", "en")]["finish_reason"] == "length"
    assert attempts[f"{ids[3]}:dense_en"] == 2
    assert "timeout" in res[ids[4]]["caption_error"] and ("dense", "zh") in res[ids[4]]["captions"]
    assert attempts[f"{ids[5]}:dense_en"] == 1 and "400" in res[ids[5]]["caption_error"]
    for cid in ids[6:]:
        assert res[cid]["caption_error"] is None and res[cid]["caption_failed"] == "", res[cid]
    cap = res[ids[1]]["captions"][("dense", "zh")]
    assert cap["backend"] == "openai" and cap["model"] == "tarsier2-7b" and cap["tokens"] > 0  # served name
    assert len(cap["prompt_sha"]) == 64 and json.loads(cap["params"])["temperature"] == 0.0
    assert counts["errors"] == 5  # ids 0, 2, 3, 4, 5: retried by the next run

    with FakeOpenAI() as fake:  # the server is healthy again
        run_step_by_name("caption", [], out, config(fake.url))
        asked = {b["user"].split(":")[0] for b in fake.requests}
    assert asked == {ids[0], ids[2], ids[3], ids[4], ids[5]}  # only the failed clips
    assert all(r["caption_error"] is None and r["caption_failed"] == "" for r in outcome(out).values())


def test_signals_captions_are_bilingual_checked_and_deterministic(prepared: Path, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        shutil.copytree(prepared, out)
        run_step_by_name("caption", [], out, config())
        run_step_by_name("export", [], out, config())
        runs.append(outcome(out))
    a, b = runs
    assert a.keys() == b.keys() and a
    for cid, r in a.items():
        en, zh = r["captions"][("dense", "en")], r["captions"][("dense", "zh")]
        assert en["backend"] == zh["backend"] == "signals"
        assert r["caption_failed"] == "" and r["caption_error"] is None
        assert (en["text"], zh["text"]) == (
            b[cid]["captions"][("dense", "en")]["text"],
            b[cid]["captions"][("dense", "zh")]["text"],
        )
    import webdataset as wds

    from pipelines.dataset_versions import resolve

    shards = resolve(tmp_path / "a" / "shards")  # the version shards/latest points at
    manifest = json.loads((shards / "manifest.json").read_text())
    samples = list(wds.WebDataset([str(shards / e["shard"]) for e in manifest["shards"]], shardshuffle=False))
    assert {s["__key__"] for s in samples} == set(a)
    for s in samples:
        assert s["en.txt"].decode() == a[s["__key__"]]["captions"][("dense", "en")]["text"]
        assert s["zh.txt"].decode() == a[s["__key__"]]["captions"][("dense", "zh")]["text"]


def test_vlm_captioning_on_a_ray_actor_pool(prepared: Path, tmp_path: Path, ray_cluster: Any) -> None:
    """The same requests from a Ray actor (batches streamed concurrently), one clip failing for good."""
    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    ids = kept_ids(out)

    def script(body: dict[str, Any], attempt: int) -> str:
        return "error500" if body["user"].startswith(ids[0]) else "good"

    # every reply takes 50 ms, so concurrent requests are in flight together even on a slow machine
    with FakeOpenAI(script, latency_s=0.05) as fake:
        cfg = config(fake.url)
        cfg.runtime.runner, cfg.caption.batch_size = "ray", 4
        run_step_by_name("caption", [], out, cfg)
        most_at_once = fake.max_concurrent
    res = outcome(out)
    assert set(res) == set(ids)
    assert res[ids[0]]["caption_error"] and not res[ids[0]]["captions"]
    for cid in ids[1:]:
        assert res[cid]["caption_error"] is None
        assert {("dense", "en"), ("dense", "zh"), ("short", "en"), ("short", "zh")} <= set(
            res[cid]["captions"]
        )
    assert most_at_once > 1  # requests of a batch overlapped
