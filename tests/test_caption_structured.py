"""Structured bilingual captions: the clip schema on the wire, in the catalog and in the shards.

Against the real local OpenAI-protocol server (captioner/fake_server.py): a structured request
carries ``response_format`` json_schema with the clip schema; a valid reply becomes catalog
columns; broken JSON and schema violations are retried, then recorded as failures and never
exported. The signals backend fills only what it measures; the field agreement checks record
where a caption contradicts the optical-flow label or the OCR text.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fake_openai import STRUCTURED_DOC, FakeOpenAI, Reply, fail_then

from captioner.caption_schema import REQUEST_SCHEMA, SCHEMA_NAME, SCHEMA_VERSION, schema_errors
from captioner.client import ChatClient, ChatRequest, ChatResult
from captioner.field_checks import camera_check, text_check
from captioner.signals import signals_description
from captioner.structured import structured_request, structured_rows
from captioner.validate import exportable
from curation.db import Catalog
from pipelines.config import load_config
from pipelines.curate import run_step_by_name

FAST = {"backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 2.0}
COMMON = {"model": "m", "backend": "openai", "prompt_sha": "x", "params": "{}"}


def complete(url: str, req: ChatRequest, **kw: Any) -> ChatResult:
    async def go() -> ChatResult:
        async with ChatClient(url, **{**FAST, **kw}) as client:
            return await client.complete(req)

    return asyncio.run(go())


def request(key: str = "c1:structured") -> ChatRequest:
    return structured_request(key, [], "Describe this video as JSON.", {"model": "m"}, short=True)


def test_the_request_carries_the_schema_and_a_valid_reply_becomes_columns() -> None:
    with FakeOpenAI(require_schema=True) as fake:
        r = complete(fake.url, request())
        plain = complete(
            fake.url, ChatRequest("c2:dense_en", [{"role": "user", "content": "hi"}], {"model": "m"})
        )
        body = fake.requests[0]
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    assert rf["json_schema"]["name"] == SCHEMA_NAME and rf["json_schema"]["schema"] == REQUEST_SCHEMA
    assert plain.ok is False and plain.status == 400  # the fake refuses a request without the schema
    assert r.ok and r.attempts == 1, r.error
    rows = {(c.kind, c.lang): c for c in structured_rows("c1", r, True, COMMON)}
    assert set(rows) == {("dense", "en"), ("dense", "zh"), ("short", "en"), ("short", "zh")}
    assert rows["dense", "zh"].text == STRUCTURED_DOC["caption_zh"]
    assert rows["short", "en"].text == STRUCTURED_DOC["short_en"]
    for c in rows.values():
        assert (c.fields_version, c.content_class, c.camera_movement, c.camera_speed) == (
            SCHEMA_VERSION,
            "people",
            "pan_left",
            "slow",
        )
        assert (c.shot_size, c.camera_angle, c.lighting, c.light_source, c.style, c.shot_count) == (
            "full",
            "eye_level",
            "bright",
            "natural",
            "realistic",
            1,
        )
        assert json.loads(c.actions or "")[1] == {"subject": "two cyclists", "action": "pass behind her"}
        assert "caption_en" not in json.loads(c.fields or "") and json.loads(c.fields or "")["scene"]
    assert exportable(rows.values()) and len(exportable(rows.values())) == 4


@pytest.mark.parametrize(("mode", "failed_check"), [("broken_json", "json"), ("schema_violation", "schema")])
def test_broken_json_and_schema_violations_are_retried_then_recorded_and_never_exported(
    mode: str, failed_check: str
) -> None:
    with FakeOpenAI(lambda body, attempt: mode) as fake:
        r = complete(fake.url, request(), max_retries=2)
        attempts = fake.attempts("c1:structured")
    assert not r.ok and r.attempts == attempts == 3
    assert r.error.startswith(f"invalid reply: {failed_check} (")
    rows = structured_rows("c1", r, True, COMMON)
    assert rows and not exportable(rows)
    for c in rows:
        checks = json.loads(c.checks)
        assert checks[failed_check]["ok"] is False and checks["reply"]["attempts"] == 3
        assert c.fields_version is None and c.content_class is None  # no column from a bad reply
    if mode == "schema_violation":
        assert "content_class" in json.loads(rows[0].checks)["schema"]["error"] or any(
            "content_class" in e for e in json.loads(rows[0].checks)["schema"]["errors"]
        )
    with FakeOpenAI(fail_then(1, mode, "good")) as fake:  # one bad reply, then a good one
        again = complete(fake.url, request(), max_retries=2)
    assert again.ok and again.attempts == 2


def test_schema_rejects_values_outside_the_closed_sets() -> None:
    doc = copy.deepcopy(STRUCTURED_DOC)
    assert schema_errors(doc) == []
    doc["camera"]["movement"] = "spinning"
    doc["extra"] = 1
    errors = schema_errors(doc)
    assert any(e.startswith("camera/movement:") for e in errors) and any("extra" in e for e in errors)
    doc = copy.deepcopy(STRUCTURED_DOC)
    doc["camera"]["movement"], doc["subjects"], doc["shot_count"] = "unknown", None, None
    assert schema_errors(doc) == []  # 'unknown' and null are allowed


def test_the_schema_keeps_strict_modes_rules() -> None:
    """Strict structured outputs: every object lists all its properties as required and allows
    no others; every closed set allows 'unknown'."""
    seen = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object":
                assert node["additionalProperties"] is False
                assert sorted(node["required"]) == sorted(node["properties"])
                seen.append(node)
            if "enum" in node:
                assert "unknown" in node["enum"]
            for v in node.values():
                walk(v)

    walk(REQUEST_SCHEMA)
    assert len(seen) == 5  # the document, a subject, an action, camera, lighting
    assert "$schema" not in REQUEST_SCHEMA


def test_signals_fill_what_they_measure_and_leave_the_rest_unknown() -> None:
    d = signals_description(
        {
            "camera_motion": "pan_left",
            "motion": 0.05,
            "luma": 30.0,
            "ocr_text": "SALE | 50% OFF",
            "shot_index": 2,
        }
    )
    assert d["camera"] == {
        "movement": "pan_left",
        "speed": "moderate",
        "shot_size": "unknown",
        "angle": "unknown",
    }
    assert d["lighting"] == {"brightness": "dark", "source": "unknown"}
    assert d["text_overlays"] == ["SALE", "50% OFF"] and d["shot_count"] == 1
    assert (d["content_class"], d["style"], d["scene"], d["subjects"], d["actions"]) == (
        "unknown",
        "unknown",
        "unknown",
        None,
        None,
    )
    assert schema_errors(d, "description") == []
    assert (
        signals_description({"camera_motion": "static", "motion": 0.001, "luma": 200.0, "ocr_text": ""})[
            "camera"
        ]["speed"]
        == "none"
    )
    nothing = signals_description({"camera_motion": "mixed", "motion": 0.4})
    assert nothing["camera"]["speed"] == "unknown"  # mixed: camera and subject motion, no camera speed
    assert nothing["lighting"]["brightness"] == "unknown" and nothing["text_overlays"] is None
    assert nothing["shot_count"] is None


def test_agreement_checks() -> None:
    assert camera_check("pan_left", "pan_right")[0] is False
    assert camera_check("dolly_in", "zoom_in")[0] is True
    assert camera_check("tracking", "static")[0] is False
    assert camera_check("unknown", "static")[0] is None and camera_check("static", None)[0] is None
    assert text_check(["SCENE TWO"], "SCENE TW0 | 12")[0] is True
    assert text_check(["SALE"], "")[0] is False and text_check([], "VIDLOOM DEMO")[0] is False
    assert (
        text_check([], "")[0] is True
        and text_check(None, "x")[0] is None
        and text_check(["x"], None)[0] is None
    )


def test_an_older_catalog_gains_the_columns_and_stays_readable(tmp_path: Path) -> None:
    db = tmp_path / "catalog.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE captions (clip_id VARCHAR, lang VARCHAR, text VARCHAR, kind VARCHAR, model VARCHAR, "
        "prompt_sha VARCHAR, backend VARCHAR, tokens INTEGER, finish_reason VARCHAR, checks JSON, "
        "revision VARCHAR, params JSON, prompt_tokens INTEGER, PRIMARY KEY (clip_id, lang, kind))"
    )
    con.execute(
        "INSERT INTO captions VALUES ('c', 'en', 'old text', 'dense', 'm', '', 'signals', 0, 'stop', "
        "'{}', '', '{}', 0)"
    )
    con.close()
    with Catalog(db) as cat:
        (old,) = cat.captions("c")
        assert old.text == "old text" and old.fields_version is None and old.content_class is None
        assert cat.query("SELECT count(*) FROM caption_checks")[1] == [(0,)]


@pytest.fixture(scope="module")
def prepared(demo_samples: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo video curated up to captioning (its kept clips: one pans right, one 'mixed')."""
    src = tmp_path_factory.mktemp("structured_src")
    shutil.copy(demo_samples[0] / "demo_text_en_640x360.mp4", src)
    out = tmp_path_factory.mktemp("structured") / "out"
    for step in ("ingest", "split", "clips", "score", "filter", "extract"):
        run_step_by_name(step, [str(src)], out, config())
    return out


