"""Structured captioning: one VLM request per clip for its description fields and its captions.

The request carries the prompt ``structured`` and ``response_format`` with the JSON schema
(captioner/caption_schema.py). The reply is checked as a whole: 'json' (an object), 'schema'
(jsonschema against ``REQUEST_SCHEMA``), 'finish', and the caption checks of each caption in it
(language and length per caption, numbers and colours per en/zh pair, as for free-text
captions). Any failure retries the request (the client's budget); a reply that still fails is
stored with its failed checks, so it is on record and never exported.

Rows: one ``Caption`` per caption of the reply (dense en/zh, and short en/zh when asked for),
each with its own checks plus the reply's 'json', 'schema' and 'finish', and, when the schema
passed, the description's catalog columns (``description_columns``). A reply that is not JSON
gives one dense en row holding the raw reply and its failed 'json' check.
"""

from __future__ import annotations

import json
from typing import Any

from captioner.caption_schema import (
    CAPTION_OF_KEY,
    description,
    description_columns,
    parse_reply,
    response_format,
)
from curation.schema import Caption

REPLY_CHECKS = ("json", "schema", "finish")  # checks of the reply, copied onto each of its captions


def _caption_keys(short: bool) -> list[str]:
    return [k for k, (kind, _) in CAPTION_OF_KEY.items() if short or kind == "dense"]


def structured_checks(text: str, finish_reason: str | None, short: bool = True) -> dict[str, dict[str, Any]]:
    """Every check of one structured reply, flat: 'json', 'schema', 'finish', then
    '<check>_<kind>_<lang>' (lang, length) and '<check>_<kind>' (numbers, colours)."""
    from captioner.validate import DENSE_BOUNDS, FINISH_OK, SHORT_BOUNDS, check_agreement, check_caption

    doc, checks = parse_reply(text)
    checks["finish"] = {"ok": finish_reason in FINISH_OK, "finish_reason": finish_reason}
    if doc is None:
        return checks
    texts: dict[tuple[str, str], str] = {}
    for key in _caption_keys(short):
        kind, lang = CAPTION_OF_KEY[key]
        value = doc.get(key)
        texts[kind, lang] = _clean(value) if isinstance(value, str) else ""
        bounds = SHORT_BOUNDS if kind == "short" else DENSE_BOUNDS
        for name, c in check_caption(texts[kind, lang], lang, *bounds.for_lang(lang)).items():
            checks[f"{name}_{kind}_{lang}"] = c
    for kind in {k for k, _ in texts}:
        for name, c in check_agreement(texts[kind, "en"], texts[kind, "zh"]).items():
            checks[f"{name}_{kind}"] = c
    return checks


def _clean(text: str) -> str:
    from captioner.validate import STORED_MAX_CHARS, clean_caption

    return clean_caption(text)[:STORED_MAX_CHARS]


def structured_request(
    key: str, parts: list[dict[str, Any]], prompt_text: str, params: dict[str, Any], short: bool
) -> Any:
    """The ``ChatRequest`` of one clip: frames + the structured prompt, ``response_format`` in params."""
    from captioner.client import ChatRequest

    return ChatRequest(
        key=key,
        params={**params, "response_format": response_format()},
        messages=[{"role": "user", "content": [*parts, {"type": "text", "text": prompt_text}]}],
        validate=lambda text, finish: structured_checks(text, finish, short),
    )


def structured_rows(clip_id: str, r: Any, short: bool, common: dict[str, Any]) -> list[Caption]:
    """The ``Caption`` rows of a structured reply that came back (``r``: a ``ChatResult`` whose
    text is set); ``common``: the provenance fields (model, prompt_sha, backend, params, ...)."""
    from captioner.validate import STORED_MAX_CHARS

    text = r.text or ""
    checks = dict(r.checks) if r.checks else structured_checks(text, r.finish_reason, short)
    doc, _ = parse_reply(text)
    reply = {n: checks[n] for n in REPLY_CHECKS if n in checks}
    if not r.ok:
        reply["reply"] = {"ok": False, "error": r.error, "attempts": r.attempts}
    columns = description_columns(description(doc) if doc is not None and checks["schema"]["ok"] else None)
    base = {"clip_id": clip_id, "tokens": r.completion_tokens, "prompt_tokens": r.prompt_tokens,
            "finish_reason": r.finish_reason or "", **common, **columns}  # fmt: skip
    if doc is None:  # not JSON: the raw reply, on record
        return [Caption(lang="en", kind="dense", text=text[:STORED_MAX_CHARS], checks=_js(reply), **base)]
    rows = []
    for key in _caption_keys(short):
        kind, lang = CAPTION_OF_KEY[key]
        value = doc.get(key)
        own = {n[: -len(f"_{kind}_{lang}")]: c for n, c in checks.items() if n.endswith(f"_{kind}_{lang}")}
        pair = {
            n[: -len(f"_{kind}")]: c
            for n, c in checks.items()
            if n.endswith(f"_{kind}") and n[: -len(f"_{kind}")] in ("numbers", "colours")
        }
        rows.append(  # a caption missing from the reply is '' and fails its lang and length checks
            Caption(
                lang=lang,  # type: ignore[arg-type]
                kind=kind,  # type: ignore[arg-type]
                text=_clean(value) if isinstance(value, str) else "",
                checks=_js({**own, **pair, **reply}),
                **base,
            )
        )
    return rows


def _js(checks: dict[str, Any]) -> str:
    return json.dumps(checks, ensure_ascii=False, sort_keys=True)
