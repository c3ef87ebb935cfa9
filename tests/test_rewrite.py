"""The prompt rewriter (captioner/rewrite.py): template fallback, model rewrites through a real local
OpenAI-protocol server (captioner/fake_server.py), the checks, and the record ``generate --rewrite``
writes next to the mp4."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fake_openai import FakeOpenAI

from captioner import fake_rewrite
from captioner.rewrite import REWRITE_SCHEMA, REWRITE_SCHEMA_NAME, parse_rewrite, rewrite
from captioner.rewrite_checks import keep_checks
from captioner.rewrite_parse import parse_prompt
from captioner.rewrite_template import template_rewrite
from captioner.validate import en_colours, en_numbers, zh_colours, zh_numbers
from tests.random_runs import random_dit_run

FAST = {"backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 10.0, "max_retries": 2}
PROMPT = fake_rewrite.REWRITE_PROMPT  # "two dogs chase a red ball on a beach"


@pytest.mark.parametrize(("prompt", "numbers", "colours", "entities"), [
    ("two dogs chase a red ball on a beach", ["2"], ["red"], ["dog", "ball"]),
    ("3 white cats sleep on a wooden table at sunset, close-up", ["3"], ["white"], ["cat", "table"]),
    ("一个穿红色衣服的女孩在雨中跳舞，镜头缓慢推近", [], ["red"], ["girl"]),
    ("两只黑色的小狗在公园里追逐一个黄色的气球", ["2"], ["black", "yellow"], ["dog", "balloon"]),
])
def test_template_keeps_counts_colours_and_entities_in_both_languages(
        prompt: str, numbers: list[str], colours: list[str], entities: list[str]) -> None:
    doc = template_rewrite(prompt)
    assert doc == template_rewrite(prompt)  # deterministic
    assert parse_rewrite(json.dumps(doc))[1]["schema"]["ok"]  # the same JSON shape a model must send
    en, zh = doc["caption_en"], doc["caption_zh"]
    assert en_numbers(en) == numbers and zh_numbers(zh) == numbers
    assert set(colours) <= set(en_colours(en)) and set(colours) <= set(zh_colours(zh))
    assert [s["count"] for s in doc["subjects"] if s["count"] and s["count"] > 1] == [int(n) for n in numbers]
    for lang in ("en", "zh"):  # the rewrite in each language, checked against the prompt
        result = rewrite(prompt, lang=lang)
        assert result.source == "template" and result.failure is None, result.failure
        assert result.checks["entities"]["prompt"][: len(entities)] == entities
        assert all(c["ok"] for c in result.checks.values())
        assert len(result.prompt) > 2 * len(prompt)  # dense: it says more than the prompt
    auto = rewrite(prompt)
    assert auto.lang == ("zh" if any("\u4e00" <= ch <= "\u9fff" for ch in prompt) else "en")
    assert auto.prompt.lower().startswith(prompt.lower())  # the prompt's own words come first


def test_parse_reads_counts_colours_camera_and_light() -> None:
    p = parse_prompt("two dogs chase a red ball on a beach at sunset, the camera pans left slowly")
    assert [(s.key, s.count, s.colours) for s in p.subjects] == [("dog", 2, []), ("ball", 1, ["red"])]
    assert p.actions == [("dog", "chases")] and (p.movement, p.speed) == ("pan_left", "slow")
    assert p.scene and p.scene[0] == "a beach" and p.lighting and p.lighting[0] == "dim"
    z = parse_prompt("三辆白色的汽车在马路上行驶，航拍")
    assert [(s.key, s.count, s.colours) for s in z.subjects] == [("car", 3, ["white"])]  # 马路 is no horse
    assert z.shot_size == "wide" and z.angle == "overhead" and z.actions == [("car", "drives")]


def test_checks_catch_changed_counts_dropped_colours_and_entities() -> None:
    ok = keep_checks(PROMPT, "Two dogs chase a red ball along a sandy beach in the sun.", "en")
    assert all(c["ok"] for c in ok.values())
    more = keep_checks(PROMPT, "Three dogs chase a red ball on a beach.", "en")["numbers"]
    assert not more["ok"] and more["missing"] == ["2", "3"]
    blue = keep_checks(PROMPT, "Two dogs chase a blue ball on a beach.", "en")["colours"]
    assert not blue["ok"] and blue["missing"] == ["red"]
    cats = keep_checks(PROMPT, "两只猫在海滩上追逐一个红色的球。", "zh")  # cross-language: zh<->en agreement
    assert cats["numbers"]["ok"] and cats["colours"]["ok"] and cats["entities"]["missing"] == ["dog"]
    unknown = keep_checks("a unicorn gallops", "A horse gallops across a field.", "en")["entities"]
    assert not unknown["ok"] and unknown["missing"] == ["unicorn"]  # outside the lexicon: by word
    across = keep_checks("a unicorn gallops", "一匹马在奔跑。", "zh")["entities"]
    assert across["ok"] and across["unchecked"] == ["unicorn"]  # cannot be checked across languages
    failed = rewrite("a unicorn gallops", lang="zh")  # the template cannot translate it: the original
    assert failed.source == "original" and failed.prompt == "a unicorn gallops"
    assert "unicorn" in (failed.failure or "")


def test_the_fake_servers_rewrite_schema_name_is_the_rewriters() -> None:
    assert fake_rewrite.REWRITE_SCHEMA_NAME == REWRITE_SCHEMA_NAME
    doc, checks = parse_rewrite(json.dumps(fake_rewrite.REWRITE_DOC, ensure_ascii=False))
    assert doc is not None and checks["schema"]["ok"]
    assert set(REWRITE_SCHEMA["required"]) == set(fake_rewrite.REWRITE_DOC)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_good_model_rewrite_is_used(lang: str) -> None:
    with FakeOpenAI(require_schema=True) as fake:
        result = rewrite(PROMPT, lang=lang, endpoint=fake.url, model="pe-model", **FAST)
        body = fake.requests[0]
    assert result.source == "model" and result.failure is None and result.attempts == 1
    assert result.prompt == (fake_rewrite.REWRITE_EN if lang == "en" else fake_rewrite.REWRITE_ZH)
    assert body["response_format"]["json_schema"]["name"] == REWRITE_SCHEMA_NAME
    assert body["model"] == "pe-model" and PROMPT in body["messages"][-1]["content"]
    assert result.fields and result.fields["camera"]["movement"] == "tracking"
    assert result.pair and result.pair["numbers"]["ok"] and result.pair["colours"]["ok"]
    assert all(c["ok"] for c in result.checks.values())


@pytest.mark.parametrize(("mode", "reason"), [
    ("rewrite_wrong_language", "lang (detected fr)"),
    ("rewrite_drops_entity", "entities (missing ['dog'])"),
    ("rewrite_broken_json", "json (JSONDecodeError"),
    ("error500", "http 500"),
])
def test_a_hostile_reply_falls_back_to_the_original_and_records_why(mode: str, reason: str) -> None:
    with FakeOpenAI(lambda body, attempt: mode) as fake:
        result = rewrite(PROMPT, endpoint=fake.url, model="m", **FAST)
        attempts = fake.attempts("rewrite:en")
    assert result.source == "original" and result.prompt == PROMPT
    assert reason in (result.failure or ""), result.failure
    assert result.attempts == attempts == 1 + FAST["max_retries"]  # retried per the client's policy
    record = result.to_dict()
    assert record["rewritten"] == PROMPT and record["original"] == PROMPT and record["failure"]
    if mode != "error500":  # a reply came back: its checks and the rejected text are on record
        assert record["checks"] and any(c.get("ok") is False for c in record["checks"].values())
    if mode == "rewrite_drops_entity":
        assert record["rejected"].startswith("Two children chase")


def test_a_model_that_recovers_on_retry_is_used() -> None:
    with FakeOpenAI(lambda body, attempt: "rewrite_wrong_language" if attempt == 1 else "good") as fake:
        result = rewrite(PROMPT, lang="zh", endpoint=fake.url, model="m", **FAST)
    assert result.source == "model" and result.attempts == 2 and result.prompt == fake_rewrite.REWRITE_ZH


def test_cli_rewrite_prints_the_rewrite_and_the_record() -> None:
    run = subprocess.run([sys.executable, "-m", "vidloom.cli", "rewrite", PROMPT, "--lang", "zh", "--json"],
                         capture_output=True, text=True, check=True, timeout=120)
    record = json.loads(run.stdout)
    assert record["source"] == "template" and record["lang"] == "zh" and "两只狗" in record["rewritten"]
    with FakeOpenAI(lambda body, attempt: "rewrite_drops_entity") as fake:
        bad = subprocess.run([sys.executable, "-m", "vidloom.cli", "rewrite", PROMPT, "--endpoint", fake.url,
                              "--model", "m", "--retries", "0"], capture_output=True, text=True, check=True,
                             timeout=120)
    assert bad.stdout.strip() == PROMPT and "kept the original prompt" in bad.stderr


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny "dit" run (random weights, woken up), 5 frames of 32x64."""
    return random_dit_run(tmp_path_factory.mktemp("rewrite_run"))


