"""Parse and check captions: strip chat boilerplate, identify the language, bound the length,
and check that the zh and en captions of a clip agree on numbers and colours (docs/architecture.md
"Captioner": failures are recorded in ``Caption.checks``, never hidden).

Valid or absent: ``check_reply`` is what the client asks of every model reply (a failed check is
retried like a transport fault, captioner/client.py), and ``exportable`` is the only door to a
shard: per kind, the en + zh pair when both captions exist and every check of both passed,
otherwise nothing of that kind. Stored text is cut at ``STORED_MAX_CHARS`` (a valid caption is
far shorter; the cut only bounds what a failed one costs in the catalog).

Decisions:
- Quoted spans ("...", “...”, 「...」, 『...』) are on-screen text copied verbatim, not the
  caption's language nor something translated: language ID and agreement ignore them. A long
  quoted Chinese sign flips lingua's verdict on an English caption otherwise.
- Language ID: one lingua detector over en, zh and eight common confusers, built once per
  process (``lru_cache``), models loaded lazily. Measured on the 2-core dev machine: the lazy
  build takes < 1 ms and the first English text ~1.0-1.3 s (it loads the Latin-script models);
  ``with_preloaded_language_models()`` moves 0.6-1.0 s into the build, holds ~50 MB more
  memory for models a zh-only run never needs, and is no faster per call afterwards. Per call:
  ~0.1-0.2 ms for an English dense caption, ~0.02-0.04 ms for a Chinese one.
- Agreement is set equality: every number (or colour) named on one side is named on the
  other; repeats are not counted. The value 1 from words is ignored on both sides: 一 is also
  the Chinese article (一个男人 = "a man") and in 一起/一直/一些, 'one' an English pronoun.
  Arabic digits always count. Chinese numerals after 第 (ordinals) and 0 from words are
  ignored; English ordinals are never read. Idioms whose numeral or colour character is not a
  number or colour (十分 "very", 四周 "around", 黄昏 "dusk", 白天 "daytime", 金属 "metal", ...) are
  removed before reading.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

C = TypeVar("C", bound="_CaptionLike")

# --- cleaning ---------------------------------------------------------------------------

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_THINK_OPEN = re.compile(r"<think>.*", re.S | re.I)  # unclosed: the reply is all reasoning
_THINK_CLOSE = re.compile(r"^.*?</think>", re.S | re.I)  # the opening tag was in the template
_FENCE = re.compile(r"^\s*```[\w-]*\s*$", re.M)
_BOLD = re.compile(r"(\*\*|__)(.+?)\1", re.S)
_HEADING = re.compile(r"^\s*#{1,6}\s.*$", re.M)  # a title line, not content
_BULLET = re.compile(r"^\s*(?:[-*•·]|\d+[.)])\s+", re.M)
_LEAD = [
    re.compile(p, re.I)
    for p in (
        r"^(?:sure|certainly|of course|okay|ok|absolutely)(?:[!,.]+|\s+(?=here\b))\s*",
        r"^(?:here(?:'s| is| are)|below is|the following is)\b[^:\n]{0,80}:\s*",
        r"^(?:dense |short |video )?(?:caption|description)\s*:\s*",
        r"^(?:好的|当然|当然可以|没问题)[，,！!。.]+\s*",
        r"^(?:以下是|下面是|这是)[^：:\n]{0,40}[：:]\s*",
        r"^(?:视频)?(?:描述|字幕|标题|说明)[：:]\s*",
    )
]
_TRAIL = re.compile(  # a sign-off sentence at the end
    r"(?:^|(?<=[.!?。！？]))\s*(?:(?:let me know|i hope this|hope this|feel free|"
    r"if you (?:need|want|would like)|would you like)\b|希望(?:这|以上|对您)|如果(?:您|你)(?:需要|还|有)|"
    r"如需|如有其他)[^\n]*$",
    re.I,
)
_WRAP = [('"', '"'), ("'", "'"), ("“", "”"), ("「", "」"), ("『", "』")]
_CJK = r"\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_GAP = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")


def clean_caption(text: str) -> str:
    """The caption content of a model's reply: reasoning blocks, chat preamble and sign-off,
    markdown (fences, heading lines, bold, bullets) and quotes wrapping the whole text removed,
    whitespace collapsed (and removed between CJK characters, where a line break was)."""
    t = _THINK_CLOSE.sub("", _THINK_OPEN.sub("", _THINK.sub("", text)))
    t = _FENCE.sub("", t)
    t = _HEADING.sub("", t)
    t = _BOLD.sub(r"\2", t)
    t = _BULLET.sub("", t).strip()
    changed = True
    while changed:
        before = t
        for pattern in _LEAD:
            t = pattern.sub("", t).lstrip()
        t = _TRAIL.sub("", t).rstrip()
        for left, right in _WRAP:
            inner = t[len(left) : -len(right)]
            if len(t) >= 2 and t.startswith(left) and t.endswith(right) and left not in inner:
                t = inner.strip()
        changed = t != before
    t = re.sub(r"\s+", " ", t).strip()
    return _CJK_GAP.sub("", t)


_QUOTED = re.compile(r'"[^"\n]*"|“[^”\n]*”|「[^」\n]*」|『[^』\n]*』')


def unquoted(text: str) -> str:
    """The text without its quoted spans (on-screen text copied verbatim)."""
    return _QUOTED.sub(" ", text)


# --- language ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _detector() -> Any:
    try:
        from lingua import Language, LanguageDetectorBuilder
    except ImportError as e:  # the 'caption' extra
        raise ImportError("language checks need lingua: pip install 'vidloom[caption]'") from e
    langs = ("ENGLISH", "CHINESE", "JAPANESE", "KOREAN", "FRENCH", "GERMAN", "SPANISH", "RUSSIAN",
             "PORTUGUESE", "ITALIAN")  # fmt: skip
    return LanguageDetectorBuilder.from_languages(*(getattr(Language, n) for n in langs)).build()


def detect_language(text: str) -> str | None:
    """ISO 639-1 code ('en', 'zh', 'fr', ...) of the text outside quotes, None if undetermined
    (no letters). A text that is all quotes is judged whole."""
    body = unquoted(text)
    if not any(ch.isalpha() for ch in body):
        body = text
    lang = _detector().detect_language_of(body)
    return None if lang is None else lang.iso_code_639_1.name.lower()


# --- length -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LengthBounds:
    """Caption length bounds in characters (zh: non-space characters; en: characters)."""

    en_min: int
    en_max: int
    zh_min: int
    zh_max: int

    def for_lang(self, lang: str) -> tuple[int, int]:
        return (self.zh_min, self.zh_max) if lang == "zh" else (self.en_min, self.en_max)


# Dense: 80-250 words asked for is ~450-1,500 en chars / ~150-500 zh chars; the bounds leave
# room for the shorter signals captions and catch empty, truncated or runaway outputs.
DENSE_BOUNDS = LengthBounds(en_min=40, en_max=2000, zh_min=20, zh_max=1000)
SHORT_BOUNDS = LengthBounds(en_min=10, en_max=400, zh_min=5, zh_max=200)


def caption_chars(text: str, lang: str) -> int:
    """Length in characters: Chinese counts every non-space character (one per CJK character),
    English every character of the whitespace-collapsed text."""
    if lang == "zh":
        return sum(not ch.isspace() for ch in text)
    return len(" ".join(text.split()))


STORED_MAX_CHARS = 8000  # 4x the longest valid caption (DENSE_BOUNDS.en_max)
FINISH_OK = ("stop", "", None)  # a server that does not say why it stopped has not said 'length'


def check_caption(
    text: str, lang: str, min_chars: int | None = None, max_chars: int | None = None
) -> dict[str, dict[str, Any]]:
    """Language and length checks of one (cleaned) caption; bounds default to DENSE_BOUNDS.
    The language is identified on the first ``STORED_MAX_CHARS`` characters (a runaway reply
    fails on length anyway, and lingua's time grows with the text)."""
    lo, hi = DENSE_BOUNDS.for_lang(lang)
    lo = lo if min_chars is None else min_chars
    hi = hi if max_chars is None else max_chars
    detected = detect_language(text[:STORED_MAX_CHARS]) if text.strip() else None
    n = caption_chars(text, lang)
    return {
        "lang": {"ok": detected == lang, "detected": detected},
        "length": {"ok": lo <= n <= hi, "chars": n, "min": lo, "max": hi},
    }


# --- zh <-> en agreement ----------------------------------------------------------------

_EN_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen " \
    "fifteen sixteen seventeen eighteen nineteen".split()  # fmt: skip
_EN_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
            "eighty": 80, "ninety": 90}  # fmt: skip
