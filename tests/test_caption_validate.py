"""Caption parsing and checks: boilerplate stripping, lingua language ID, length bounds, and zh<->en
agreement on numbers and colours."""

from __future__ import annotations

import json

import pytest

from captioner.validate import (
    DENSE_BOUNDS,
    SHORT_BOUNDS,
    check_agreement,
    check_caption,
    clean_caption,
    detect_language,
    failed,
    validate_pair,
    zh_numbers,
)

EN = (
    "Two people in red jackets walk along a beach at sunset while the camera pans left. "
    "Three white gulls fly over the blue water, and the sky turns orange."
)
ZH = "两个穿红色夹克的人在日落时沿着海滩行走，镜头向左平移。三只白色的海鸥飞过蓝色的海面，天空渐渐变成橙色。"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Sure! Here is a dense caption of the video:\n\nA man walks.\n\nLet me know if you need more!",
         "A man walks."),
        ("Caption: A dog runs across the lawn.", "A dog runs across the lawn."),
        ("<think>The user wants a caption.</think>\n**Caption:** \"A man walks.\"", "A man walks."),
        ("The frames show a street...</think>A cat sleeps.", "A cat sleeps."),
        ("```text\nA dog runs.\n```", "A dog runs."),
        ("- A man walks.\n- A dog   runs.", "A man walks. A dog runs."),
        ("## Description\nThe **red** car turns.", "The red car turns."),
        ("好的，以下是视频的描述：\n一个男人在海边\n行走。\n希望这对您有帮助！", "一个男人在海边行走。"),
        ("“一只猫在睡觉。”", "一只猫在睡觉。"),
        ("Okay here's the caption: A cat sleeps. I hope this helps.", "A cat sleeps."),
        # content that merely looks like boilerplate stays
        ("Great waves crash. The birds feel free.", "Great waves crash. The birds feel free."),
        ('He holds a sign that says "Sure" and smiles.', 'He holds a sign that says "Sure" and smiles.'),
        ("好几个孩子在草地上奔跑。", "好几个孩子在草地上奔跑。"),
    ],
)  # fmt: skip
def test_clean_caption(raw: str, clean: str) -> None:
    assert clean_caption(raw) == clean


def test_clean_caption_unclosed_think_is_empty() -> None:
    assert clean_caption("<think>I should describe the man") == ""


def test_language_checks() -> None:
    assert check_caption(EN, "en")["lang"] == {"ok": True, "detected": "en"}
    assert check_caption(ZH, "zh")["lang"] == {"ok": True, "detected": "zh"}
    french = "Deux personnes en veste rouge marchent sur la plage au coucher du soleil, la caméra suit."
    assert check_caption(french, "en")["lang"] == {"ok": False, "detected": "fr"}
    assert check_caption(ZH, "en")["lang"] == {"ok": False, "detected": "zh"}
    assert check_caption(EN, "zh")["lang"]["ok"] is False
    assert check_caption("", "en")["lang"] == {"ok": False, "detected": None}


def test_quoted_on_screen_text_does_not_change_the_language() -> None:
    sign = "欢迎收看新闻联播今天是二零二四年一月一日星期一本节目由某某公司赞助播出"
    assert detect_language(f"{EN} {sign}") == "zh"  # unquoted, the sign wins
    assert detect_language(f'{EN} On-screen text reads "{sign}".') == "en"
    assert detect_language(f'{ZH}画面中的文字为"Breaking news tonight from the capital city".') == "zh"


def test_length_bounds() -> None:
    assert check_caption(EN, "en")["length"] == {"ok": True, "chars": len(EN), "min": 40, "max": 2000}
    assert check_caption("A man walks.", "en")["length"]["ok"] is False
    assert check_caption("A man walks.", "en", *SHORT_BOUNDS.for_lang("en"))["length"]["ok"] is True
    assert check_caption(EN * 30, "en")["length"]["ok"] is False
    zh = check_caption("一个 男人 在 走路。", "zh")["length"]  # spaces do not count
    assert (zh["chars"], zh["ok"]) == (8, False)
    assert check_caption(ZH, "zh")["length"] == {"ok": True, "chars": len(ZH), "min": 20, "max": 1000}
    assert check_caption("一" * 1001, "zh")["length"]["ok"] is False