def _generate(argv: list[str]) -> int:
    from vidloom.cli import main

    return main(["generate", *argv])


def test_generate_rewrite_records_the_rewrite_in_the_json(run_dir: Path, tmp_path: Path) -> None:
    from training.inference.generate import generate
    from training.loop.checkpoint import load_pipeline

    out = tmp_path / "dogs.mp4"
    assert _generate(["--ckpt", str(run_dir), "--prompt", PROMPT, "--out", str(out), "--steps", "2",
                      "--rewrite", "--rewrite-lang", "zh"]) == 0
    summary: dict[str, Any] = json.loads(out.with_suffix(".json").read_text("utf-8"))
    rec = summary["rewrite"]
    assert out.is_file() and summary["prompt"] == PROMPT
    assert rec["original"] == PROMPT and rec["source"] == "template" and rec["lang"] == "zh"
    assert rec["rewritten"] == rewrite(PROMPT, lang="zh").prompt and rec["failure"] is None
    assert {"lang", "length", "numbers", "colours", "entities"} <= set(rec["checks"])
    # the video is the rewritten prompt's, not the original's
    pipe = load_pipeline(run_dir)
    import av
    import numpy as np

    with av.open(str(out)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(np.float64)
    frames = {}
    for name, text in (("rewritten", rec["rewritten"]), ("original", PROMPT)):
        v = generate(pipe, text, steps=2)
        frames[name] = ((v[:, 0].permute(1, 2, 0) + 1) * 127.5).numpy()
    assert np.abs(first - frames["rewritten"]).mean() < np.abs(first - frames["original"]).mean()
    with FakeOpenAI(lambda body, attempt: "rewrite_wrong_language") as fake:
        bad = tmp_path / "bad.mp4"
        assert _generate(["--ckpt", str(run_dir), "--prompt", PROMPT, "--out", str(bad), "--steps", "1",
                          "--rewrite", "--rewrite-endpoint", fake.url, "--rewrite-model", "m",
                          "--rewrite-retries", "0"]) == 0
    rec = json.loads(bad.with_suffix(".json").read_text("utf-8"))["rewrite"]
    assert rec["source"] == "original" and rec["rewritten"] == PROMPT
    assert "lang (detected fr)" in rec["failure"]


def test_generate_batch_rewrite_records_each_prompt(run_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text(f"{PROMPT}\na unicorn gallops\n", encoding="utf-8")
    assert _generate(["--ckpt", str(run_dir), "--prompts", str(prompts), "--out", str(tmp_path / "o"),
                      "--steps", "1", "--rewrite", "--rewrite-lang", "zh"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "o" / "index.jsonl").read_text("utf-8").splitlines()]
    assert [r["rewrite"]["source"] for r in rows] == ["template", "original"]
    assert rows[1]["rewrite"]["failure"] and rows[1]["prompt"] == "a unicorn gallops"
