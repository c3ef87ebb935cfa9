"""A fake OpenAI-compatible chat-completions server, for tests and benchmarks only.

docs/architecture.md (Captioner, Tests): "a real local HTTP server that speaks the chat-completions
protocol and returns canned text; this is a fake at the process boundary, not a patched
client." The pipeline never uses it; it lives in the package (not in tests/) so that
``vidloom bench caption`` can start it too. Standard library only: a ``ThreadingHTTPServer`` in
a daemon thread, HTTP/1.1 keep-alive, one thread per connection.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``. What each chat
request gets is scripted: ``script(body, attempt) -> Reply | mode`` where ``attempt`` counts
(from 1) the requests seen with that body's ``user`` field (the client sends its request key
there). Modes: see ``MODES``. ``FakeOpenAI.auth`` records each chat request's ``Authorization``
header (None when absent), so tests can check where a key goes; ``huge_written`` the bytes a
'huge' reply got onto the socket before the client hung up.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from captioner.fake_rewrite import REWRITE_MODES, is_rewrite, rewrite_reply

MODES = {
    "good": "200, the caption (English, or Chinese when the last user message asks for it)",
    "empty": "200, content ''",
    "no_content": "200, a message with no 'content' field",
    "empty_choices": "200, 'choices': []",
    "wrong_language": "200, a French caption",
    "english": "200, the English caption whatever was asked (English where Chinese was wanted)",
    "too_short": "200, a caption below every length bound ('A red car drives by.')",
    "too_long": "200, the caption repeated past every length bound (~3,000 characters)",
    "huge": "200, a caption of huge_chars characters (5,000,000), streamed chunked with no Content-Length",
    "huge_declared": "200, the same huge reply with its Content-Length declared",
    "html": "200, an HTML error page (text/html) instead of JSON",
    "html502": "502 with an HTML error page, as a proxy in front of the server sends",
    "truncated": "200, the caption cut mid-sentence, finish_reason 'length'",
    "malformed": "200, a body that is not valid JSON",
    "no_choices": "200, valid JSON without 'choices'",
    "error400": "400 with an OpenAI-style error message",
    "error429": "429 with Retry-After (Reply.retry_after, default 0.05 s)",
    "error500": "500 with an OpenAI-style error message",
    "hang": "sleeps hang_s (longer than the client's timeout), then answers good",
    "reset": "closes the socket with an RST, no response",
    "broken_json": "200, a structured reply cut mid-object (not valid JSON), finish_reason 'stop'",
    "schema_violation": "200, valid JSON that breaks the clip schema (content_class 'sports', no shot_count)",
    **REWRITE_MODES,  # prompt-rewrite requests (captioner/fake_rewrite.py); 'good' answers them too
}
CAPTION_EN = (
    "A woman in a red coat walks along a sunlit street while the camera pans slowly to the left. "
    "Two cyclists pass behind her, and the shadows of the trees move across the pavement. "
    "The scene is warm and bright, shot in a realistic style with soft afternoon light."
)
CAPTION_ZH = (
    "一位身穿红色大衣的女子沿着阳光明媚的街道行走，镜头缓慢向左平移。"
    "两名骑车人从她身后经过，树影在人行道上移动。画面温暖明亮，写实风格，午后光线柔和。"
)
CAPTION_FR = (
    "Une femme en manteau rouge marche le long d'une rue ensoleillée pendant que la caméra "
    "se déplace lentement vers la gauche."
)
SHORT_EN = "The woman walks forward while the camera pans slowly to the left."
SHORT_ZH = "女子向前走，镜头缓慢向左平移。"
STRUCTURED_DOC: dict[str, Any] = {  # a valid captioner/caption_schema.py REQUEST_SCHEMA reply
    "subjects": [{"description": "a woman", "appearance": "red coat", "count": 1},
                 {"description": "cyclists", "appearance": "in motion behind her", "count": 2}],
    "actions": [{"subject": "the woman", "action": "walks along the street"},
                {"subject": "two cyclists", "action": "pass behind her"}],
    "camera": {"movement": "pan_left", "speed": "slow", "shot_size": "full", "angle": "eye_level"},
    "scene": "a sunlit street lined with trees",
    "lighting": {"brightness": "bright", "source": "natural"},
    "style": "realistic",
    "content_class": "people",
    "text_overlays": [],
    "shot_count": 1,
    "caption_en": CAPTION_EN, "caption_zh": CAPTION_ZH, "short_en": SHORT_EN, "short_zh": SHORT_ZH,
}


def structured(body: dict[str, Any]) -> bool:
    """Whether the request asks for structured output: ``response_format`` of type
    'json_schema' with a name, a schema object and ``strict`` true."""
    rf = body.get("response_format")
    spec = rf.get("json_schema") if isinstance(rf, dict) else None
    return (isinstance(rf, dict) and rf.get("type") == "json_schema" and isinstance(spec, dict)
            and isinstance(spec.get("name"), str) and isinstance(spec.get("schema"), dict)
            and spec.get("strict") is True)


HTML_PAGE = (b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><center>"
             b"<h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>")


@dataclass
class Reply:
    """A scripted reply: ``mode`` (a key of ``MODES``), optional caption ``text`` overriding the
    canned one, ``retry_after`` seconds for 429, extra ``delay_s`` before answering."""

    mode: str = "good"
    text: str | None = None
    retry_after: float | None = None
    delay_s: float = 0.0


Script = Callable[[dict[str, Any], int], "Reply | str"]


def fail_then(n: int, mode: str | Reply = "error500", then: str | Reply = "good") -> Script:
    """A script: ``mode`` for a key's first ``n`` attempts, then ``then``."""
    return lambda body, attempt: mode if attempt <= n else then