_EN_WORDS = {w: i for i, w in enumerate(_EN_UNITS)} | _EN_TENS
_EN_NUM = re.compile(
    r"\b(?P<tens>" + "|".join(_EN_TENS) + r")[- ](?P<unit>one|two|three|four|five|six|seven|eight|nine)\b"
    r"|\b(?P<word>" + "|".join(_EN_WORDS) + r")\b"
    r"|(?P<digits>\d{1,3}(?:,\d{3})+(?!\d)|\d+(?:\.\d+)?)",
    re.I,
)
_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9}  # fmt: skip
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
_ZH_NUM = re.compile(r"(?P<ord>第)?(?P<run>[零〇一二两三四五六七八九十百千万]+)|(?P<digits>\d+(?:\.\d+)?)")
_ZH_NOT_NUMBERS = (
    "十分 四周 四处 四面 八方 五颜六色 七彩 三三两两 两侧 两边 两旁 两者 一些 一起 一直 一切 万一 千万 "
    "百货 三角 不三不四 乱七八糟 十字 一样 一边 一般 一下 唯一 统一"
).split()

_EN_COLOURS = {
    "red": "red", "reddish": "red", "crimson": "red", "scarlet": "red", "blue": "blue",
    "bluish": "blue", "green": "green", "greenish": "green", "yellow": "yellow",
    "yellowish": "yellow", "white": "white", "whitish": "white", "black": "black",
    "orange": "orange", "orangish": "orange", "purple": "purple", "purplish": "purple",
    "violet": "purple", "pink": "pink", "pinkish": "pink", "brown": "brown", "brownish": "brown",
    "gray": "gray", "grey": "gray", "grayish": "gray", "greyish": "gray", "gold": "gold",
    "golden": "gold", "blond": "gold", "blonde": "gold", "silver": "silver", "silvery": "silver",
}  # fmt: skip
_EN_COLOUR = re.compile(r"\b(" + "|".join(_EN_COLOURS) + r")\b", re.I)
_ZH_COLOURS = {"红": "red", "蓝": "blue", "绿": "green", "黄": "yellow", "白": "white", "黑": "black",
               "橙": "orange", "橘": "orange", "紫": "purple", "粉": "pink", "棕": "brown", "褐": "brown",
               "灰": "gray", "金": "gold", "银": "silver"}  # fmt: skip