def config(url: str | None = None) -> Any:
    cfg = load_config("tiny")
    cfg.runtime.runner, cfg.runtime.quiet = "sequential", True
    if url:
        cfg.caption.backend, cfg.caption.base_url = "openai", url
        cfg.caption.timeout_s, cfg.caption.max_retries, cfg.caption.n_frames = 2.0, 1, 2
    return cfg


def shard_jsons(out: Path) -> dict[str, dict[str, Any]]:
    import webdataset as wds

    from pipelines.dataset_versions import resolve

    shards = resolve(out / "shards")
    manifest = json.loads((shards / "manifest.json").read_text())
    urls = [str(shards / e["shard"]) for e in manifest["shards"]]
    return {s["__key__"]: json.loads(s["json"]) for s in wds.WebDataset(urls, shardshuffle=False)}


@pytest.mark.slow
def test_structured_captions_in_the_catalog_the_checks_and_the_shards(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        kept = dict(cat.query("SELECT clip_id, camera_motion FROM clips WHERE status = 'kept' ORDER BY 1")[1])
    assert len(kept) >= 2
    bad, good = sorted(kept)[:2]
    overlay = json.dumps({**STRUCTURED_DOC, "text_overlays": ["SALE 50%"]}, ensure_ascii=False)

    def script(body: dict[str, Any], attempt: int) -> Reply | str:
        clip = body["user"].split(":")[0]
        return "broken_json" if clip == bad else Reply(text=overlay) if clip == good else "good"

    with FakeOpenAI(script, require_schema=True) as fake:
        cfg = config(fake.url)
        run_step_by_name("caption", [], out, cfg)
        assert all(b.get("response_format", {}).get("type") == "json_schema" for b in fake.requests)
    run_step_by_name("export", [], out, cfg)
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        clips = {
            r["clip_id"]: r for r in cat.dicts("SELECT clip_id, caption_error, caption_failed FROM clips")
        }
        caps = cat.dicts(
            "SELECT clip_id, kind, lang, camera_movement, content_class, shot_count FROM captions "
            "WHERE kind = 'dense' AND lang = 'en'"
        )
        checks = {
            (r[0], r[1]): r[2:]
            for r in cat.query("SELECT clip_id, field, captioned, measured, agree FROM caption_checks")[1]
        }
    assert clips[bad]["caption_error"].startswith("caption structured: invalid reply: json")
    assert "json_en" in clips[bad]["caption_failed"]
    by_clip = {c["clip_id"]: c for c in caps}
    assert by_clip[bad]["camera_movement"] is None  # recorded, no fields
    assert (
        by_clip[good]["camera_movement"],
        by_clip[good]["content_class"],
        by_clip[good]["shot_count"],
    ) == ("pan_left", "people", 1)
    assert clips[good]["caption_failed"] == "" and clips[good]["caption_error"] is None
    # the caption says pan_left: it agrees with the flow label only where the flow says pan_left
    assert checks[good, "camera_movement"] == ("pan_left", kept[good], kept[good] == "pan_left")
    assert checks[good, "text_overlays"][2] is False  # 'SALE 50%' stated, no OCR text on the clip
    assert (bad, "camera_movement") not in checks
    from curation.db import query_readonly  # what `vidloom query` runs, sandboxed

    _, disagree = query_readonly(
        out / "catalog.duckdb",
        "SELECT field, count(*) FILTER (WHERE NOT agree) FROM caption_checks GROUP BY 1 ORDER BY 1",
    )
    assert dict(disagree)["text_overlays"] >= 1
    samples = shard_jsons(out)
    assert set(kept) <= set(samples)
    assert "fields" not in samples[bad] and not samples[bad]["captions"]
    assert samples[good]["fields"]["camera"]["movement"] == "pan_left"
    assert samples[good]["fields_version"] == SCHEMA_VERSION
    assert {c["content_class"] for c in samples[good]["captions"]} == {"people"}


@pytest.mark.slow
def test_signals_backend_fills_columns_from_measurements(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    run_step_by_name("caption", [], out, config())
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        rows = cat.dicts(
            "SELECT c.clip_id, c.camera_movement, c.lighting, c.content_class, c.shot_size, c.subjects, "
            "c.shot_count, k.camera_motion, k.luma, a.agree FROM captions c JOIN clips k USING (clip_id) "
            "JOIN caption_checks a ON a.clip_id = c.clip_id AND a.field = 'camera_movement' "
            "WHERE c.kind = 'dense' AND c.lang = 'en'"
        )
    assert rows
    for r in rows:
        assert r["camera_movement"] == r["camera_motion"] and r["agree"] is True
        assert r["lighting"] == (
            "dark"
            if r["luma"] < 50
            else "dim"
            if r["luma"] < 90
            else "normal"
            if r["luma"] < 170
            else "bright"
        )
        assert (r["content_class"], r["shot_size"], r["subjects"], r["shot_count"]) == (
            "unknown",
            "unknown",
            None,
            1,
        )
