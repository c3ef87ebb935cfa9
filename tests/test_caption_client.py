"""captioner.client against a real local chat-completions server (tests/fake_openai.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fake_openai import CAPTION_EN, CAPTION_FR, CAPTION_ZH, FakeOpenAI, Reply, fail_then

from captioner.client import ChatClient, ChatRequest, ChatResult

FAST = {"backoff_s": 0.01, "max_backoff_s": 0.05}  # retries without waiting in tests


def req(key: str, prompt: str = "Describe this clip in detail.", **params: Any) -> ChatRequest:
    return ChatRequest(key, [{"role": "user", "content": prompt}], {"model": "fake-captioner", **params})


def complete(url: str, request: ChatRequest, **kw: Any) -> ChatResult:
    async def go() -> ChatResult:
        async with ChatClient(url, **{**FAST, **kw}) as client:
            return await client.complete(request)

    return asyncio.run(go())


def test_good_reply_carries_text_tokens_and_finish_reason() -> None:
    with FakeOpenAI() as fake:
        en = complete(fake.url, req("clip1/en", max_tokens=64, seed=7))
        zh = complete(fake.url, req("clip1/zh", "请用中文详细描述这个视频。"))
        sent = fake.requests
    assert en.ok and en.text == CAPTION_EN and en.finish_reason == "stop" and en.error is None
    assert en.completion_tokens == len(CAPTION_EN.split()) and en.prompt_tokens > 0
    assert (en.key, en.attempts, en.status, en.model) == ("clip1/en", 1, 200, "fake-captioner")
    assert zh.ok and zh.text == CAPTION_ZH
    # the key travels as the OpenAI `user` field and params are merged into the body
    assert sent[0]["user"] == "clip1/en" and sent[0]["max_tokens"] == 64 and sent[0]["seed"] == 7
    assert sent[0]["messages"] == req("x").messages


def test_models_lists_the_served_model() -> None:
    async def go(url: str) -> list[str]:
        async with ChatClient(url) as client:
            return await client.models()

    with FakeOpenAI(model="tarsier2-7b") as fake:
        assert asyncio.run(go(fake.url)) == ["tarsier2-7b"]


def test_server_errors_are_retried_until_good() -> None:
    with FakeOpenAI(fail_then(2, "error500")) as fake:
        r = complete(fake.url, req("k"), max_retries=4)
        assert fake.attempts("k") == 3
    assert r.ok and r.attempts == 3 and r.text == CAPTION_EN


def test_persistent_server_error_fails_after_max_retries() -> None:
    with FakeOpenAI(lambda body, attempt: "error500") as fake:
        r = complete(fake.url, req("k"), max_retries=2)
        assert fake.attempts("k") == 3
    assert not r.ok and r.attempts == 3 and r.status == 500
    assert r.error == "http 500: fake server_error (500)"


def test_client_errors_are_not_retried() -> None:
    with FakeOpenAI(lambda body, attempt: "error400") as fake:
        r = complete(fake.url, req("k"), max_retries=4)
        assert fake.n_requests == 1
    assert not r.ok and r.attempts == 1 and r.status == 400 and "invalid_request_error" in r.error


def test_rate_limit_honours_retry_after() -> None:
    with FakeOpenAI(fail_then(1, Reply("error429", retry_after=0.3))) as fake:
        r = complete(fake.url, req("k"), backoff_s=0.0, max_backoff_s=0.0)
    assert r.ok and r.attempts == 2 and r.latency_s >= 0.3


def test_hang_times_out_is_retried_and_recorded() -> None:
    with FakeOpenAI(lambda body, attempt: "hang", hang_s=3.0) as fake:
        t0 = time.perf_counter()
        r = complete(fake.url, req("k"), timeout_s=0.3, max_retries=1)
        elapsed = time.perf_counter() - t0
        assert fake.attempts("k") == 2
    assert not r.ok and r.attempts == 2 and "timeout" in r.error and r.status is None
    assert 0.6 <= elapsed < 2.5


@pytest.mark.parametrize("mode", ["malformed", "no_choices"])
def test_malformed_200_is_retried_then_fails(mode: str) -> None:
    with FakeOpenAI(lambda body, attempt: mode) as fake:
        r = complete(fake.url, req("k"), max_retries=2)
        assert fake.attempts("k") == 3
    assert not r.ok and r.attempts == 3 and r.error.startswith("malformed response") and r.status == 200


def test_connection_reset_is_retried() -> None:
    with FakeOpenAI(fail_then(2, "reset")) as fake:
        good = complete(fake.url, req("k"), max_retries=4)
    with FakeOpenAI(lambda body, attempt: "reset") as fake:
        bad = complete(fake.url, req("k"), max_retries=1)
    assert good.ok and good.attempts == 3
    assert not bad.ok and bad.attempts == 2 and bad.error.startswith("connection: ")


@pytest.mark.parametrize(
    "mode, text, finish",
    [("empty", "", "stop"), ("truncated", CAPTION_EN[: len(CAPTION_EN) // 3], "length"),
     ("wrong_language", CAPTION_FR, "stop")],
)
def test_bad_captions_are_transported_as_given(mode: str, text: str, finish: str) -> None:
    """Judging a caption is the validation layer's job: the client returns what was said."""
    with FakeOpenAI(lambda body, attempt: mode) as fake:
        r = complete(fake.url, req("k"))
    assert r.ok and r.attempts == 1 and r.text == text and r.finish_reason == finish


