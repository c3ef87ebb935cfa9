"""Read a short user prompt (English or Chinese) into the clip description's parts, by word lists.

``parse_prompt(text)`` finds the subjects (with their count and colours), the actions, the camera
words, the place, the light, the style and any quoted on-screen text of a prompt, using the
bilingual lists of captioner/rewrite_lexicon.py. No model, no randomness: the same text gives
the same ``Parsed``. The template rewriter (captioner/rewrite_template.py) renders it into the
dense caption style; the entity check (captioner/rewrite_checks.py) compares the subjects of a
prompt with those of its rewrite.

Counts: English number words or digits (``two dogs``, ``3 cars``; ``a``/``an`` is 1) up to four
words before the noun, across colour words and adjectives; Chinese ``两只狗``, ``3辆车``, ``一只猫``
(a numeral and a measure word) within eight characters before the noun. Colours: the colour
words of the same stretch (``a red car``, ``红色的汽车``), and English ``a girl in red``.
Chinese text is matched by substrings, longest form first, each character used once, after the
words that only look like a subject (``马路`` is a road, not a horse) are masked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from captioner import rewrite_lexicon as lex
from captioner.validate import _EN_COLOURS, _EN_WORDS, _ZH_DIGITS, _ZH_UNITS, unquoted, zh_colours

_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_EN_TOKEN = re.compile(r"[a-z][a-z'-]*|\d+")
_EN_SUFFIXES = ("", "s", "es", "e", "ed", "d", "ing", "ning", "en")
_OTHER_FORMS = frozenset(  # English words of the scene/light/style/camera lists: not nouns to check
    f for table in (lex.SCENES, lex.LIGHTING, lex.STYLE_WORDS, lex.CAMERA_WORDS, lex.SHOT_WORDS)
    for row in table for forms in row if isinstance(forms, tuple) for f in forms if f.isascii())
_QUOTES = re.compile(r'"([^"\n]+)"|“([^”\n]+)”|「([^」\n]+)」')


@dataclass
class Subject:
    """One recognised subject: canonical noun, count (None: not said), colours, where it starts."""

    key: str
    count: int | None
    colours: list[str]
    kind: str
    start: int


@dataclass
class Parsed:
    """What a prompt says, in the description's terms (unknown parts are None)."""

    lang: str
    subjects: list[Subject] = field(default_factory=list)
    actions: list[tuple[str, str]] = field(default_factory=list)  # (subject key, action)
    movement: str | None = None
    speed: str | None = None
    shot_size: str | None = None
    angle: str | None = None
    scene: tuple[str, str] | None = None  # (en phrase, zh phrase)
    lighting: tuple[str, str, str, str] | None = None  # (brightness, source, en phrase, zh phrase)
    style: str | None = None
    overlays: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)  # English nouns outside the lexicon


def prompt_language(text: str) -> str:
    """'zh' when the prompt outside quotes has a Han character, else 'en'."""
    return "zh" if _HAN.search(unquoted(text)) else "en"


def _en_word_is(word: str, form: str, stem: bool) -> bool:
    if stem:
        return any(word == form + s for s in _EN_SUFFIXES)
    return word in (form, form + "s", form + "es")


def _en_count(word: str) -> int | None:
    if word.isdigit():
        return int(word)
    if word in ("a", "an", "one", "single"):
        return 1
    return _EN_WORDS.get(word)


def _zh_count(run: str) -> int | None:
    if run.isdigit():
        return int(run)
    if any(ch in _ZH_UNITS for ch in run):
        total = num = 0
        for ch in run:
            if ch in _ZH_DIGITS:
                num = _ZH_DIGITS[ch]
            else:
                total += (num or 1) * _ZH_UNITS[ch]
                num = 0
        return total + num
    return _ZH_DIGITS.get(run) if len(run) == 1 else None


Table = tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]


def _first(text: str, table: Table, lang: str) -> str | None:
    for value, en, zh in table:
        forms = zh if lang == "zh" else en
        if any((f in text) if lang == "zh" else re.search(rf"\b{re.escape(f)}\b", text) for f in forms):
            return value
    return None


