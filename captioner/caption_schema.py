"""The structured clip description: a versioned JSON schema, its request form, and its checks.

A clip's description has fields (``DESCRIPTION_SCHEMA``): who is in it (``subjects``), what
happens in order (``actions``), how the camera moves and frames it (``camera``), where
(``scene``), the ``lighting``, the visual ``style``, one ``content_class``, the on-screen text
(``text_overlays``) and how many shots the clip holds (``shot_count``). Closed sets are
enumerations, each with 'unknown'; a list or a count that is not known is ``null`` (an empty
list means "none": no text on screen). Free text that is not known is 'unknown'.

The VLM is asked for the description and, alongside it in the same JSON, the captions
(``REQUEST_SCHEMA`` adds ``caption_en``, ``caption_zh``, ``short_en``, ``short_zh``): the dense
captions are written by the model together with the fields rather than rendered from them (a
template reads worse and says less), and the short image-to-video captions hold motion only.
The request uses OpenAI-compatible structured outputs (``response_format``), which vLLM
serves by guided decoding; strict mode needs every property required and no extra ones, which
both schemas keep. The schema carries no ``$schema`` keyword (some strict-mode servers refuse
keywords outside their subset); it is validated here as JSON Schema draft 2020-12. It compiles
with outlines-core's ``build_regex_from_schema`` (the outlines guided-decoding backend), and the
fake server's reply matches the regex; xgrammar and OpenAI's own endpoint were not tried.

``SCHEMA_VERSION`` names the schema; a change of any field bumps it (the caption step's key
holds it, so a rerun re-captions). The catalog stores the version, one column per closed field
and the whole description as JSON (``description_columns``).
"""

from __future__ import annotations

import functools
import json
from typing import Any

SCHEMA_VERSION = "clip-v1"
SCHEMA_NAME = "vidloom_clip_v1"
UNKNOWN = "unknown"

CONTENT_CLASSES = ("nature", "people", "objects", "animation", "screen", "other")
CAMERA_MOVEMENTS = (
    "static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out",
    "dolly_in", "dolly_out", "tracking", "orbit", "handheld", "mixed",
)  # fmt: skip
CAMERA_SPEEDS = ("none", "slow", "moderate", "fast")
SHOT_SIZES = ("extreme_close_up", "close_up", "medium", "full", "wide", "extreme_wide")
CAMERA_ANGLES = ("eye_level", "high", "low", "overhead", "dutch")
BRIGHTNESS = ("dark", "dim", "normal", "bright")
LIGHT_SOURCES = ("natural", "artificial", "mixed")
STYLES = ("realistic", "cinematic", "documentary", "vintage", "animated", "cgi", "screen_capture", "other")
CAPTION_KEYS = ("caption_en", "caption_zh", "short_en", "short_zh")
# (kind, lang) of each caption key
CAPTION_OF_KEY = {"caption_en": ("dense", "en"), "caption_zh": ("dense", "zh"),
                  "short_en": ("short", "en"), "short_zh": ("short", "zh")}  # fmt: skip


def _enum(values: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "string", "enum": [*values, UNKNOWN]}


