"""From a clip to its Caption rows: the signals backend, and the VLM request plan (the caption
stage's work; the captioner package is the library it calls: client, prompts, schema, checks).

A clip gets a dense caption and (``short``) a short motion-only one, each in English and
Chinese. With a VLM the English captions come from the video request; the Chinese ones from a
second request, either the same video asked in Chinese (``zh_mode='direct'``) or the English
caption refined by a text LLM (``'translate'``). Every caption carries its checks
(captioner/validate.py) as JSON; failures are recorded, never dropped, and never exported
(``captioner.validate.exportable`` lets only a valid en + zh pair into a shard).

With ``structured`` (the default for the VLM backends) one request per clip asks for the
structured description and every caption at once, as JSON under a schema
(captioner/structured.py, captioner/caption_schema.py); ``zh_mode`` applies to free-text
captioning only. The signals backend fills the description fields it measures.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from curation.schema import Caption, Clip
from pipelines.tasks import ClipTask

if TYPE_CHECKING:
    from captioner.client import ChatClient, ChatResult


class CaptionStage(Protocol):
    """What the VLM request plan reads of its stage (``pipelines.stages.caption.CaptionStage``,
    which imports this module: the plan names the fields it needs instead of importing it back)."""

    backend: str
    model: str
    model_revision: str
    root: str
    structured: bool
    short: bool
    zh_mode: str
    zh_model: str | None
    n_frames: int
    max_pixels: int
    send_as: str
    max_tokens: int
    temperature: float
    seed: int

    def prompts(self) -> dict[str, Any]: ...

SIGNALS_MODEL = "vidloom-signals-v1"
PAIR_CHECKS = ("numbers", "colours")  # checks of the zh/en pair; the others are per language


def clip_signals(clip: Clip) -> dict[str, Any]:
    """The measured signals the signals backend writes about."""
    s = clip.scores
    return {
        "duration_s": round(clip.end_s - clip.start_s, 1),
        "motion": s.motion,
        "camera_motion": s.camera_motion,
        "luma": s.luma,
        "ocr_text": None if clip.crop_reason else s.ocr_text,  # a crop leaves every text box out
        "black_border": s.black_border,
        "shot_index": clip.shot_index,
        "width": clip.width,
        "height": clip.height,
        "fps": clip.fps,
    }


def pair_checks(en: str, zh: str, kind: str = "dense") -> tuple[dict[str, Any], dict[str, Any]]:
    """(checks of the en caption, checks of the zh caption); the pair checks go on both."""
    from captioner.validate import DENSE_BOUNDS, SHORT_BOUNDS, check_agreement, check_caption

    bounds = SHORT_BOUNDS if kind == "short" else DENSE_BOUNDS
    agreement = check_agreement(en, zh)
    return ({**check_caption(en, "en", *bounds.for_lang("en")), **agreement},
            {**check_caption(zh, "zh", *bounds.for_lang("zh")), **agreement})


def failed_names(captions: list[Caption], expected: tuple[str, ...] = ()) -> str:
    """Failed checks over a clip's captions, e.g. 'lang_zh,numbers' ('' when all passed).

    ``expected``: the kinds the clip asked for; a (kind, lang) of them with no caption (its
    request got no usable reply, or was never sent because its English failed) counts as a
    failed ``reply_<lang>``, as a reply that failed its checks does, so '' means every caption
    the clip asked for is stored and passed every check.
    """
    names: set[str] = set()
    have = {(c.kind, c.lang) for c in captions}
    names |= {f"reply_{lang}" for kind in expected for lang in ("en", "zh") if (kind, lang) not in have}
    for c in captions:
        for name, result in json.loads(c.checks or "{}").items():
            if isinstance(result, dict) and result.get("ok") is False:
                names.add(name if name in PAIR_CHECKS else f"{name}_{c.lang}")
    return ",".join(sorted(names))


def signals_captions(task: ClipTask) -> list[Caption]:
    """Dense en + zh captions from the clip's signals and its decoded sparse frames."""
    from captioner.caption_schema import description_columns, schema_errors
    from captioner.signals import signals_caption, signals_description
    from pipelines.clip_frames import clip_sparse

    frames = clip_sparse(task)[0] if task.frames_dir else None
    signals = clip_signals(task.clip)
    en, zh = signals_caption(signals, frames)
    en_checks, zh_checks = pair_checks(en, zh)
    desc = signals_description(signals)
    if errors := schema_errors(desc, "description"):  # a signal outside the schema's sets: a bug
        raise ValueError(f"signals description breaks the schema: {errors}")
    common = {
        "clip_id": task.clip.clip_id,
        "kind": "dense",
        "model": SIGNALS_MODEL,
        "backend": "signals",
        "finish_reason": "stop",
        **description_columns(desc),
    }
    return [
        Caption(lang="en", text=en, checks=json.dumps(en_checks, sort_keys=True), **common),
        Caption(
            lang="zh", text=zh, checks=json.dumps(zh_checks, ensure_ascii=False, sort_keys=True), **common
        ),
    ]


