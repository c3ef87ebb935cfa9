"""Caption stage: dense zh + en captions (and short motion-only ones) for each kept clip.

Backends (``caption.backend``):
    signals  deterministic captions from the measured signals and the decode pass's frames
             (captioner/signals.py); CPU only, no request, labelled backend='signals'.
    openai   any OpenAI-compatible chat endpoint.
    vllm     the server ``vidloom caption-server`` started (OpenAI-compatible as well).

``structured`` (VLM backends, default on): one request per clip with ``response_format``
json_schema for the description fields and the captions together (captioner/structured.py);
off: the free-text requests (dense, short, zh by ``zh_mode``).

For the VLM backends the stage runs as an actor pool over batches: ``process_batch`` prepares
each clip's frames in worker threads (the CPU part: decode the extracted clip, sample
``n_frames``, JPEG) while the async client streams the requests with bounded concurrency (the
I/O part). A reply that fails the caption checks is retried like a transport fault; a clip
whose requests fail after the client's retries gets ``task.error`` (recorded as
``clips.caption_error``; the next run retries it) and the batch goes on.

The API key (env ``api_key_env``) is sent only to the hosts in ``api_key_hosts`` (default
``api.openai.com``): a key exported for OpenAI never reaches the local vLLM server or any other
endpoint unless that host is listed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pipelines.stage import Resources, Stage, unhashed
from pipelines.tasks import ClipTask

BACKENDS = ("signals", "openai", "vllm")
VLLM_DEFAULT_URL = "http://127.0.0.1:8000/v1"
log = logging.getLogger(__name__)


@dataclass
class CaptionConfig:
    """Dense bilingual captions (captioner/), the caption stage's section. Backends:
        signals  deterministic zh + en captions from the measured signals (CPU; the default)
        openai   any OpenAI-compatible endpoint: ``base_url`` + the key in env ``api_key_env``
        vllm     a server started by ``vidloom caption-server`` (``base_url`` defaults to it)
    structured: (VLM backends) one request per clip whose reply is JSON under the clip schema
        (captioner/caption_schema.py, sent as ``response_format`` json_schema, strict): the
        description fields and the dense + short captions in both languages together. A reply
        that is not JSON or breaks the schema fails its checks and is retried. False: free-text
        requests, one per caption, with ``zh_mode``.
    zh_mode: 'translate' (the English caption refined into Chinese by a text LLM at
        ``zh_base_url``/``zh_model``, or the same server) or 'direct' (asked in Chinese).
    reject_failed_checks: caption checks whose failure rejects the clip (reason
        'caption_check'), e.g. ['lang', 'numbers']; failed checks are recorded in
        ``captions.checks`` and ``clips.caption_failed`` either way, and a failed caption is
        never written to a shard (the clip is exported without it).
    require_caption: reject a captioned clip that has no valid caption set (reason 'no_caption':
        a request failed after its retries, or a caption failed a check).
    api_key_hosts: the hosts (or host:port) the key may be sent to; '*' for any.
    max_reply_bytes: a reply is read up to this many bytes, then given up and retried.

    What decides the captions is in the stage's ``params()``; where the model is served, the key,
    the request pacing and the filter step's caption rules (``reject_failed_checks``,
    ``require_caption``) are ``unhashed``.
    """

    backend: str = "signals"  # 'signals' | 'openai' | 'vllm' (above)
    base_url: str | None = unhashed(None)  # the endpoint including /v1
    model: str = "tarsier2-7b"  # the served model name
    model_revision: str = ""  # recorded with every caption (the served weights' revision)
    api_key_env: str = unhashed("OPENAI_API_KEY")  # environment variable holding the API key
    # never the local vLLM server by default
    api_key_hosts: tuple[str, ...] = unhashed(("api.openai.com",))
    structured: bool = True  # description fields + captions as one JSON reply (VLM backends)
    zh_mode: str = "translate"
    # zh_mode 'translate': the text LLM's endpoint (default: base_url)
    zh_base_url: str | None = unhashed(None)
    zh_model: str | None = None  # ... and its model (default: model)
    short: bool = True  # also a short motion-only caption (image-to-video)
    n_frames: int = 16  # frames sent per clip
    max_pixels: int = 460_800  # each frame is resized to at most this many pixels
    send_as: str = "images"  # 'images' (JPEG data URIs) | 'video' (the clip as an mp4 data URI)
    prompts_dir: str | None = None  # a directory of prompt files replacing captioner/prompts
    max_tokens: int = 512  # per request
    temperature: float = 0.0  # sampling temperature
    seed: int = 0  # request seed
    concurrency: int = unhashed(8)  # requests in flight
    batch_size: int = unhashed(32)  # clips per Ray batch
    timeout_s: float = unhashed(120.0)  # per request
    max_retries: int = unhashed(4)  # retries of a failed or invalid reply
    max_reply_bytes: int = unhashed(262_144)  # a dense caption reply is a few KB
    reject_failed_checks: tuple[str, ...] = unhashed(())
    # a captioned clip without a valid caption set is rejected ('no_caption')
    require_caption: bool = unhashed(False)

    # checked at load (pipelines/config_check.py): ranges (low, high, low exclusive; others >= 0)
    RANGES: ClassVar[dict[str, tuple[float | None, float | None, bool]]] = {
        "n_frames": (1, None, False), "max_pixels": (1, None, False), "max_tokens": (1, None, False),
        "temperature": (0, 2, False), "concurrency": (1, None, False), "batch_size": (1, None, False),
        "timeout_s": (0, None, True),
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "backend": BACKENDS, "zh_mode": ("translate", "direct"), "send_as": ("images", "video")}


@dataclass
class CaptionStage(CaptionConfig, Stage[ClipTask, ClipTask]):  # type: ignore[misc]  # batch_size: a field
    name: ClassVar[str] = "caption"
    # 2: replies that fail the checks are retried; failed ones are stored. 3: structured descriptions
    version: ClassVar[int] = 3
    resources: ClassVar[Resources] = Resources(cpus=1.0, actors=True)

    root: str = field(default="", compare=False)  # the output root the clip paths are relative to
    _prompts: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"caption.backend {self.backend!r}: choose one of {BACKENDS}")
        if self.backend == "signals":
            self.batch_size = 1
        if self.zh_mode not in ("translate", "direct"):
            raise ValueError(f"caption.zh_mode {self.zh_mode!r}: choose 'translate' or 'direct'")

    def requested(self) -> Resources:
        """A VLM backend holds a client and checked prompts per actor; 'signals' holds nothing, so
        it runs as plain Ray tasks on the workers the earlier steps warmed: an actor pool would
        start processes of its own for a step of about a second of CPU (the signals caption step
        took 5.2 CPU s on an actor pool, bench/results/curate_real.json at e84a1d4)."""
        if self.backend == "signals":
            return Resources(cpus=self.resources.cpus)
        return super().requested()

    def params(self) -> dict[str, Any]:
        """What decides the captions: for signals only the backend (and its code version)."""
        p = super().params()
        from captioner.caption_schema import SCHEMA_VERSION

        if self.backend == "signals":
            return {"backend": "signals", "fields": SCHEMA_VERSION}
        if self.structured:
            p["fields"] = SCHEMA_VERSION
        p["prompt_shas"] = {k: v.sha256 for k, v in sorted(self.prompts().items())}
        return p

    def prompts(self) -> dict[str, Any]:
        from captioner.prompts import load_prompt

        if not self._prompts:
            names = ["dense_en", "dense_zh", "translate_zh", "short_en", "short_zh", "structured"]
            self._prompts = {n: load_prompt(n, self.prompts_dir) for n in names}
        return self._prompts

    def setup(self) -> None:
        if self.backend != "signals":
            self.prompts()
            if self.backend == "openai" and not self.base_url:
                raise ValueError("caption.backend 'openai' needs caption.base_url")
            from captioner.validate import detect_language

            # Load lingua's models now: the first call takes ~1 s, and the replies' checks run on
            # the event loop, where that second would run out other requests' timeouts.
            detect_language("The camera pans slowly across a quiet street.")
            detect_language("镜头缓缓扫过一条安静的街道。")

    # --- signals -------------------------------------------------------------
    def process(self, task: ClipTask) -> ClipTask:
        if self.backend != "signals":
            return self.process_batch([task])[0]
        from pipelines.captioning import signals_captions

        task.captions = signals_captions(task)
        return task

    # --- VLM backends -------------------------------------------------------------
    def process_batch(self, tasks: list[ClipTask]) -> list[ClipTask]:
        if self.backend == "signals":
            return [self.process(t) for t in tasks]
        return asyncio.run(self._caption_batch(tasks))

    async def _caption_batch(self, tasks: list[ClipTask]) -> list[ClipTask]:
        from captioner.client import ChatClient
        from pipelines.captioning import VlmCaptioner

        url = self.base_url or VLLM_DEFAULT_URL
        key = os.environ.get(self.api_key_env) or None
        opts: dict[str, Any] = {
            "api_key": key,
            "key_envs": (),  # the key is env api_key_env's or none: no fallback to other variables
            "key_hosts": self.api_key_hosts,
            "concurrency": self.concurrency,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
            "max_reply_bytes": self.max_reply_bytes,
        }
        async with ChatClient(url, **opts) as client:
            if key and client.api_key is None:
                log.info("caption: %s is set but not sent to %s (not in caption.api_key_hosts %s)",
                         self.api_key_env, url, list(self.api_key_hosts))
            zh_client = None
            if self.zh_base_url and self.zh_base_url != url:
                zh_client = ChatClient(self.zh_base_url, **opts)
            try:
                cap = VlmCaptioner(self, client, zh_client or client)
                await asyncio.gather(*(cap.caption(t) for t in tasks))
            finally:
                if zh_client is not None:
                    await zh_client.aclose()
        return tasks