_ZH_COMPOUNDS = {"黄金": "gold", "金黄": "gold", "粉红": "pink"}  # one colour, not two
_ZH_COMPOUND = re.compile("|".join(_ZH_COMPOUNDS))
_ZH_NOT_COLOURS = (
    "黄昏 白天 明白 空白 苍白 蛋白 白板 白菜 黑暗 黑夜 黑板 金属 现金 资金 金融 金鱼 金字塔 银行 收银 银河 "
    "粉丝 粉末 面粉 红绿灯 网红 红薯 紫外 灰尘 灰烬 棕榈 蓝牙 黄瓜"
).split()


def _canon(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _zh_run_values(run: str) -> list[int]:
    """Values of a run of Chinese numeral characters: positional (三十五 = 35, 两百 = 200), a
    digit string (二零二四 = 2024), or two numbers side by side (三四 = 'three or four')."""
    if any(ch in _ZH_UNITS for ch in run):
        total = section = num = 0
        for ch in run:
            if ch in _ZH_DIGITS:
                num = _ZH_DIGITS[ch]
            elif ch == "万":
                total += (section + num) * 10000
                section = num = 0
            else:
                section += (num or 1) * _ZH_UNITS[ch]
                num = 0
        return [total + section + num]
    digits = [_ZH_DIGITS[ch] for ch in run]
    if len(digits) >= 3:
        return [int("".join(map(str, digits)))]
    return digits


def _strip(text: str, words: list[str]) -> str:
    for w in words:
        text = text.replace(w, " ")
    return text


def en_numbers(text: str) -> list[str]:
    """Sorted distinct numbers of an English caption outside quotes, as canonical strings."""
    found: set[str] = set()
    for m in _EN_NUM.finditer(unicodedata.normalize("NFKC", unquoted(text))):
        if m["digits"]:
            found.add(_canon(float(m["digits"].replace(",", ""))))
            continue
        if m["tens"]:
            value = _EN_TENS[m["tens"].lower()] + _EN_WORDS[m["unit"].lower()]
        else:
            value = _EN_WORDS[m["word"].lower()]
        if value > 1:
            found.add(str(value))
    return sorted(found, key=float)


def zh_numbers(text: str) -> list[str]:
    """Sorted distinct numbers of a Chinese caption outside quotes, as canonical strings."""
    found: set[str] = set()
    body = _strip(unicodedata.normalize("NFKC", unquoted(text)), _ZH_NOT_NUMBERS)
    for m in _ZH_NUM.finditer(body):
        if m["digits"]:
            found.add(_canon(float(m["digits"])))
        elif not m["ord"]:
            found.update(str(v) for v in _zh_run_values(m["run"]) if v > 1)
    return sorted(found, key=float)


def en_colours(text: str) -> list[str]:
    """Sorted distinct basic colours named in an English caption outside quotes."""
    return sorted({_EN_COLOURS[m.lower()] for m in _EN_COLOUR.findall(unquoted(text))})


def zh_colours(text: str) -> list[str]:
    """Sorted distinct basic colours named in a Chinese caption outside quotes."""
    body = _strip(unquoted(text), _ZH_NOT_COLOURS)
    found = {_ZH_COMPOUNDS[w] for w in _ZH_COMPOUND.findall(body)}
    found |= {_ZH_COLOURS[ch] for ch in _ZH_COMPOUND.sub(" ", body) if ch in _ZH_COLOURS}
    return sorted(found)


def _agree(en: list[str], zh: list[str], key: Any = None) -> dict[str, Any]:
    missing = sorted(set(en) ^ set(zh), key=key)
    return {"ok": not missing, "en": en, "zh": zh, "missing": missing}


def check_agreement(en: str, zh: str) -> dict[str, dict[str, Any]]:
    """zh <-> en agreement on numbers and colours.

    Each check is ok when both sides name the same set; ``missing`` lists what only one side
    names (which side: compare with its ``en`` / ``zh`` lists).
    """
    return {
        "numbers": _agree(en_numbers(en), zh_numbers(zh), key=float),
        "colours": _agree(en_colours(en), zh_colours(zh)),
    }


# --- all checks -------------------------------------------------------------------------


def validate_pair(en: str, zh: str, bounds: LengthBounds = DENSE_BOUNDS) -> dict[str, dict[str, Any]]:
    """Every check of a clip's (cleaned) en and zh captions: lang_en, length_en, lang_zh,
    length_zh, numbers, colours. Each value has an 'ok' flag (JSON-serialisable)."""
    checks: dict[str, dict[str, Any]] = {}
    for lang, text in (("en", en), ("zh", zh)):
        one = check_caption(text, lang, *bounds.for_lang(lang))
        checks[f"lang_{lang}"], checks[f"length_{lang}"] = one["lang"], one["length"]
    return checks | check_agreement(en, zh)


def failed(checks: dict[str, dict[str, Any]]) -> list[str]:
    """Names of the failed checks, in order."""
    return [name for name, check in checks.items() if not check.get("ok", True)]


def check_reply(
    text: str, finish_reason: str | None, lang: str, bounds: LengthBounds = DENSE_BOUNDS,
    english: str | None = None,
) -> dict[str, dict[str, Any]]:
    """The checks of one model reply, on its cleaned text: 'lang', 'length' (empty or missing
    content fails both), 'finish' (cut by ``finish_reason='length'``, or filtered), and for a
    translation of ``english`` the pair's 'numbers' and 'colours' agreement."""
    clean = clean_caption(text)
    checks = check_caption(clean, lang, *bounds.for_lang(lang))
    checks["finish"] = {"ok": finish_reason in FINISH_OK, "finish_reason": finish_reason}
    if english is not None:
        checks |= check_agreement(english, clean)
    return checks


REQUIRED_CHECKS = ("lang", "length", "numbers", "colours")  # what a caption needs to reach a shard


class _CaptionLike(Protocol):
    lang: str
    kind: str
    text: str
    checks: str


def caption_valid(caption: _CaptionLike) -> bool:
    """Whether a stored caption may go into a shard: its recorded checks include every one of
    ``REQUIRED_CHECKS`` and all passed, and its text is non-empty and within the stored cap."""
    try:
        checks = json.loads(caption.checks or "{}")
    except ValueError:
        return False
    if not isinstance(checks, dict) or any(name not in checks for name in REQUIRED_CHECKS):
        return False
    if not caption.text.strip() or len(caption.text) > STORED_MAX_CHARS:
        return False
    return all(isinstance(c, dict) and c.get("ok") is True for c in checks.values())


def exportable(captions: Iterable[C]) -> list[C]:
    """The captions a shard may hold, in the given order: of each kind the en + zh pair when
    both exist and both are ``caption_valid``; nothing of a kind where either is missing or failed
    (half a pair, or a pair that disagrees, is not a training caption)."""
    captions = list(captions)
    pairs: dict[str, dict[str, C]] = {}
    for c in captions:
        pairs.setdefault(c.kind, {})[c.lang] = c
    ok = {k for k, p in pairs.items() if all(lang in p and caption_valid(p[lang]) for lang in ("en", "zh"))}
    return [c for c in captions if c.kind in ok and c.lang in ("en", "zh") and pairs[c.kind][c.lang] is c]
