"""Does a rewrite keep what the user asked for? The checks between a prompt and its rewrite.

Each check is ``{"ok": bool, ...evidence}`` (the caption checks' shape, so the chat client's
retry policy and its error text read them as they read caption checks):

- ``lang``, ``length``: the rewrite is in the asked language (lingua, captioner/validate.py
  ``check_caption``) and within the dense caption bounds (``DENSE_BOUNDS``);
- ``numbers``: the rewrite names exactly the prompt's numbers, read with ``en_numbers`` /
  ``zh_numbers`` on each side in its own language; when the languages differ this is the zh<->en
  agreement check (``check_agreement``) between the prompt and the rewrite. Exact, not a subset:
  a rewrite that adds a count ("a cat" -> "two cats") changes the scene. ('a' / 'one' / '一' are
  not numbers to those readers, so a single subject can be written either way.)
- ``colours``: every colour of the prompt is named in the rewrite (``en_colours`` /
  ``zh_colours``; across languages, ``check_agreement``'s lists). A subset: the rewrite may give
  a colour to what the prompt left uncoloured ("a cat" -> "a grey cat"), never drop one.
- ``entities``: every subject noun of the prompt reappears in the rewrite. Nouns are recognised
  by the bilingual lexicon (captioner/rewrite_lexicon.py, ~60 nouns with their forms in both
  languages), so 'two dogs' is found in '两只小狗'; an English noun outside the lexicon (the word
  after a determiner or a count, past colours and adjectives: 'a unicorn') must reappear as a
  word (plural allowed) when the rewrite is English too, and is listed under ``unchecked`` when
  it is not (no dictionary to translate it). Chinese nouns outside the lexicon are not found
  at all (no segmenter): a limitation, recorded by an empty ``prompt`` list.
"""

from __future__ import annotations

import re
from typing import Any

from captioner.rewrite_parse import Parsed, _parse_en, entity_keys, prompt_language
from captioner.validate import (
    DENSE_BOUNDS,
    check_agreement,
    check_caption,
    en_colours,
    en_numbers,
    zh_colours,
    zh_numbers,
)


def _numbers(text: str, lang: str) -> list[str]:
    return zh_numbers(text) if lang == "zh" else en_numbers(text)


def _colours(text: str, lang: str) -> list[str]:
    return zh_colours(text) if lang == "zh" else en_colours(text)


def keep_checks(prompt: str, text: str, lang: str) -> dict[str, dict[str, Any]]:
    """'numbers', 'colours' and 'entities' of a rewrite ``text`` in ``lang`` against ``prompt``."""
    p_lang = prompt_language(prompt)
    if p_lang != lang:  # the zh<->en agreement check, prompt on one side, rewrite on the other
        en, zh = (prompt, text) if p_lang == "en" else (text, prompt)
        agree = check_agreement(en, zh)  # its lists are keyed by language
        p_num, r_num = agree["numbers"][p_lang], agree["numbers"][lang]
        p_col, r_col = agree["colours"][p_lang], agree["colours"][lang]
    else:
        p_num, r_num = _numbers(prompt, lang), _numbers(text, lang)
        p_col, r_col = _colours(prompt, lang), _colours(text, lang)
    num_missing = sorted(set(p_num) ^ set(r_num), key=float)
    col_missing = sorted(set(p_col) - set(r_col))
    checks = {
        "numbers": {"ok": not num_missing, "prompt": p_num, "rewrite": r_num, "missing": num_missing},
        "colours": {"ok": not col_missing, "prompt": p_col, "rewrite": r_col, "missing": col_missing},
    }
    checks["entities"] = entity_check(prompt, p_lang, text, lang)
    return checks


def entity_check(prompt: str, p_lang: str, text: str, lang: str) -> dict[str, Any]:
    """The ``entities`` check: lexicon nouns in both languages, other English nouns by word."""
    wanted, found = entity_keys(prompt, p_lang), entity_keys(text, lang)
    missing = [k for k in wanted if k not in found]
    unchecked: list[str] = []
    if p_lang == "en":
        parsed = Parsed("en")
        _parse_en(prompt, parsed)
        if lang == "en":
            words = set(re.findall(r"[a-z][a-z'-]*", text.lower()))
            missing += [w for w in parsed.candidates if not {w, w + "s", w + "es"} & words]
            wanted += parsed.candidates
        else:
            unchecked = list(parsed.candidates)
    return {"ok": not missing, "prompt": wanted, "rewrite": found, "missing": missing, "unchecked": unchecked}


def rewrite_checks(prompt: str, text: str, lang: str) -> dict[str, dict[str, Any]]:
    """Every check of a rewrite: 'lang', 'length', then ``keep_checks``."""
    checks = check_caption(text, lang, *DENSE_BOUNDS.for_lang(lang))
    return checks | keep_checks(prompt, text, lang)


def pair_agreement(en: str, zh: str) -> dict[str, dict[str, Any]]:
    """The rewrite's own en/zh captions against each other (``check_agreement``), for the record."""
    return check_agreement(en, zh)
