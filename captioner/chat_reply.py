"""The reply side of the chat client (captioner/client.py): a response becomes a ``ChatResult``
or a ``Retry``.

The body is read up to a cap (:func:`read_capped`), parsed as an OpenAI chat completion
(:func:`parse_reply`: a non-200 is retried on 408, 429 and 5xx, with its ``Retry-After``), and a
failed caption check is described for the error text (:func:`check_detail`). The retry policy
that uses them is in captioner/client.py's docstring.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

RETRY_STATUSES = frozenset({408, 429})  # plus every 5xx


@dataclass
class ChatResult:
    """The outcome of one ``ChatRequest``. ``latency_s`` spans every attempt and back-off;
    ``status`` is the last HTTP status (None when no response came back)."""

    key: str
    ok: bool
    text: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str | None
    error: str | None
    attempts: int
    latency_s: float
    status: int | None
    checks: dict[str, dict[str, Any]] | None = None  # the last reply's ``validate`` checks


class Retry(Exception):
    """An attempt failed in a way worth retrying."""

    def __init__(self, error: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(error)
        self.error, self.status, self.retry_after = error, status, retry_after


async def read_capped(resp: httpx.Response, cap: int) -> bytes:
    """The (decoded) body of a streamed response, or ``Retry`` once it passes ``cap`` bytes: the
    read stops there, so an oversized reply never sits in memory whole."""
    declared = resp.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise Retry(f"reply over {cap} bytes: Content-Length {declared}, not read", resp.status_code)
    chunks, size = [], 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise Retry(f"reply over {cap} bytes: read stopped at {size}", resp.status_code)
        chunks.append(chunk)
    return b"".join(chunks)


def check_detail(check: Mapping[str, Any]) -> str:
    """A failed check's evidence for the error text, e.g. ' (detected en)' or ' (12 chars)'."""
    if "detected" in check:
        return f" (detected {check['detected']})"
    if "chars" in check:
        return f" ({check['chars']} chars, {check.get('min')}-{check.get('max')})"
    if "finish_reason" in check:
        return f" ({check['finish_reason']})"
    if check.get("missing"):
        return f" (missing {check['missing']})"
    if check.get("error"):  # a structured reply's 'json' / 'schema' check
        return f" ({str(check['error'])[:120]})"
    return ""


def parse_reply(key: str, resp: httpx.Response, raw: bytes, attempt: int, latency_s: float) -> ChatResult:
    """A response and its body -> ChatResult, or raise ``Retry``; a non-retryable error is a
    failed result."""
    status = resp.status_code
    if status != 200:
        error = f"http {status}: {server_message(resp, raw)}"
        if status in RETRY_STATUSES or status >= 500:
            raise Retry(error, status, retry_after(resp.headers.get("retry-after")))
        return ChatResult(key, False, None, None, 0, 0, None, error, attempt, latency_s, status)
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        text = choice["message"].get("content")
        if not isinstance(text, str | None):
            raise TypeError(f"content is {type(text).__name__}")
        usage = data.get("usage") or {}
        return ChatResult(
            key, True, text or "", choice.get("finish_reason"), int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0), data.get("model"), None, attempt, latency_s, status,
        )
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise Retry(f"malformed response: {type(e).__name__}: {e}"[:300], status) from None


def server_message(resp: httpx.Response, raw: bytes) -> str:
    """The OpenAI-style ``{"error": {"message": ...}}`` (vLLM: ``{"message": ...}``), else the body."""
    try:
        data = json.loads(raw)
        err = data.get("error", data)
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return str(msg)[:500]
    except (ValueError, AttributeError):
        pass
    return raw[:500].decode("utf-8", "replace") or resp.reason_phrase


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        with contextlib.suppress(TypeError, ValueError):
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    return None
