"""The prompt rewriter ("PE"): a short user prompt -> the dense structured caption style of training.

The DiT was trained on dense captions (captioner/prompts/structured.txt: actions and camera in
order, then subjects with counts and colours, scene, light, style), in English or Chinese
(``en.txt`` / ``zh.txt`` of a shard). A user types "two dogs chase a red ball". ``rewrite``
expands it into that style, in the prompt's language (``lang='auto'``) or the one asked for.

Two sources:

- **model**: with an ``endpoint``, one chat request through the OpenAI-compatible client
  (captioner/client.py) to any chat model: the prompt ``rewrite`` plus the user's text, with
  ``response_format`` json_schema ``REWRITE_SCHEMA`` (the clip description fields of
  captioner/caption_schema.py plus ``caption_en`` and ``caption_zh``). The reply is validated
  as a whole ('json', 'schema', 'finish', then captioner/rewrite_checks.py on the caption of
  the target language: 'lang', 'length', 'numbers', 'colours', 'entities'). A failed check is
  retried within the client's budget (its retry policy); a reply that still fails, or no reply
  at all, falls back to the **original** prompt, with the reason recorded. A bad rewrite is
  never used.
- **template**: without an endpoint, the deterministic template (captioner/rewrite_template.py),
  checked the same way; it too falls back to the original prompt if a check fails.

``RewriteResult.to_dict()`` is what generation records: original, rewritten (the text used),
source (model | template | original), lang, checks, failure (None or the reason), the
rejected text when there was one, the model, attempts, the description fields and both
captions with their own en/zh agreement (``pair``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from typing import Any

from captioner.caption_schema import DESCRIPTION_PROPERTIES, description
from captioner.rewrite_checks import pair_agreement, rewrite_checks
from captioner.rewrite_parse import prompt_language

REWRITE_SCHEMA_NAME = "vidloom_rewrite_v1"
_TEXT = {"type": "string"}
REWRITE_PROPERTIES = {**DESCRIPTION_PROPERTIES, "caption_en": _TEXT, "caption_zh": _TEXT}
REWRITE_SCHEMA: dict[str, Any] = {"title": REWRITE_SCHEMA_NAME, "type": "object",
                                  "properties": REWRITE_PROPERTIES, "required": list(REWRITE_PROPERTIES),
                                  "additionalProperties": False}
LANGS = ("auto", "en", "zh")
DEFAULT_PARAMS = {"temperature": 0.2, "max_tokens": 1500, "seed": 0}


@dataclass
class RewriteResult:
    """One rewrite and its record (``to_dict``); ``prompt`` is the text to generate from."""

    original: str
    prompt: str
    source: str  # 'model' | 'template' | 'original'
    lang: str
    checks: dict[str, dict[str, Any]]
    failure: str | None = None
    rejected: str | None = None
    model: str | None = None
    attempts: int = 0
    fields: dict[str, Any] | None = None
    captions: dict[str, str] | None = None
    pair: dict[str, dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["rewritten"] = d.pop("prompt")
        return d


def response_format() -> dict[str, Any]:
    """The strict json_schema ``response_format`` of a rewrite request."""
    return {"type": "json_schema", "json_schema": {"name": REWRITE_SCHEMA_NAME, "schema": REWRITE_SCHEMA,
                                                   "strict": True}}


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(REWRITE_SCHEMA)
    return jsonschema.Draft202012Validator(REWRITE_SCHEMA)


def parse_rewrite(text: str) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """(document or None, 'json' and 'schema' checks) of a rewrite reply (a ```json fence is allowed)."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[-1].rsplit("```", 1)[0]
    try:
        doc = json.loads(body)
    except ValueError as e:
        return None, {"json": {"ok": False, "error": f"{type(e).__name__}: {e}"[:200]},
                      "schema": {"ok": False, "error": "not reached"}}
    if not isinstance(doc, dict):
        return None, {"json": {"ok": False, "error": f"a JSON {type(doc).__name__}, not an object"},
                      "schema": {"ok": False, "error": "not reached"}}
    errors = sorted(f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"[:200]
                    for e in _validator().iter_errors(doc))
    schema = {"ok": True} if not errors else {"ok": False, "errors": errors[:5], "error": errors[0]}
    return doc, {"json": {"ok": True}, "schema": schema}


def _caption(doc: dict[str, Any] | None, lang: str) -> str:
    from captioner.validate import clean_caption

    value = (doc or {}).get(f"caption_{lang}")
    return clean_caption(value) if isinstance(value, str) else ""


def reply_checks(text: str, finish_reason: str | None, prompt: str, lang: str) -> dict[str, dict[str, Any]]:
    """Every check of one model reply: 'json', 'schema', 'finish', then ``rewrite_checks`` of
    its ``caption_<lang>`` against the prompt (not reached when the reply is not a JSON object)."""
    from captioner.validate import FINISH_OK

    doc, checks = parse_rewrite(text)
    checks["finish"] = {"ok": finish_reason in FINISH_OK, "finish_reason": finish_reason}
    if doc is None:
        return checks
    return checks | rewrite_checks(prompt, _caption(doc, lang), lang)


def target_language(prompt: str, lang: str = "auto") -> str:
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, got {lang!r}")
    return prompt_language(prompt) if lang == "auto" else lang


def _record(original: str, lang: str, doc: dict[str, Any] | None, checks: dict[str, Any], source: str,
            failure: str | None, **kw: Any) -> RewriteResult:
    text = _caption(doc, lang)
    captions = {k: _caption(doc, k) for k in ("en", "zh")} if doc is not None else None
    pair = pair_agreement(captions["en"], captions["zh"]) if captions and all(captions.values()) else None
    fields = description(doc) if doc is not None and checks.get("schema", {}).get("ok", True) else None
    if failure is None:
        return RewriteResult(original, text, source, lang, checks, None, None, fields=fields,
                             captions=captions, pair=pair, **kw)
    return RewriteResult(original, original, "original", lang, checks, failure, text or None, fields=fields,
                         captions=captions, pair=pair, **kw)


def template_rewrite_result(prompt: str, lang: str = "auto") -> RewriteResult:
    """The template rewrite of ``prompt``, checked; the original prompt when a check fails."""
    from captioner.rewrite_template import template_rewrite
    from captioner.validate import failed

    lang = target_language(prompt, lang)
    doc = template_rewrite(prompt)
    checks = rewrite_checks(prompt, _caption(doc, lang), lang)
    bad = [f"{n} {checks[n].get('missing') or ''}".strip() for n in failed(checks)]
    unchecked = checks["entities"].get("unchecked")
    if unchecked:  # the template renders lexicon nouns only: these are certainly not in the rewrite
        bad.append(f"entities {unchecked} (outside the lexicon, not translated)")
    failure = f"template: failed checks {'; '.join(bad)}" if bad else None
    return _record(prompt, lang, doc, checks, "template", failure)


def model_rewrite_result(prompt: str, endpoint: str, model: str, lang: str = "auto",
                         api_key: str | None = None, params: dict[str, Any] | None = None,
                         **client_kw: Any) -> RewriteResult:
    """One chat request for the rewrite (``client_kw``: ``ChatClient`` options such as max_retries,
    timeout_s, backoff_s); the original prompt, with the reason, when the reply never passes."""
    from captioner.client import ChatClient, ChatRequest
    from captioner.prompts import load_prompt

    lang = target_language(prompt, lang)
    message = f"{load_prompt('rewrite').text}\n{prompt}\n\nTarget language of the video prompt: {lang}."
    req = ChatRequest(
        key=f"rewrite:{lang}", messages=[{"role": "user", "content": message}],
        params={**DEFAULT_PARAMS, **(params or {}), "model": model, "response_format": response_format()},
        validate=lambda text, finish: reply_checks(text, finish, prompt, lang),
    )
    client = ChatClient(endpoint, api_key, concurrency=1, **client_kw)
    (result,) = list(client.run_sync([req]))  # run to the end: the client's loop and thread are done
    doc = parse_rewrite(result.text)[0] if result.text else None
    checks = result.checks or {}
    failure = None if result.ok else f"model: {result.error}"
    return _record(prompt, lang, doc, checks, "model", failure, model=result.model or model,
                   attempts=result.attempts)


def rewrite(prompt: str, lang: str = "auto", endpoint: str | None = None, model: str | None = None,
            **kw: Any) -> RewriteResult:
    """Rewrite ``prompt``: through ``endpoint`` (an OpenAI-compatible ``.../v1``) and ``model``
    when given, else the template. See the module docstring for the checks and the fallback.

    Raises:
        ValueError: an empty prompt, an unknown ``lang``, or an endpoint without a model.
    """
    if not prompt.strip():
        raise ValueError("the prompt to rewrite is empty")
    if endpoint:
        if not model:
            raise ValueError("a rewrite endpoint needs a model name (--model)")
        return model_rewrite_result(prompt.strip(), endpoint, model, lang, **kw)
    return template_rewrite_result(prompt.strip(), lang)
