"""An async OpenAI-compatible chat-completions client: bounded concurrency, back-pressure, retries.

docs/architecture.md (Captioner): "The async OpenAI-compatible client handles batching, back-pressure and
retries." It speaks ``POST {base_url}/chat/completions`` and ``GET {base_url}/models`` over one
pooled ``httpx.AsyncClient``; ``base_url`` includes the ``/v1`` (``http://host:8000/v1``), as
in the OpenAI SDK.

Choices:

- ``complete`` never raises for an HTTP or protocol problem: every outcome is a ``ChatResult``
  (``ok`` False with a readable ``error``), so one bad clip cannot stop a batch. Programming
  errors (a body that is not JSON-serialisable) and cancellation still raise.
- Retries use full-jitter exponential back-off, ``uniform(0, min(max_backoff_s, backoff_s *
  2**(n - 1)))`` before retry n; a ``Retry-After`` header on a retried status (429, 503...) is
  honoured instead (capped at ``RETRY_AFTER_CAP_S``). ``max_retries`` counts retries, so at
  most ``1 + max_retries`` attempts.
- Judging the content is the caller's: ``ChatRequest.validate`` (the captioner passes the
  caption checks of captioner/validate.py) maps a parsed 200 to its checks. A reply with a
  failed check is retried like a transport fault, within the same budget; when the budget is
  spent the result is ``ok=False`` with ``error`` 'invalid reply: <failed checks>' and the last
  reply's ``text``, ``finish_reason`` and ``checks``, so the caller can record what failed.
  Without ``validate`` a 200 is ``ok=True`` whatever it says (empty, truncated, any language).
- A reply is read as a stream and given up at ``max_reply_bytes`` (a ``Content-Length`` over
  the cap is refused before the body is read): a runaway 5,000,000-character reply costs at
  most the cap in memory, and is retried like any other fault.
- The API key goes only to the hosts allowed to receive it (``key_hosts``; captioner/api_keys.py):
  a key set in the environment for OpenAI is never sent to a local vLLM server.
- ``stream`` pulls the next request only when a slot is free, so at most ``concurrency``
  requests (and their frame payloads) exist at once, whatever the input's length.

Retry policy (``complete``):

    outcome                                   retried   error text
    200 + choices[0].message.content str      no        - (ok=True; content null -> "")
    200 + invalid JSON / no choices / message yes       "malformed response: ..."
    200 + a failed ``validate`` check         yes       "invalid reply: <check (detail)>, ..."
      (a structured reply's broken JSON or schema violation is one: "invalid reply: json (...)")
    a body over ``max_reply_bytes``           yes       "reply over <cap> bytes: ..."
    429, 408, 5xx                             yes       "http <status>: <server message>"
    other 4xx (400, 401, 404, 422, ...)       no        "http <status>: <server message>"
    timeout (connect, read, whole attempt)    yes       "timeout: <exception>"
    connection error / reset / protocol error yes       "connection: <exception>"

This module is the transport (the pool, the slots, retries and back-off, streaming, the sync
bridge); reading and judging a reply is captioner/chat_reply.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
import random
import threading
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Iterator,
)
from dataclasses import dataclass
from typing import Any

import httpx

from captioner.api_keys import API_KEY_ENVS, key_for
from captioner.chat_reply import ChatResult, Retry, check_detail, parse_reply, read_capped

MAX_REPLY_BYTES = 1 << 20  # a chat reply of a few hundred tokens is a few KB
RETRY_AFTER_CAP_S = 60.0
_END = object()


@dataclass
class ChatRequest:
    """One chat completion. ``key`` (e.g. ``"<clip_id>/en"``) is sent as the OpenAI ``user``
    field and returned on the result; ``params`` (model, max_tokens, temperature, top_p, seed,
    ...) are merged into the JSON body."""

    key: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    # (text, finish_reason) of a parsed 200 -> checks {name: {"ok": bool, ...}}; a failed one retries
    validate: Callable[[str, str | None], dict[str, dict[str, Any]]] | None = None


class ChatClient:
    """Async chat-completions client. Use as ``async with ChatClient(url) as c:``; ``run_sync``
    serves synchronous callers. ``seed`` seeds the back-off jitter (sampling seeds go in
    ``ChatRequest.params``). ``api_key`` is the key actually sent: ``key_for(base_url, api_key,
    key_hosts, key_envs)``, None when this host may not receive it. ``max_reply_bytes`` caps the bytes
    read from one reply."""

    def __init__(self, base_url: str, api_key: str | None = None, concurrency: int = 8,
                 timeout_s: float = 120.0, connect_timeout_s: float = 10.0, max_retries: int = 4,
                 backoff_s: float = 0.5, max_backoff_s: float = 16.0, seed: int | None = None,
                 key_hosts: Collection[str] | None = None, max_reply_bytes: int = MAX_REPLY_BYTES,
                 key_envs: Iterable[str] = API_KEY_ENVS) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_reply_bytes < 1:
            raise ValueError(f"max_reply_bytes must be >= 1, got {max_reply_bytes}")
        self.base_url = base_url.rstrip("/")
        self.api_key = key_for(self.base_url, api_key, key_hosts, key_envs)
        self.key_hosts, self.max_reply_bytes = key_hosts, max_reply_bytes
        self.concurrency, self.timeout_s, self.connect_timeout_s = concurrency, timeout_s, connect_timeout_s
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.seed = seed
        self._rng = random.Random(seed)
        self._http: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None

    async def __aenter__(self) -> ChatClient:
        self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool; the client may be opened again (in any event loop)."""
        if self._http is not None:
            http, self._http, self._slots = self._http, None, None
            await http.aclose()

    def _open(self) -> httpx.AsyncClient:
        if self._http is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._http = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s),
                limits=httpx.Limits(max_connections=self.concurrency,
                                    max_keepalive_connections=self.concurrency),
            )
            self._slots = asyncio.Semaphore(self.concurrency)
        return self._http

    async def models(self) -> list[str]:
        """The served model ids (``GET /models``). A probe, so unlike ``complete`` it raises
        ``httpx.HTTPError`` when the endpoint is down or answers an error."""
        resp = await self._open().get(f"{self.base_url}/models")
        resp.raise_for_status()
        return [m["id"] for m in resp.json()["data"]]

    async def complete(self, req: ChatRequest) -> ChatResult:
        """One request with retries (policy in the module docstring); never raises for HTTP problems."""
        http = self._open()
        assert self._slots is not None
        body = {**req.params, "messages": req.messages, "user": req.key}
        async with self._slots:
            t0, attempt, err = time.perf_counter(), 0, Retry("no attempt made")
            invalid: ChatResult | None = None  # the last reply that failed ``validate``
            while True:
                attempt += 1
                try:
                    url = f"{self.base_url}/chat/completions"
                    async with asyncio.timeout(self.timeout_s), http.stream("POST", url, json=body) as resp:
                        raw = await read_capped(resp, self.max_reply_bytes)
                    result = parse_reply(req.key, resp, raw, attempt, time.perf_counter() - t0)
                    if not result.ok or req.validate is None:
                        return result
                    result.checks = req.validate(result.text or "", result.finish_reason)
                    bad = [f"{n}{check_detail(c)}" for n, c in result.checks.items() if c.get("ok") is False]
                    if not bad:
                        return result
                    err = Retry(f"invalid reply: {', '.join(bad)}"[:300], result.status)
                    invalid, result.error = result, err.error
                except Retry as e:
                    err = e
                except (TimeoutError, httpx.TimeoutException) as e:
                    err = Retry(f"timeout: {type(e).__name__} after {self.timeout_s:g} s {e}".rstrip())
                except httpx.HTTPError as e:  # connect errors, resets, protocol errors, decoding
                    err = Retry(f"connection: {type(e).__name__}: {e or 'no detail'}")
                if attempt > self.max_retries:
                    break
                await asyncio.sleep(self._delay(attempt, err.retry_after))
            latency = time.perf_counter() - t0
            if invalid is not None:  # the last reply that came back, with its failed checks
                error = err.error if err.error == invalid.error else f"{err.error}; before: {invalid.error}"
                return dataclasses.replace(invalid, ok=False, error=error, attempts=attempt,
                                           latency_s=latency)
            return ChatResult(req.key, False, None, None, 0, 0, None, err.error, attempt, latency, err.status)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP_S)
        return self._rng.uniform(0.0, min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))

    async def stream(self, requests: Iterable[ChatRequest] | AsyncIterable[ChatRequest]
                     ) -> AsyncIterator[ChatResult]:
        """Results of ``requests`` as they complete (any order), at most ``concurrency`` in flight.

        A feeder task takes a slot, then pulls one request and starts it; a slot is given back
        when its result is yielded. So at most ``concurrency`` requests have left the input and
        not yet come out here, and a lazy generator is never materialised. A sync iterable is
        pulled in a worker thread (building a request, e.g. encoding frames, does not stall the
        event loop). An exception raised by the input propagates here after the requests in
        flight are cancelled.
        """
        pull = _puller(requests)
        slots, done = asyncio.Semaphore(self.concurrency), asyncio.Queue[asyncio.Future[Any]]()
        running: set[asyncio.Task[ChatResult]] = set()

        def finished(task: asyncio.Task[ChatResult]) -> None:
            running.discard(task)
            done.put_nowait(task)

        async def feed() -> None:
            while True:
                await slots.acquire()
                req = await pull()
                if req is _END:
                    return
                task = asyncio.create_task(self.complete(req))
                running.add(task)
                task.add_done_callback(finished)

        feeder = asyncio.create_task(feed())
        feeder.add_done_callback(done.put_nowait)
        fed_all = False
        try:
            while not (fed_all and not running and done.empty()):
                fut = await done.get()
                if fut is feeder:
                    feeder.result()  # re-raise the input's exception
                    fed_all = True
                    continue
                slots.release()
                yield fut.result()
        finally:
            for fut in (feeder, *running):
                fut.cancel()
            await asyncio.wait([feeder, *running])

    def run_sync(self, requests: Iterable[ChatRequest], buffer: int | None = None) -> Iterator[ChatResult]:
        """``stream`` for synchronous code: a generator of results, fed by an event loop in a
        background thread through a bounded queue (``buffer`` results, default ``concurrency``).

        The loop uses its own copy of this client (an ``httpx.AsyncClient`` belongs to one event
        loop). ``requests`` is pulled lazily from that thread. Closing the generator early
        cancels what is in flight; an exception from ``requests`` is re-raised here.
        """
        results: queue.Queue[Any] = queue.Queue(maxsize=buffer or self.concurrency)
        clone = ChatClient(self.base_url, self.api_key, self.concurrency, self.timeout_s,
                           self.connect_timeout_s, self.max_retries, self.backoff_s,
                           self.max_backoff_s, self.seed, key_hosts=["*"] if self.api_key else (),
                           max_reply_bytes=self.max_reply_bytes, key_envs=())  # key vetted for this URL
        state: dict[str, Any] = {}
        started = threading.Event()

        async def pump() -> None:
            state["loop"], state["task"] = asyncio.get_running_loop(), asyncio.current_task()
            started.set()
            try:
                async with clone:
                    async for result in clone.stream(requests):
                        await _put(results, result)
                await _put(results, _END)
            except Exception as e:  # the input iterator failed: hand it to the consumer
                await _put(results, _Raised(e))

        def run() -> None:
            with contextlib.suppress(asyncio.CancelledError):  # the consumer closed the generator
                asyncio.run(pump())

        thread = threading.Thread(target=run, name="vidloom-chat", daemon=True)
        thread.start()
        started.wait()
        try:
            while (item := results.get()) is not _END:
                if isinstance(item, _Raised):
                    raise item.exc
                yield item
        finally:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                state["loop"].call_soon_threadsafe(state["task"].cancel)
            while thread.is_alive():  # drain so a pump blocked on a full queue can see the cancel
                with contextlib.suppress(queue.Empty):
                    while True:
                        results.get_nowait()
                thread.join(0.01)


@dataclass
class _Raised:
    exc: Exception  # the input's exception, on its way to run_sync's consumer


async def _put(q: queue.Queue[Any], item: Any) -> None:
    """Put without blocking the event loop; polls while the consumer is behind (back-pressure)."""
    while True:
        try:
            return q.put_nowait(item)
        except queue.Full:
            await asyncio.sleep(0.002)


def _puller(requests: Iterable[ChatRequest] | AsyncIterable[ChatRequest]) -> Callable[[], Awaitable[Any]]:
    """An awaitable 'next item or _END' over a sync (pulled in a thread) or async iterable."""
    if isinstance(requests, AsyncIterable):
        ait = aiter(requests)
        return lambda: anext(ait, _END)
    it = iter(requests)
    return lambda: asyncio.to_thread(next, it, _END)


