"""``vidloom bench caption``: the chat client's own cost, against the fake chat-completions server.

The fake (captioner/fake_server.py), started by the bench, answers with a canned caption, so
what is measured is the client's overhead (httpx, JSON, the event loop) plus the fake's HTTP
parsing. Reported:

    req/s at concurrency 1, 8 and 64 (``--requests`` tiny requests each, after a warm-up) with
      instant replies, and at 64 against a fake that takes 100 ms (ideal 640 req/s: are all
      64 slots kept busy?);
    p50 / p99 added latency = client-observed latency - the fake's own handling time (the fake
      records each reply's handling time, also sent as ``x-fake-handle-ms``);
    memory flatness: ``--memory-requests`` lazily generated requests, each with a ~50 KB base64
      image, streamed through concurrency 32 while this process's RSS is sampled every 500
      results: start / peak / end RSS and the least-squares slope (MB per 1,000 requests).

``--server process`` (default) runs the fake in a child process, so it does not share the
client's GIL and the RSS is the client's alone; ``--server thread`` runs it in threads of this
process (then 64 server threads and the event loop take turns on one GIL, which caps the slow row).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from bench import record as bench_record
from bench.split import print_rows
from captioner.client import ChatClient, ChatRequest
from captioner.fake_server import FakeOpenAI

CONCURRENCIES = (1, 8, 64)
SLOW_SERVER_S = 0.1  # the last row: a server that takes 100 ms, where the slots must all be kept busy
IMAGE_BYTES = 37_500  # -> 50,000 base64 characters


class Fake:
    """A ``FakeOpenAI`` in a thread of this process or in a child process (its own GIL). After
    the ``with``: ``handle_ms`` {key: server ms} and ``max_concurrent``."""

    def __init__(self, where: str, latency_s: float = 0.0, record: bool = True) -> None:
        self.where, self.latency_s, self.record = where, latency_s, record
        self.url, self.handle_ms, self.max_concurrent = "", dict[str, float](), 0

    def __enter__(self) -> Fake:
        if self.where == "thread":
            self._fake = FakeOpenAI(latency_s=self.latency_s, record=self.record).start()
            self.url = self._fake.url
        else:
            ctx = mp.get_context("spawn")
            self._conn, child = ctx.Pipe()
            self._proc = ctx.Process(target=_serve, args=(child, self.latency_s, self.record), daemon=True)
            self._proc.start()
            if not self._conn.poll(60):  # e.g. a spawned child that could not import its target
                self._proc.terminate()
                raise RuntimeError(f"the fake server process did not start (exit code {self._proc.exitcode})")
            self.url = self._conn.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.where == "thread":
            self._fake.stop()
            handled, self.max_concurrent = list(self._fake.handle_ms), self._fake.max_concurrent
        else:
            self._conn.send("stop")
            handled, self.max_concurrent = self._conn.recv()
            self._proc.join()
        self.handle_ms = dict(handled)


def _serve(conn: Connection, latency_s: float, record: bool) -> None:
    """The child process of ``Fake``: serve until told to stop, then send the handling times."""
    with FakeOpenAI(latency_s=latency_s, record=record) as fake:
        conn.send(fake.url)
        conn.recv()
    conn.send((list(fake.handle_ms), fake.max_concurrent))


def rss_mb() -> float:
    """This process's resident set size (MB), from /proc/self/status."""
    with open("/proc/self/status") as f:
        kb = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
    return kb / 1024


def tiny_requests(n: int, prefix: str) -> Iterator[ChatRequest]:
    for i in range(n):
        yield ChatRequest(f"{prefix}{i}", [{"role": "user", "content": "Describe this clip."}],
                          {"model": "fake-captioner", "max_tokens": 64})


def image_requests(n: int, prefix: str = "m") -> Iterator[ChatRequest]:
    """Lazily made requests, each with a fresh ~50 KB base64 JPEG-sized payload (leaks show)."""
    for i in range(n):
        url = "data:image/jpeg;base64," + base64.b64encode(os.urandom(IMAGE_BYTES)).decode()
        content = [{"type": "text", "text": "Describe this clip."},
                   {"type": "image_url", "image_url": {"url": url}}]
        yield ChatRequest(f"{prefix}{i}", [{"role": "user", "content": content}], {"model": "fake-captioner"})


async def drain(client: ChatClient, requests: Iterator[ChatRequest], keep: bool = True,
                each: Callable[[int], None] | None = None) -> list[tuple[str, float]]:
    """Stream ``requests``; (key, latency s) of each when ``keep``. Any failure stops the bench."""
    kept, n = [], 0
    async for r in client.stream(requests):
        n += 1
        if not r.ok:
            raise RuntimeError(f"bench request failed: {r.error}")
        if keep:
            kept.append((r.key, r.latency_s))
        if each:
            each(n)
    return kept


def percentile(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1]


