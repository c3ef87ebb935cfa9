"""The rewriter's deterministic fallback: a parsed prompt rendered into the dense caption style.

The training captions (captioner/prompts/structured.txt, dense_en.txt) describe first the
actions and the camera, in temporal order, then the subjects with their counts and colours,
the scene, the lighting and the style, in one plain paragraph, with a structured description
(captioner/caption_schema.py fields) alongside. ``template_rewrite(prompt)`` writes the same:
the description fields from ``parse_prompt`` (what the prompt does not say gets a plain
default: a static camera, a medium shot at eye level, soft natural light, realistic style) and
one dense caption per language.

The caption in the prompt's own language starts with the prompt itself, so every word the user
wrote is kept (the lists cannot know every noun); the other language's caption is rendered from
the recognised parts only. Counts are written as number words (two / 两) and colours from one
table, so the English and Chinese captions name the same numbers and colours. No phrase of the
template carries a number or a colour word of its own (``captioner/validate.py`` would read
'golden light' as the colour gold), so the checks compare only what the user said.
Same input, same output: no model, no randomness, no clock.
"""

from __future__ import annotations

from typing import Any

from captioner import rewrite_lexicon as lex
from captioner.caption_schema import UNKNOWN
from captioner.rewrite_parse import Parsed, Subject, parse_prompt
from captioner.signals import ZH_COLOURS

ZH_COLOUR_WORDS = {**ZH_COLOURS, "gold": "金色", "silver": "银色"}
_ZH_NOUN = {key: zh[0] for key, _, zh, _ in lex.ENTITIES}
_IRREGULAR = {"woman": "women", "man": "men", "child": "children", "person": "people", "fish": "fish",
              "sheep": "sheep", "leaf": "leaves", "baby": "babies", "butterfly": "butterflies",
              "bus": "buses", "puppy": "puppies"}
_ZH_MEASURE_OF = {"people": "位", "nature": "只", "objects": "个", "animation": "条"}
_DEFAULT_LIGHT = ("normal", "natural", "soft natural light", "柔和的自然光")
_BASE_VERB = {"flies": "fly", "crashes": "crash"}  # plural subjects: the -s form without its -s
_ACTION_ZH = {a: zh[0] for a, _, zh in lex.ACTIONS}


def _plural(key: str) -> str:
    if key in _IRREGULAR:
        return _IRREGULAR[key]
    return key + ("es" if key.endswith(("s", "sh", "ch", "x")) else "s")


def _en_subject(s: Subject, definite: bool = False) -> str:
    colours = " and ".join(s.colours)
    noun = _plural(s.key) if (s.count or 1) > 1 else s.key
    head = f"{noun} in {colours}" if colours and s.kind == "people" else f"{colours} {noun}".strip()
    if s.count and s.count > 1:
        return f"{lex.EN_COUNT_WORDS.get(s.count, str(s.count))} {head}"
    if definite:
        return f"the {head}"
    return f"{'an' if head[0] in 'aeiou' else 'a'} {head}"


def _zh_subject(s: Subject) -> str:
    colours = "和".join(ZH_COLOUR_WORDS[c] for c in s.colours)
    noun = _ZH_NOUN[s.key]
    if colours and s.kind == "people":
        colours = f"穿{colours}衣服"
    head = f"{colours}的{noun}" if colours else noun
    if s.count and s.count > 1:
        count = lex.ZH_COUNT_WORDS.get(s.count, str(s.count))
        return f"{count}{_ZH_MEASURE_OF.get(s.kind, '个')}{head}"
    return f"一{_ZH_MEASURE_OF.get(s.kind, '个')}{head}"


def _fields(p: Parsed) -> dict[str, Any]:
    kinds = [s.kind for s in p.subjects]
    content = max(set(kinds), key=lambda k: (kinds.count(k), k)) if kinds else "other"
    brightness, source = (p.lighting or _DEFAULT_LIGHT)[:2]
    movement = p.movement or "static"
    return {
        "subjects": [{"description": _en_subject(s), "appearance": ", ".join(s.colours) or UNKNOWN,
                      "count": s.count} for s in p.subjects] or None,
        "actions": [{"subject": subj, "action": act} for subj, act in p.actions] or None,
        "camera": {"movement": movement, "speed": "none" if movement == "static" else (p.speed or "slow"),
                   "shot_size": p.shot_size or "medium", "angle": p.angle or "eye_level"},
        "scene": p.scene[0] if p.scene else UNKNOWN,
        "lighting": {"brightness": brightness, "source": source},
        "style": "animated" if p.style is None and content == "animation" else p.style or "realistic",
        "content_class": content,
        "text_overlays": list(p.overlays),
        "shot_count": 1,
    }


def _sentence(text: str, lang: str) -> str:
    text = text.strip()
    end = "。" if lang == "zh" else "."
    if not text:
        return ""
    if lang == "en":
        text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?。！？" else text + end


