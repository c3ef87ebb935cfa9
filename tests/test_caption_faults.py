"""Captions that are valid or absent: every fault a server can produce, against a real local
OpenAI-protocol server (captioner/fake_server.py), through the real client and the caption checks.

A reply that fails the checks is retried like a transport fault, within the same budget; when
the budget is spent the result records what failed. A reply is read up to a byte cap and no
further. The API key goes only to the hosts allowed to receive it. Only a valid en + zh pair is
exportable to a shard.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from fake_openai import CAPTION_EN, CAPTION_ZH, FakeOpenAI, fail_then

from captioner.client import ChatClient, ChatRequest, ChatResult
from captioner.validate import DENSE_BOUNDS, caption_valid, check_reply, exportable
from curation.schema import Caption

FAST = {"backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 0.5}
ASK = {"en": "Describe this clip in detail.", "zh": "请用中文详细描述这个视频。"}
# fault -> (the language asked for, what the failed result's error starts with)
VALIDATION_FAULTS = {
    "empty": ("en", "invalid reply: lang (detected None), length (0 chars"),
    "no_content": ("en", "invalid reply: lang (detected None), length (0 chars"),
    "truncated": ("en", "invalid reply: finish (length)"),
    "english": ("zh", "invalid reply: lang (detected en)"),  # English where Chinese was asked
    "wrong_language": ("en", "invalid reply: lang (detected fr)"),
    "too_short": ("en", "invalid reply: length (20 chars, 40-2000)"),
    "too_long": ("zh", "invalid reply: length (30"),  # ~3,000 of zh 20-1000 non-space characters
}
TRANSPORT_FAULTS = {
    "empty_choices": "malformed response: IndexError",
    "no_choices": "malformed response: KeyError",
    "malformed": "malformed response: JSONDecodeError",
    "html": "malformed response: JSONDecodeError",  # a 200 text/html error page
    "html502": "http 502: <!DOCTYPE html>",
    "huge": "reply over 262144 bytes: read stopped at",
    "huge_declared": "reply over 262144 bytes: Content-Length 50001",  # 5,000,000 chars + the JSON
    "error500": "http 500: fake server_error (500)",
    "error429": "http 429: fake rate_limit_error (429)",
    "reset": "connection: ",
    "hang": "timeout: TimeoutError after 0.5 s",
}


def caption_req(key: str, lang: str = "en") -> ChatRequest:
    return ChatRequest(key, [{"role": "user", "content": ASK[lang]}], {"model": "m"},
                       validate=lambda text, finish: check_reply(text, finish, lang, DENSE_BOUNDS))


def complete(url: str, request: ChatRequest, **kw: Any) -> ChatResult:
    async def go() -> ChatResult:
        async with ChatClient(url, **{**FAST, "max_reply_bytes": 262_144, **kw}) as client:
            return await client.complete(request)

    return asyncio.run(go())


@pytest.mark.parametrize("mode", [*VALIDATION_FAULTS, *TRANSPORT_FAULTS])
def test_each_fault_is_retried_and_the_good_reply_kept(mode: str) -> None:
    lang = VALIDATION_FAULTS.get(mode, ("en",))[0]
    with FakeOpenAI(fail_then(1, mode), hang_s=2.0) as fake:
        r = complete(fake.url, caption_req("k", lang), max_retries=1)
        assert fake.attempts("k") == 2
    assert r.ok and r.attempts == 2 and r.text == (CAPTION_ZH if lang == "zh" else CAPTION_EN)
    assert r.checks is not None and all(c["ok"] for c in r.checks.values()), r.checks


@pytest.mark.parametrize("mode", VALIDATION_FAULTS)
def test_a_reply_that_keeps_failing_its_checks_ends_failed_with_them(mode: str) -> None:
    lang, error = VALIDATION_FAULTS[mode]
    with FakeOpenAI(lambda body, attempt: mode) as fake:
        r = complete(fake.url, caption_req("k", lang), max_retries=2)
        assert fake.attempts("k") == 3
    assert not r.ok and r.attempts == 3 and r.status == 200
    assert r.error is not None and r.error.startswith(error), r.error
    assert r.checks is not None and any(not c["ok"] for c in r.checks.values())
    assert r.text is not None  # the last reply, kept for the record (never for a shard)


@pytest.mark.parametrize("mode", TRANSPORT_FAULTS)
def test_a_persistent_transport_fault_ends_failed(mode: str) -> None:
    with FakeOpenAI(lambda body, attempt: mode, hang_s=2.0) as fake:
        r = complete(fake.url, caption_req("k"), max_retries=1)
        assert fake.attempts("k") == 2
    assert not r.ok and r.attempts == 2 and r.checks is None and r.text is None
    assert r.error is not None and r.error.startswith(TRANSPORT_FAULTS[mode]), r.error


def test_validation_and_transport_faults_share_one_budget() -> None:
    script = lambda body, attempt: {1: "english", 2: "error500"}.get(attempt, "good")  # noqa: E731
    with FakeOpenAI(script) as fake:
        good = complete(fake.url, caption_req("a", "zh"), max_retries=2)
        bad = complete(fake.url, caption_req("b", "zh"), max_retries=1)
    assert good.ok and good.attempts == 3 and good.text == CAPTION_ZH
    assert not bad.ok and bad.attempts == 2
    assert bad.error == "http 500: fake server_error (500); before: invalid reply: lang (detected en)"
    assert bad.checks is not None and bad.checks["lang"] == {"ok": False, "detected": "en"}


def test_a_huge_reply_is_not_read_whole() -> None:
    """5,000,000 characters: the read stops at the cap; the server sees the client hang up."""
    cap = 65_536
    with FakeOpenAI(lambda body, attempt: "huge") as fake:
        r = complete(fake.url, caption_req("k"), max_retries=0, max_reply_bytes=cap, timeout_s=30)
        written = fake.huge_written
    assert not r.ok and r.error is not None and r.error.startswith(f"reply over {cap} bytes: read stopped at")
    read = int(r.error.rsplit(" ", 1)[1])
    assert cap < read <= cap + 65_536 + 64  # at most one more network chunk than the cap
    assert len(written) == 1 and written[0] < 1_500_000  # 5 MB never went out: the client left
    with FakeOpenAI(lambda body, attempt: "huge_declared") as fake:
        r = complete(fake.url, caption_req("k"), max_retries=0, max_reply_bytes=cap, timeout_s=30)
        written = fake.huge_written
    declared = rf"reply over {cap} bytes: Content-Length 50001\d\d, not read"
    assert r.error is not None and re.fullmatch(declared, r.error), r.error
    assert written[0] < 2_500_000


def test_the_api_key_goes_only_to_an_allowed_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real server records the Authorization header of each request."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("VIDLOOM_CAPTION_API_KEY", raising=False)
    with FakeOpenAI() as fake:
        complete(fake.url, caption_req("env-default"))  # an env key: api.openai.com only
        complete(fake.url, caption_req("other-host"), key_hosts=["api.example.com"])
        complete(fake.url, caption_req("explicit-elsewhere"), api_key="sk-arg", key_hosts=["api.example.com"])
        complete(fake.url, caption_req("allowed"), key_hosts=["127.0.0.1"])
        port = fake.url.split(":")[2].split("/")[0]
        complete(fake.url, caption_req("host-port"), api_key="sk-arg", key_hosts=[f"127.0.0.1:{port}"])
        client = ChatClient(fake.url, key_hosts=["127.0.0.1"], **FAST)
        list(client.run_sync([caption_req("run-sync")]))  # its loop's copy of the client
        sent = dict(zip([b["user"] for b in fake.requests], fake.auth, strict=True))
    assert sent == {"env-default": None, "other-host": None, "explicit-elsewhere": None,
                    "allowed": "Bearer sk-test", "host-port": "Bearer sk-arg", "run-sync": "Bearer sk-test"}


PASS = {"lang": {"ok": True}, "length": {"ok": True}, "numbers": {"ok": True}, "colours": {"ok": True}}


def cap(language: str, kind: str = "dense", **checks: Any) -> Caption:
    text = f"{kind} {language} text"
    return Caption("c", language, text, kind=kind, checks=json.dumps({**PASS, **checks}))  # type: ignore[arg-type]


def test_only_a_valid_pair_is_exportable() -> None:
    en, zh, s_en, s_zh = cap("en"), cap("zh"), cap("en", "short"), cap("zh", "short")
    assert exportable([en, zh, s_en, s_zh]) == [en, zh, s_en, s_zh]
    bad_zh = cap("zh", lang={"ok": False, "detected": "en"})
    assert exportable([en, bad_zh, s_en, s_zh]) == [s_en, s_zh]  # the en half goes too
    assert exportable([en, s_en, s_zh]) == [s_en, s_zh]  # half a pair
    assert exportable([en, zh, s_en, cap("zh", "short", reply={"ok": False})]) == [en, zh]
    own_checks_only = {"lang": {"ok": True}, "length": {"ok": True}}  # no agreement checked
    no_agreement = Caption("c", "zh", "text", checks=json.dumps(own_checks_only))
    assert not caption_valid(no_agreement) and exportable([en, no_agreement]) == []
    assert not caption_valid(Caption("c", "en", "   ", checks=json.dumps(PASS)))
    assert not caption_valid(Caption("c", "en", "x" * 8001, checks=json.dumps(PASS)))
    assert not caption_valid(Caption("c", "en", "text", checks="not json"))
    assert exportable([cap("en"), cap("zh", finish={"ok": False, "finish_reason": "length"})]) == []


def test_caption_failed_names_every_failed_or_missing_caption() -> None:
    from pipelines.captioning import failed_names

    both = [cap("en"), cap("zh"), cap("en", "short"), cap("zh", "short")]
    assert failed_names(both, ("dense", "short")) == ""
    lost = [cap("en"), cap("zh"), cap("en", "short")]  # short_zh got no usable reply
    assert failed_names(lost, ("dense", "short")) == "reply_zh"
    bad = [cap("en", lang={"ok": False, "detected": "fr"}, reply={"ok": False}), cap("zh")]
    assert failed_names(bad, ("dense",)) == "lang_en,reply_en"
    assert failed_names([], ("dense",)) == "reply_en,reply_zh"  # e.g. the clip's file was unreadable