def _parse_en(text: str, out: Parsed) -> None:
    low = unquoted(text).lower()
    tokens = [(m.group(), m.start()) for m in _EN_TOKEN.finditer(low)]
    words = [w for w, _ in tokens]
    taken: set[int] = set()
    for i, word in enumerate(words):
        if i - 1 in taken and _is_action(word):  # 'a woman waves': a verb after its subject
            continue
        for key, forms, _, kind in lex.ENTITIES:
            if any(_en_word_is(word, f, stem=False) for f in forms):
                count, colours, j = None, [], i - 1
                while j >= 0 and i - j <= 4:
                    w = words[j]
                    if w in _EN_COLOURS:
                        colours.insert(0, _EN_COLOURS[w])
                    elif _en_count(w) is not None:
                        count = _en_count(w)
                        break
                    elif w not in lex.EN_ADJECTIVES and w != "the":
                        break
                    j -= 1
                if i + 2 < len(words) and words[i + 1] == "in" and words[i + 2] in _EN_COLOURS:
                    colours.append(_EN_COLOURS[words[i + 2]])
                out.subjects.append(Subject(key, count, sorted(set(colours), key=colours.index), kind,
                                            tokens[i][1]))
                taken.add(i)
                break
    for i, word in enumerate(words):
        if i in taken:
            continue
        for action, stems, _ in lex.ACTIONS:
            if any(_en_word_is(word, s, stem=True) for s in stems):
                out.actions.append((_subject_before(out.subjects, tokens[i][1]), action))
                break
    # nouns outside the lexicon: the word after a determiner or count, past colours and adjectives
    for i, word in enumerate(words[:-1]):
        if word not in ("a", "an", "the") and _en_count(word) is None:
            continue
        j = i + 1
        while j < len(words) and (words[j] in _EN_COLOURS or words[j] in lex.EN_ADJECTIVES):
            j += 1
        if j < len(words) and j not in taken and words[j] not in lex.EN_STOPWORDS \
                and _en_count(words[j]) is None and not any(w in words[j] for w in ("'",)):
            if not _is_action(words[j]) and words[j] not in _OTHER_FORMS:
                out.candidates.append(words[j])
    out.candidates = sorted(set(out.candidates), key=out.candidates.index)


def _is_action(word: str) -> bool:
    return any(_en_word_is(word, s, stem=True) for _, stems, _ in lex.ACTIONS for s in stems)


def _subject_before(subjects: list[Subject], pos: int) -> str:
    before = [s for s in subjects if s.start < pos]
    return (before[-1] if before else subjects[0]).key if subjects else "the scene"


def _parse_zh(text: str, out: Parsed) -> None:
    body = unquoted(text)
    for word in lex.ZH_NOT_ENTITIES:
        body = body.replace(word, "\0" * len(word))
    forms = sorted(((f, key, kind) for key, _, zh, kind in lex.ENTITIES for f in zh),
                   key=lambda x: -len(x[0]))
    used = [False] * len(body)
    found: list[tuple[int, int, str, str]] = []
    for form, key, kind in forms:
        for m in re.finditer(re.escape(form), body):
            if not any(used[m.start():m.end()]):
                used[m.start():m.end()] = [True] * len(form)
                found.append((m.start(), m.end(), key, kind))
    found.sort()
    prev_end = 0
    count_re = re.compile(rf"(\d+|[一两二三四五六七八九十]+)[{lex.ZH_MEASURE}]")
    for start, end, key, kind in found:
        lo = max(prev_end, start - 8)
        window = re.split(r"[，。、,.;；！？!?\s和与跟]", body[lo:start])[-1]
        counts = count_re.findall(window)
        count = _zh_count(counts[-1]) if counts else None
        out.subjects.append(Subject(key, count, zh_colours(window), kind, start))
        prev_end = end
    masked = "".join("\0" if u else ch for ch, u in zip(body, used, strict=True))
    acts = sorted(((f, a) for a, _, zh in lex.ACTIONS for f in zh), key=lambda x: -len(x[0]))
    seen: list[tuple[int, str]] = []
    for form, action in acts:
        for m in re.finditer(re.escape(form), masked):
            if not any(p <= m.start() < p + 2 for p, _ in seen):
                seen.append((m.start(), action))
                masked = masked[:m.start()] + "\0" * len(form) + masked[m.end():]
    for pos, action in sorted(seen):
        out.actions.append((_subject_before(out.subjects, pos), action))


def parse_prompt(text: str) -> Parsed:
    """The description parts a prompt states (see the module docstring); deterministic."""
    lang = prompt_language(text)
    out = Parsed(lang)
    out.overlays = [next(g for g in m.groups() if g) for m in _QUOTES.finditer(text)]
    (_parse_zh if lang == "zh" else _parse_en)(text, out)
    low = unquoted(text) if lang == "zh" else unquoted(text).lower()
    out.movement = _first(low, lex.CAMERA_WORDS, lang)
    out.speed = _first(low, lex.SPEED_WORDS, lang)
    out.shot_size = _first(low, lex.SHOT_WORDS, lang)
    out.angle = _first(low, lex.ANGLE_WORDS, lang)
    out.style = _first(low, lex.STYLE_WORDS, lang)
    for en, en_forms, zh_forms, zh in lex.SCENES:
        if _first(low, (("x", en_forms, zh_forms),), lang):
            out.scene = (en, zh)
            break
    for brightness, source, en_forms, zh_forms, en, zh in lex.LIGHTING:
        if _first(low, (("x", en_forms, zh_forms),), lang):
            out.lighting = (brightness, source, en, zh)
            break
    return out


def entity_keys(text: str, lang: str | None = None) -> list[str]:
    """The lexicon subjects a text names, canonical, in order of first mention."""
    parsed = Parsed(lang or prompt_language(text))
    (_parse_zh if parsed.lang == "zh" else _parse_en)(text, parsed)
    return list(dict.fromkeys(s.key for s in parsed.subjects))