class Pulled:
    """A lazy request source that records how far it has been pulled."""

    def __init__(self, n: int) -> None:
        self.n, self.pulled = n, 0

    def __iter__(self) -> Iterator[ChatRequest]:
        for i in range(self.n):
            self.pulled += 1
            yield req(f"r{i:04d}")

    async def __aiter__(self) -> AsyncIterator[ChatRequest]:
        for r in self:
            yield r


@pytest.mark.parametrize("source", ["sync", "async"])
def test_stream_bounds_concurrency_and_pulls_lazily(source: str) -> None:
    n, concurrency = 200, 8
    src = Pulled(n)
    gaps: list[int] = []

    async def go(url: str) -> list[ChatResult]:
        out = []
        async with ChatClient(url, concurrency=concurrency, **FAST) as client:
            async for r in client.stream(src if source == "sync" else src.__aiter__()):
                out.append(r)
                gaps.append(src.pulled - len(out))
        return out

    with FakeOpenAI(latency_s=0.005) as fake:
        results = asyncio.run(go(fake.url))
        assert 2 <= fake.max_concurrent <= concurrency
    assert sorted(r.key for r in results) == [f"r{i:04d}" for i in range(n)] and all(r.ok for r in results)
    # pulled - yielded <= concurrency (+1 pull that may run ahead while a result is yielded)
    assert max(gaps) <= concurrency + 1


def test_run_sync_from_sync_code_is_lazy_and_stops_early() -> None:
    src = Pulled(60)
    with FakeOpenAI(latency_s=0.002) as fake:
        client = ChatClient(fake.url, concurrency=4, **FAST)
        keys, gaps = [], []
        for r in client.run_sync(src):
            keys.append(r.key)
            gaps.append(src.pulled - len(keys))
        assert sorted(keys) == [f"r{i:04d}" for i in range(60)]
        # buffer (4 results) + in flight (4) + one pull ahead
        assert max(gaps) <= 4 + 4 + 1

        early = Pulled(10_000)
        gen = client.run_sync(early, buffer=2)
        first = [next(gen) for _ in range(3)]
        gen.close()  # cancels what is in flight and stops pulling
        assert len(first) == 3 and early.pulled < 20


def test_run_sync_reraises_an_input_error() -> None:
    def broken() -> Iterator[ChatRequest]:
        yield req("a")
        raise RuntimeError("bad clip list")

    with FakeOpenAI() as fake, pytest.raises(RuntimeError, match="bad clip list"):
        list(ChatClient(fake.url, **FAST).run_sync(broken()))


def test_api_key_from_env_goes_only_to_allowed_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-generic")
    monkeypatch.setenv("VIDLOOM_CAPTION_API_KEY", "sk-vidloom")
    assert ChatClient("https://api.openai.com/v1").api_key == "sk-vidloom"  # the first variable set
    assert ChatClient("http://127.0.0.1:8000/v1").api_key is None  # an env key: OpenAI's host only
    assert ChatClient("http://x/v1", api_key="sk-arg").api_key == "sk-arg"  # given with its URL
    assert ChatClient("http://x/v1", api_key="sk-arg", key_hosts=["y"]).api_key is None
    assert ChatClient("http://X:9/v1", key_hosts=["x:9"]).api_key == "sk-vidloom"
    assert ChatClient("http://x:8/v1", key_hosts=["x:9"]).api_key is None
    assert ChatClient("http://x/v1", key_hosts=["*"]).api_key == "sk-vidloom"
    assert ChatClient("http://x/v1", key_hosts=["*"], key_envs=()).api_key is None
    monkeypatch.delenv("VIDLOOM_CAPTION_API_KEY")
    assert ChatClient("https://api.openai.com/v1").api_key == "sk-generic"