def wants_chinese(body: dict[str, Any]) -> bool:
    """Whether the last user message asks for Chinese ('中文' or 'Chinese' in its text)."""
    users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        return False
    content = users[-1].get("content")
    parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
    text = " ".join(str(p.get("text") or "") for p in parts if isinstance(p, dict))
    return "中文" in text or "chinese" in text.lower()


class FakeOpenAI:
    """``with FakeOpenAI(script) as fake:`` serves on ``fake.url`` (``http://127.0.0.1:PORT/v1``).

    Args:
        script: ``(body, attempt) -> Reply | mode``; default always 'good'.
        latency_s: fixed sleep before every chat reply (benchmarks).
        hang_s: how long 'hang' sleeps (cut short when the server stops).
        record: keep the request log, per-key attempt counts and handling times. False for long
            benchmark runs, so the fake's own memory stays flat (every attempt is then 1).
        model: the served model id.
        require_schema: answer 400 to a chat request that does not ask for structured output
            (``structured``), as a server enforcing guided decoding would; either way a
            structured request's 'good' reply is ``STRUCTURED_DOC`` as JSON.

    Each chat reply carries ``x-fake-handle-ms``: the handler's own time, from the parsed
    request to the written response, so a client can subtract it from what it observed.
    """

    def __init__(self, script: Script | None = None, latency_s: float = 0.0, hang_s: float = 5.0,
                 record: bool = True, model: str = "fake-captioner", huge_chars: int = 5_000_000,
                 require_schema: bool = False) -> None:
        self.script: Script = script or (lambda body, attempt: "good")
        self.latency_s, self.hang_s, self.record, self.model = latency_s, hang_s, record, model
        self.huge_chars, self.require_schema = huge_chars, require_schema
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []  # each chat request's Authorization header
        self.huge_written: list[int] = []  # bytes of each 'huge' reply written before the client left
        self._huge_active = 0  # 'huge' replies still being written: stop() waits for them to record
        self._huge_done = threading.Condition(self._lock)
        self._attempts: Counter[str] = Counter()
        self.handle_ms: deque[tuple[str, float]] = deque()
        self.in_flight = self.max_concurrent = self.n_requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A snapshot of the chat request bodies received, in arrival order."""
        with self._lock:
            return list(self._requests)

    def attempts(self, key: str) -> int:
        with self._lock:
            return self._attempts[key]

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeOpenAI:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True,
                                        name="fake-openai")
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:  # a client that hung up early: let its 'huge' writer see it and record
            self._huge_done.wait_for(lambda: self._huge_active == 0, timeout=10.0)
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _admit(self, body: dict[str, Any], auth: str | None) -> int:
        """Log a chat request; its attempt number for its key."""
        key = str(body.get("user", ""))
        with self._lock:
            self.n_requests += 1
            self.in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self.in_flight)
            if not self.record:
                return 1
            self._requests.append(body)
            self.auth.append(auth)
            self._attempts[key] += 1
            return self._attempts[key]

    def _done(self, key: str, handle_ms: float) -> None:
        with self._lock:
            self.in_flight -= 1
            if self.record:
                self.handle_ms.append((key, handle_ms))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # 64 clients connecting at once must not overflow the listen backlog
    fake: FakeOpenAI


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's pool expects
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:  # the client gave up (timeout) or we reset the socket
            self.close_connection = True

    def do_GET(self) -> None:  # http.server's naming
        if self.path.rstrip("/") == "/health":
            return self._send(200, b"ok", "text/plain")
        if self.path.rstrip("/") == "/v1/models":
            data = [{"id": self.server.fake.model, "object": "model", "owned_by": "vidloom-fake"}]
            return self._json(200, {"object": "list", "data": data})
        self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
        try:
            body = json.loads(raw)
            assert isinstance(body, dict) and isinstance(body.get("messages"), list)
        except (ValueError, AssertionError):
            return self._json(400, {"error": {"message": "body must be JSON with a 'messages' list",
                                              "type": "invalid_request_error"}})
        fake, t0 = self.server.fake, time.perf_counter()
        attempt = fake._admit(body, self.headers.get("Authorization"))
        try:
            reply = fake.script(body, attempt)
            self._reply(body, reply if isinstance(reply, Reply) else Reply(reply), t0)
        finally:
            fake._done(str(body.get("user", "")), (time.perf_counter() - t0) * 1e3)

    def _reply(self, body: dict[str, Any], r: Reply, t0: float) -> None:
        fake = self.server.fake
        if fake.latency_s or r.delay_s:
            fake._stop.wait(fake.latency_s + r.delay_s)
        if r.mode == "hang":
            fake._stop.wait(fake.hang_s)
        if r.mode == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if r.mode in ("error400", "error429", "error500"):
            status = int(r.mode[-3:])
            kind = {400: "invalid_request_error", 429: "rate_limit_error", 500: "server_error"}[status]
            retry = {"Retry-After": f"{r.retry_after if r.retry_after is not None else 0.05:g}"}
            return self._json(status, {"error": {"message": f"fake {kind} ({status})", "type": kind}},
                              retry if status == 429 else {}, t0)
        if fake.require_schema and not structured(body):
            return self._json(400, {"error": {"message": "response_format json_schema (strict) required",
                                              "type": "invalid_request_error"}}, t0=t0)
        if r.mode == "malformed":
            return self._send(200, b'{"id": "chatcmpl-fake", "choices": [{"mess', "application/json", t0=t0)
        if r.mode == "no_choices":
            return self._json(200, {"id": "chatcmpl-fake", "object": "chat.completion"}, t0=t0)
        if r.mode == "empty_choices":
            return self._json(200, {"id": "chatcmpl-fake", "object": "chat.completion", "choices": []}, t0=t0)
        if r.mode in ("html", "html502"):
            return self._send(200 if r.mode == "html" else 502, HTML_PAGE, "text/html", t0=t0)
        if r.mode in ("huge", "huge_declared"):
            return self._huge(body, chunked=r.mode == "huge")
        if r.mode not in MODES:
            raise ValueError(f"unknown fake mode {r.mode!r}; one of {sorted(MODES)}")
        text = r.text if r.text is not None else CAPTION_ZH if wants_chinese(body) else CAPTION_EN
        if r.text is None and structured(body):
            text = json.dumps(STRUCTURED_DOC, ensure_ascii=False)
        if r.text is None and (r.mode in REWRITE_MODES or (r.mode == "good" and is_rewrite(body))):
            text = rewrite_reply(r.mode)
        finish = "stop"
        if r.mode in REWRITE_MODES:
            pass  # the text is already the mode's
        elif r.mode == "broken_json":
            text = json.dumps(STRUCTURED_DOC, ensure_ascii=False)[:300]
        elif r.mode == "schema_violation":
            doc = {k: v for k, v in STRUCTURED_DOC.items() if k != "shot_count"}
            text = json.dumps({**doc, "content_class": "sports"}, ensure_ascii=False)
        elif r.mode in ("empty", "no_content"):
            text = ""
        elif r.mode == "wrong_language":
            text = CAPTION_FR
        elif r.mode == "english":
            text = CAPTION_EN
        elif r.mode == "too_short":
            text = "A red car drives by."
        elif r.mode == "too_long":
            text = " ".join([text] * (3000 // len(text) + 1))
        elif r.mode == "truncated":
            text, finish = text[: max(1, len(text) // 3)], "length"
        completion = len(text.split()) if text.isascii() else len(text)
        prompt = len(json.dumps(body.get("messages"), ensure_ascii=False)) // 4
        message = {"role": "assistant"} if r.mode == "no_content" else {"role": "assistant", "content": text}
        self._json(200, {
            "id": f"chatcmpl-fake-{fake.n_requests}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model") or fake.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }, t0=t0)

    def _huge(self, body: dict[str, Any], chunked: bool) -> None:
        """A reply whose caption is ``huge_chars`` characters, written 64 KiB at a time with a short
        pause between writes, so that a client that stops reading early is seen to: the bytes
        that got onto the socket before it hung up are appended to ``huge_written``."""
        fake = self.server.fake
        head = json.dumps({"id": "chatcmpl-fake-huge", "object": "chat.completion",
                           "model": body.get("model") or fake.model})[:-1].encode()
        head += b', "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", '
        head += b'"content": "'
        tail = b'"}}]}'
        unit = b"The camera pans. "
        n_units, rest = divmod(fake.huge_chars, len(unit))
        chunk = unit * (65536 // len(unit))
        parts = [head, *[chunk] * (n_units * len(unit) // len(chunk))]
        parts += [unit * (n_units - (len(parts) - 1) * len(chunk) // len(unit)) + unit[:rest], tail]
        written = 0
        with fake._lock:
            fake._huge_active += 1
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(sum(map(len, parts))))
            self.end_headers()
            for part in parts:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
                self.wfile.flush()
                written += len(part)
                fake._stop.wait(0.002)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client hung up: what it read is what it read
            self.close_connection = True
        finally:
            with fake._lock:
                fake.huge_written.append(written)
                fake._huge_active -= 1
                fake._huge_done.notify_all()

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None,
              t0: float | None = None) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode(), "application/json", headers, t0)

    def _send(self, status: int, payload: bytes, ctype: str, headers: dict[str, str] | None = None,
              t0: float | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if t0 is not None:
            self.send_header("x-fake-handle-ms", f"{(time.perf_counter() - t0) * 1e3:.3f}")
        self.end_headers()
        self.wfile.write(payload)