def _object(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


_TEXT = {"type": "string"}
DESCRIPTION_PROPERTIES: dict[str, Any] = {
    "subjects": {
        "type": ["array", "null"],
        "items": _object(
            {
                "description": _TEXT,  # what it is: 'a woman', 'a red car'
                "appearance": _TEXT,  # clothing, colours, size, expression
                "count": {"type": ["integer", "null"], "minimum": 0},
            }
        ),
    },
    "actions": {
        "type": ["array", "null"],
        "items": _object(
            {  # in temporal order
                "subject": _TEXT,
                "action": _TEXT,
            }
        ),
    },
    "camera": _object(
        {
            "movement": _enum(CAMERA_MOVEMENTS),
            "speed": _enum(CAMERA_SPEEDS),
            "shot_size": _enum(SHOT_SIZES),
            "angle": _enum(CAMERA_ANGLES),
        }
    ),
    "scene": _TEXT,
    "lighting": _object({"brightness": _enum(BRIGHTNESS), "source": _enum(LIGHT_SOURCES)}),
    "style": _enum(STYLES),
    "content_class": _enum(CONTENT_CLASSES),
    "text_overlays": {"type": ["array", "null"], "items": _TEXT},
    "shot_count": {"type": ["integer", "null"], "minimum": 1},
}
DESCRIPTION_SCHEMA: dict[str, Any] = {
    "title": SCHEMA_NAME,
    **_object(DESCRIPTION_PROPERTIES),
}
REQUEST_SCHEMA: dict[str, Any] = {
    **DESCRIPTION_SCHEMA,
    **_object({**DESCRIPTION_PROPERTIES, **{k: _TEXT for k in CAPTION_KEYS}}),
}

# catalog column -> path in the description (curation/schema.py ``Caption``)
ENUM_COLUMNS: dict[str, tuple[str, ...]] = {
    "content_class": ("content_class",),
    "camera_movement": ("camera", "movement"),
    "camera_speed": ("camera", "speed"),
    "shot_size": ("camera", "shot_size"),
    "camera_angle": ("camera", "angle"),
    "lighting": ("lighting", "brightness"),
    "light_source": ("lighting", "source"),
    "style": ("style",),
}


def response_format() -> dict[str, Any]:
    """The ``response_format`` of a structured request (OpenAI structured outputs, vLLM guided decoding)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "schema": REQUEST_SCHEMA, "strict": True},
    }


@functools.lru_cache(maxsize=2)
def _validator(which: str) -> Any:
    import jsonschema

    schema = REQUEST_SCHEMA if which == "request" else DESCRIPTION_SCHEMA
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(doc: Any, which: str = "request") -> list[str]:
    """The schema violations of ``doc`` ('request': description + captions, 'description'),
    each as '<path>: <message>', sorted; [] when it is valid."""
    errors = []
    for e in _validator(which).iter_errors(doc):
        path = "/".join(str(p) for p in e.absolute_path) or "(root)"
        errors.append(f"{path}: {e.message}"[:200])
    return sorted(errors)


def parse_reply(text: str) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """(the parsed document or None, checks 'json' and 'schema') of a structured reply.

    A reply that is not a JSON object fails 'json' (and 'schema', not reached); one that parses
    but breaks the schema fails 'schema' with its first violations. A ```json fence around the
    object is tolerated (a server without guided decoding may add one)."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[-1].rsplit("```", 1)[0]
    try:
        doc = json.loads(body)
    except ValueError as e:
        return None, {
            "json": {"ok": False, "error": f"{type(e).__name__}: {e}"[:200]},
            "schema": {"ok": False, "error": "not reached"},
        }
    if not isinstance(doc, dict):
        return None, {
            "json": {"ok": False, "error": f"a JSON {type(doc).__name__}, not an object"},
            "schema": {"ok": False, "error": "not reached"},
        }
    errors = schema_errors(doc)
    schema = (
        {"ok": True, "version": SCHEMA_VERSION}
        if not errors
        else {"ok": False, "version": SCHEMA_VERSION, "errors": errors[:5], "error": errors[0]}
    )
    return doc, {"json": {"ok": True}, "schema": schema}


def description(doc: dict[str, Any]) -> dict[str, Any]:
    """The description part of a document (its captions left out)."""
    return {k: doc[k] for k in DESCRIPTION_PROPERTIES if k in doc}


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = doc
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def description_columns(desc: dict[str, Any] | None) -> dict[str, Any]:
    """The catalog columns of a valid description (``Caption`` fields); all None for None."""
    if desc is None:
        return {"fields_version": None, "scene": None, "shot_count": None, "subjects": None,
                "actions": None, "text_overlays": None, "fields": None,
                **dict.fromkeys(ENUM_COLUMNS)}  # fmt: skip

    def js(v: Any) -> str | None:
        return None if v is None else json.dumps(v, ensure_ascii=False, sort_keys=True)

    return {
        "fields_version": SCHEMA_VERSION,
        **{col: _get(desc, path) for col, path in ENUM_COLUMNS.items()},
        "scene": desc.get("scene"),
        "shot_count": desc.get("shot_count"),
        "subjects": js(desc.get("subjects")),
        "actions": js(desc.get("actions")),
        "text_overlays": js(desc.get("text_overlays")),
        "fields": js(description(desc)),
    }


def unknown_description() -> dict[str, Any]:
    """A description that knows nothing: every enumeration 'unknown', lists and counts null."""
    return {
        "subjects": None,
        "actions": None,
        "camera": {"movement": UNKNOWN, "speed": UNKNOWN, "shot_size": UNKNOWN, "angle": UNKNOWN},
        "scene": UNKNOWN,
        "lighting": {"brightness": UNKNOWN, "source": UNKNOWN},
        "style": UNKNOWN,
        "content_class": UNKNOWN,
        "text_overlays": None,
        "shot_count": None,
    }