class VlmCaptioner:
    """The requests of one clip against an OpenAI-compatible server (and an optional text LLM)."""

    def __init__(self, stage: CaptionStage, client: ChatClient, zh_client: ChatClient) -> None:
        self.s, self.client, self.zh_client = stage, client, zh_client
        self.prompts = stage.prompts()
        self.params = {
            "model": stage.model,
            "max_tokens": stage.max_tokens,
            "temperature": stage.temperature,
            "seed": stage.seed,
        }

    async def _parts(self, clip: Clip) -> list[dict[str, Any]]:
        from captioner.frames import image_parts, sample_jpegs, video_part

        if clip.path is None:
            raise ValueError("the clip has no extracted file")
        path = Path(self.s.root) / clip.path
        if self.s.send_as == "video":
            return [video_part(path)]
        return image_parts(await asyncio.to_thread(sample_jpegs, path, self.s.n_frames, self.s.max_pixels))

    def _validator(self, lang: str, kind: str, english: str | None = None) -> Any:
        """The checks the client applies to each reply (a failure is retried): captioner/validate.py
        ``check_reply`` with the kind's bounds; a translation also agrees with its English."""
        from captioner.validate import DENSE_BOUNDS, SHORT_BOUNDS, check_reply

        bounds = SHORT_BOUNDS if kind == "short" else DENSE_BOUNDS
        return lambda text, finish: check_reply(text, finish, lang, bounds, english)

    def _video_request(self, clip: Clip, kind: str, lang: str, parts: list[dict[str, Any]]) -> Any:
        from captioner.client import ChatRequest

        text = self.prompts[f"{kind}_{lang}"].text
        return ChatRequest(
            key=f"{clip.clip_id}:{kind}_{lang}",
            params=self.params,
            messages=[{"role": "user", "content": [*parts, {"type": "text", "text": text}]}],
            validate=self._validator(lang, kind),
        )

    def _translate_request(self, clip: Clip, kind: str, english: str) -> Any:
        from captioner.client import ChatRequest
        from captioner.prompts import render

        params = {**self.params, "model": self.s.zh_model or self.s.model}
        return ChatRequest(
            key=f"{clip.clip_id}:{kind}_zh",
            params=params,
            messages=[{"role": "user", "content": render(self.prompts["translate_zh"], caption=english)}],
            validate=self._validator("zh", kind, english),
        )

    def _caption(self, clip: Clip, lang: str, kind: str, r: ChatResult, params: dict[str, Any]) -> Caption:
        """The stored row of a reply that came back: its cleaned text (cut at STORED_MAX_CHARS)
        and its checks; a reply that failed them after the retries also gets a failed 'reply'
        check with the client's error and attempt count."""
        from captioner.validate import STORED_MAX_CHARS, clean_caption

        prompt = "translate_zh" if lang == "zh" and self.s.zh_mode == "translate" else f"{kind}_{lang}"
        checks = dict(r.checks or {})
        if not r.ok:
            checks["reply"] = {"ok": False, "error": r.error, "attempts": r.attempts}
        return Caption(
            clip_id=clip.clip_id,
            lang=lang,  # type: ignore[arg-type]
            kind=kind,  # type: ignore[arg-type]
            text=clean_caption(r.text or "")[:STORED_MAX_CHARS],
            model=r.model or params["model"],
            revision=self.s.model_revision,
            prompt_sha=self.prompts[prompt].sha256,
            backend=self.s.backend,
            tokens=r.completion_tokens,
            prompt_tokens=r.prompt_tokens,
            finish_reason=r.finish_reason or "",
            checks=json.dumps(checks, ensure_ascii=False, sort_keys=True),
            params=json.dumps(params, sort_keys=True),
        )

    async def caption(self, task: ClipTask) -> None:
        """Fill ``task.captions``; set ``task.error`` when a request failed after retries.

        Every reply that came back is stored with its checks (a failed one too, so what failed is
        on record); a request that got no usable reply (transport faults, malformed bodies,
        4xx) has no row and is named in ``task.error``. The zh/en agreement checks go on both
        captions of a pair whose two replies passed; in 'translate' mode they are part of the
        Chinese reply's checks, so a translation that drops a number is retried.
        """
        from captioner.validate import check_agreement, clean_caption

        clip = task.clip
        try:
            parts = await self._parts(clip)
        except Exception as e:  # an unreadable clip file: this clip fails, the batch goes on
            task.error = f"caption frames: {type(e).__name__}: {e}"
            return
        if self.s.structured:
            return await self._caption_structured(task, parts)
        kinds = ["dense", "short"] if self.s.short else ["dense"]
        en = await asyncio.gather(
            *(self.client.complete(self._video_request(clip, k, "en", parts)) for k in kinds)
        )
        if self.s.zh_mode == "direct":
            zh_reqs = [self._video_request(clip, k, "zh", parts) for k in kinds]
        else:
            zh_reqs = [
                self._translate_request(clip, k, clean_caption(r.text or ""))
                for k, r in zip(kinds, en, strict=True)
                if r.ok
            ]
        zh = await asyncio.gather(*(self.zh_client.complete(q) for q in zh_reqs))
        errors = [f"{r.key.split(':')[1]}: {r.error}" for r in (*en, *zh) if not r.ok]
        zh_of = {q.key.split(":")[1][: -len("_zh")]: (r, q.params) for r, q in zip(zh, zh_reqs, strict=True)}
        for kind, r_en in zip(kinds, en, strict=True):
            replies = {"en": (r_en, self.params), **({"zh": zh_of[kind]} if kind in zh_of else {})}
            rows = {lang: self._caption(clip, lang, kind, r, params)
                    for lang, (r, params) in replies.items() if r.ok or r.checks is not None}
            if all(r.ok for r, _ in replies.values()) and len(rows) == 2:
                agreement = check_agreement(rows["en"].text, rows["zh"].text)
                for c in rows.values():
                    checks = json.loads(c.checks) | agreement
                    c.checks = json.dumps(checks, ensure_ascii=False, sort_keys=True)
            task.captions += rows.values()
        if errors:
            task.error = "caption " + "; ".join(errors)[:480]

    async def _caption_structured(self, task: ClipTask, parts: list[dict[str, Any]]) -> None:
        """One structured request (captioner/structured.py): the description fields and every
        caption of the clip in one JSON reply; a failed reply is stored with its checks."""
        from captioner.structured import structured_request, structured_rows

        clip, prompt = task.clip, self.prompts["structured"]
        req = structured_request(f"{clip.clip_id}:structured", parts, prompt.text, self.params, self.s.short)
        r = await self.client.complete(req)
        if r.ok or r.checks is not None:
            common = {"model": r.model or self.params["model"], "revision": self.s.model_revision,
                      "prompt_sha": prompt.sha256, "backend": self.s.backend,
                      "params": json.dumps({**self.params, "response_format": "json_schema"}, sort_keys=True)}
            task.captions += structured_rows(clip.clip_id, r, self.s.short, common)
        if not r.ok:
            task.error = f"caption structured: {r.error}"[:480]