def test_agreement_passes_when_numbers_and_colours_match() -> None:
    checks = check_agreement(EN, ZH)
    assert checks["numbers"] == {"ok": True, "en": ["2", "3"], "zh": ["2", "3"], "missing": []}
    assert checks["colours"]["ok"] is True
    assert checks["colours"]["en"] == ["blue", "orange", "red", "white"]


def test_a_changed_number_fails_with_the_missing_value() -> None:
    checks = check_agreement(EN, ZH.replace("三只", "四只"))
    assert checks["numbers"] == {"ok": False, "en": ["2", "3"], "zh": ["2", "4"], "missing": ["3", "4"]}
    assert checks["colours"]["ok"] is True
    digits = check_agreement("A 4.5-second clip of 12 cars.", "一段4.5秒的片段，有13辆车。")["numbers"]
    assert digits["missing"] == ["12", "13"]


def test_a_changed_colour_fails_with_the_missing_colour() -> None:
    checks = check_agreement(EN, ZH.replace("蓝色的海面", "绿色的海面"))
    assert checks["colours"]["ok"] is False
    assert checks["colours"]["missing"] == ["blue", "green"]
    assert checks["numbers"]["ok"] is True
    dropped = check_agreement("A black cat on a gray sofa.", "一只黑猫坐在沙发上。")["colours"]
    assert (dropped["ok"], dropped["missing"]) == (False, ["gray"])


def test_chinese_numerals_and_liang() -> None:
    assert zh_numbers("两个人，三只猫，十五辆车，二十一只鸟，一百零五棵树，两百米，一万两千人") == [
        "2", "3", "15", "21", "105", "200", "12000",
    ]  # fmt: skip
    assert zh_numbers("二零二四年，三四个孩子") == ["3", "4", "2024"]
    assert check_agreement("two people and twenty-five birds", "两个人和二十五只鸟")["numbers"]["ok"] is True
    assert check_agreement("Seven boats.", "7艘船。")["numbers"]["ok"] is True


def test_words_that_are_not_numbers_or_colours_are_ignored() -> None:
    # 一个 is the article, 第二 an ordinal, 十分 "very", 四周 "around", 黄昏 "dusk", 白天 "daytime"
    en = "A man walks slowly at dusk. The second car is very bright in the daytime, with trees all around."
    zh = "一个男人在黄昏时缓慢行走。第二辆车在白天十分明亮，四周都是树。"
    checks = check_agreement(en, zh)
    assert checks["numbers"] == {"ok": True, "en": [], "zh": [], "missing": []}
    assert checks["colours"] == {"ok": True, "en": [], "zh": [], "missing": []}
    # compounds that are one colour, and quoted on-screen text, which is not translated
    compounds = check_agreement("golden hair and a pink dress", "金黄色的头发和粉红色的裙子")["colours"]
    assert compounds["ok"] and compounds["zh"] == ["gold", "pink"]
    quoted = check_agreement('A sign reads "3 RED APPLES".', '招牌上写着"3 RED APPLES"。')
    assert quoted == {k: {"ok": True, "en": [], "zh": [], "missing": []} for k in ("numbers", "colours")}


def test_validate_pair_and_failed() -> None:
    checks = validate_pair(EN, ZH)
    assert list(checks) == ["lang_en", "length_en", "lang_zh", "length_zh", "numbers", "colours"]
    assert failed(checks) == []
    json.dumps(checks)  # stored as Caption.checks
    bad = validate_pair(EN, EN.replace("Two", "Four"), DENSE_BOUNDS)
    assert failed(bad) == ["lang_zh", "numbers", "colours"]
    short = validate_pair("The man turns left.", "男人向左转身。", SHORT_BOUNDS)
    assert failed(short) == []