def throughput(where: str, concurrency: int, n: int, latency_s: float = 0.0) -> dict[str, Any]:
    """req/s and added latency (ms) for ``n`` tiny requests at ``concurrency``; the fake waits
    ``latency_s`` before each reply."""
    with Fake(where, latency_s) as fake:

        async def go() -> tuple[float, list[tuple[str, float]]]:
            async with ChatClient(fake.url, concurrency=concurrency, max_retries=0) as client:
                await drain(client, tiny_requests(2 * concurrency, "warm"))  # open the connections
                t0 = time.perf_counter()
                results = await drain(client, tiny_requests(n, "r"))
                return time.perf_counter() - t0, results

        wall, results = asyncio.run(go())
    added = [latency_s * 1e3 - fake.handle_ms[key] for key, latency_s in results]
    return {
        "concurrency": concurrency, "requests": n, "wall_s": round(wall, 3), "req_per_s": round(n / wall, 1),
        "added_ms_p50": round(percentile(added, 50), 3), "added_ms_p99": round(percentile(added, 99), 3),
        "server_ms_p50": round(statistics.median(fake.handle_ms[key] for key, _ in results), 3),
        "server_max_in_flight": fake.max_concurrent,
    }


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    return statistics.linear_regression(xs, ys).slope


def memory(where: str, n: int, concurrency: int = 32, every: int = 500) -> dict[str, Any]:
    """RSS while ``n`` image requests stream through ``concurrency``; slope in MB / 1,000 requests."""
    samples: list[tuple[int, float]] = []

    def sample(i: int) -> None:
        if i % every == 0:
            samples.append((i, rss_mb()))

    with Fake(where, record=False) as fake:

        async def go() -> float:
            async with ChatClient(fake.url, concurrency=concurrency, max_retries=0) as client:
                await drain(client, image_requests(4 * concurrency, "warm"), keep=False)  # pools, buffers
                samples.append((0, rss_mb()))
                t0 = time.perf_counter()
                await drain(client, image_requests(n), keep=False, each=sample)
                return time.perf_counter() - t0

        wall = asyncio.run(go())
    xs, ys = [s[0] / 1000 for s in samples], [s[1] for s in samples]
    half = len(xs) // 2
    return {
        "requests": n, "concurrency": concurrency, "payload_kb": round(IMAGE_BYTES * 4 / 3 / 1000),
        "wall_s": round(wall, 2), "req_per_s": round(n / wall, 1),
        "rss_start_mb": round(ys[0], 1), "rss_peak_mb": round(max(ys), 1), "rss_end_mb": round(ys[-1], 1),
        "slope_mb_per_1k": round(slope(xs, ys), 3),
        "slope_2nd_half_mb_per_1k": round(slope(xs[half:], ys[half:]), 3),
        "materialised_input_mb": round(n * IMAGE_BYTES * 4 / 3 / 1e6), "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidloom bench caption", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000, help="tiny requests per concurrency level")
    p.add_argument("--memory-requests", type=int, default=10_000, help="~50 KB requests for the RSS run")
    p.add_argument("--server", choices=["process", "thread"], default="process",
                   help="run the fake in a child process (default) or in threads of this one")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.requests < 2 or args.memory_requests < 2000:
        p.error("--requests must be >= 2 and --memory-requests >= 2000")
    record = bench_record.provenance("vidloom bench caption", argv, "n/a (HTTP client, no model)",
                                     f"asyncio client, fake server in a {args.server}")
    info = record["machine"]
    print(f"cores {info['cores']}  load {info['loadavg_1_5_15']}  {info['cpu_model']}  fake: {args.server}")
    levels = [throughput(args.server, c, args.requests) for c in CONCURRENCIES]
    levels.append(throughput(args.server, CONCURRENCIES[-1], min(args.requests, 1000), SLOW_SERVER_S))
    print(f"\nclient overhead: instant replies, then a {SLOW_SERVER_S * 1e3:.0f} ms server (ideal "
          f"{CONCURRENCIES[-1] / SLOW_SERVER_S:.0f} req/s at {CONCURRENCIES[-1]})")
    print_rows(["concurrency", "req/s", "added ms p50", "added ms p99", "server ms p50", "max in flight"],
               [[r["concurrency"], r["req_per_s"], r["added_ms_p50"], r["added_ms_p99"], r["server_ms_p50"],
                 r["server_max_in_flight"]] for r in levels])
    mem = memory(args.server, args.memory_requests)
    print(f"\nmemory: {mem['requests']} requests x ~{mem['payload_kb']} KB through concurrency "
          f"{mem['concurrency']} ({mem['req_per_s']} req/s; a materialised input would hold "
          f"~{mem['materialised_input_mb']} MB)")
    print_rows(["RSS", "start MB", "peak MB", "end MB", "MB / 1k req", "2nd half MB / 1k"],
               [["", mem["rss_start_mb"], mem["rss_peak_mb"], mem["rss_end_mb"], mem["slope_mb_per_1k"],
                 mem["slope_2nd_half_mb_per_1k"]]])
    result = {"server": args.server, "throughput": levels, "memory": mem}
    print(f"load at end {bench_record.loadavg()}")
    if args.json:
        bench_record.write_result(args.json, record, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