def _en_caption(prompt: str, p: Parsed, f: dict[str, Any]) -> str:
    cam = f["camera"]
    parts = []
    if p.lang == "en":
        parts.append(_sentence(prompt, "en"))
    else:
        names = [_en_subject(s) for s in p.subjects]
        subjects = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)
        where = f" in {p.scene[0]}" if p.scene else ""
        if subjects:
            one = len(p.subjects) == 1 and (p.subjects[0].count or 1) == 1
            parts.append(_sentence(f"{subjects} appear{'s' if one else ''}{where}", "en"))
        elif p.scene:
            parts.append(_sentence(f"the video shows {p.scene[0]}", "en"))
        by_subject = {}
        for subj, act in p.actions:
            by_subject.setdefault(subj, []).append(act)
        for subj, acts in by_subject.items():
            s = next((x for x in p.subjects if x.key == subj), None)
            if s is None:  # an action with no recognised subject
                continue
            one = (s.count or 1) == 1
            name = _en_subject(s, definite=True) if one else f"the {_plural(subj)}"
            verbs = " and ".join(a if one else _BASE_VERB.get(a, a[:-1]) for a in acts)
            parts.append(_sentence(f"{name} {verbs}", "en"))
        for text in p.overlays:
            parts.append(f'On-screen text reads "{text}".')
    speed = {"slow": " slowly", "fast": " quickly"}.get(cam["speed"], "")
    shot, angle = lex.SHOT_PHRASES[cam["shot_size"]][0], lex.ANGLE_PHRASES[cam["angle"]][0]
    parts.append(f"{lex.CAMERA_PHRASES[cam['movement']][0]}{speed}, framing the action in {shot} {angle}.")
    for s in p.subjects:
        many = (s.count or 1) > 1
        colour = f", {' and '.join(s.colours)} in colour" if s.colours and s.kind != "people" else ""
        parts.append(f"{_en_subject(s, definite=True).capitalize()} {'are' if many else 'is'} clearly "
                     f"visible{colour}, with sharp, natural detail.")
    light = (p.lighting or _DEFAULT_LIGHT)[2]
    where = f"The setting is {p.scene[0]}, lit by {light}." if p.scene else f"The scene is lit by {light}."
    parts.append(where)
    style = lex.STYLE_PHRASES[f["style"]][0]
    parts.append(f"The video is shot as {style}, with smooth, continuous motion and a consistent look.")
    return " ".join(parts)


def _zh_caption(prompt: str, p: Parsed, f: dict[str, Any]) -> str:
    cam = f["camera"]
    parts = []
    if p.lang == "zh":
        parts.append(_sentence(prompt, "zh"))
    else:
        subjects = "、".join(_zh_subject(s) for s in p.subjects)
        where = f"出现在{p.scene[1]}中" if p.scene else "出现在画面中"
        if subjects:
            parts.append(_sentence(f"{subjects}{where}", "zh"))
        elif p.scene:
            parts.append(_sentence(f"画面展现了{p.scene[1]}", "zh"))
        for subj, act in p.actions:
            if subj in _ZH_NOUN:
                parts.append(_sentence(f"{_ZH_NOUN[subj]}在{_ACTION_ZH[act]}", "zh"))
        for text in p.overlays:
            parts.append(f'画面中的文字为"{text}"。')
    speed = {"slow": "缓慢地", "fast": "快速地"}.get(cam["speed"], "")
    move = lex.CAMERA_PHRASES[cam["movement"]][1]
    move = move.replace("镜头", f"镜头{speed}", 1) if speed else move
    shot, angle = lex.SHOT_PHRASES[cam["shot_size"]][1], lex.ANGLE_PHRASES[cam["angle"]][1]
    parts.append(f"{move}，以{angle}的{shot}拍摄。")
    for s in p.subjects:
        named = "和".join(ZH_COLOUR_WORDS[c] for c in s.colours)
        colour = f"，颜色为{named}" if s.colours and s.kind != "people" else ""
        parts.append(f"{_zh_subject(s)}清晰可见{colour}，细节自然清楚。")
    light = (p.lighting or _DEFAULT_LIGHT)[3]
    parts.append(f"场景位于{p.scene[1]}，由{light}照亮。" if p.scene else f"画面由{light}照亮。")
    parts.append(f"整体为{lex.STYLE_PHRASES[f['style']][1]}，运动流畅连贯，画面风格统一。")
    return "".join(parts)


def template_rewrite(prompt: str) -> dict[str, Any]:
    """The rewrite document of ``prompt``: the description fields plus ``caption_en`` and
    ``caption_zh`` (the rewriter's JSON shape, captioner/rewrite.py ``REWRITE_SCHEMA``)."""
    p = parse_prompt(prompt)
    f = _fields(p)
    return {**f, "caption_en": _en_caption(prompt, p, f), "caption_zh": _zh_caption(prompt, p, f)}
