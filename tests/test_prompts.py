"""Captioner prompts: every packaged prompt loads with the sha256 of its file, renders its
placeholders, and says what it must (dense: dynamic + static content; short: motion only)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from captioner.prompts import PROMPT_DIR, PROMPT_NAMES, load_prompt, render


@pytest.mark.parametrize("name", PROMPT_NAMES)
def test_every_prompt_loads_with_the_sha_of_its_file(name: str) -> None:
    prompt = load_prompt(name)
    data = (PROMPT_DIR / f"{name}.txt").read_bytes()
    assert prompt.sha256 == hashlib.sha256(data).hexdigest()
    assert prompt.name == name and len(prompt.text) > 100
    assert not prompt.text.startswith("#") and "vidloom prompt" not in prompt.text  # header not sent
    assert data.decode("utf-8").rstrip().endswith(prompt.text.splitlines()[-1])


def test_translate_prompt_renders_its_caption() -> None:
    prompt = load_prompt("translate_zh")
    assert prompt.fields == {"caption"}
    caption = "Two people in {braces} walk; the sign reads {caption}."
    text = render(prompt, caption=caption)
    assert caption in text and text.count("{caption}") == 1  # inserted verbatim, once
    assert "{caption}" not in text.replace(caption, "")
    with pytest.raises(KeyError):
        render(prompt)
    with pytest.raises(ValueError):
        render(prompt, caption="x", video="y")


def test_dense_prompts_render_unchanged_and_cover_dynamic_and_static_content() -> None:
    en, zh = load_prompt("dense_en"), load_prompt("dense_zh")
    assert render(en) == en.text and render(zh) == zh.text
    for word in ("temporal order", "camera", "appearance", "lighting", "style", "80 to 250", "no lists"):
        assert word in en.text, word
    for word in ("时间顺序", "镜头", "外观", "光线", "风格", "简体中文", "不要列表"):
        assert word in zh.text, word


def test_short_prompts_ask_for_motion_only() -> None:
    en = load_prompt("short_en").text
    assert "motion and events" in en and "camera moves" in en
    assert "do not describe the static appearance of the first frame" in en
    zh = load_prompt("short_zh").text
    assert "运动和事件" in zh and "镜头如何运动" in zh
    assert "不要描述首帧的静态外观" in zh


def test_user_prompt_directory_comes_first(tmp_path: Path) -> None:
    (tmp_path / "dense_en.txt").write_text("# mine\n\nDescribe the video {in detail}.\n", encoding="utf-8")
    mine = load_prompt("dense_en", tmp_path)
    assert mine.text == "Describe the video {in detail}."
    assert render(mine) == mine.text  # braces that are no field stay as they are
    assert mine.sha256 != load_prompt("dense_en").sha256
    assert load_prompt("short_zh", tmp_path) == load_prompt("short_zh")  # not there: the packaged one
    with pytest.raises(FileNotFoundError):
        load_prompt("nonexistent", tmp_path)
    with pytest.raises(ValueError):
        load_prompt("../dense_en")
