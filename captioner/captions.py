"""From a clip to its Caption rows: the signals backend, and the VLM request plan.

A clip gets a dense caption and (``short``) a short motion-only one, each in English and
Chinese. With a VLM the English captions come from the video request; the Chinese ones from a
second request, either the same video asked in Chinese (``zh_mode='direct'``) or the English
caption refined by a text LLM (``'translate'``). Every caption carries its checks
(captioner/validate.py) as JSON; failures are recorded, never dropped.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curation.schema import Caption, Clip
from pipelines.tasks import ClipTask

if TYPE_CHECKING:
    from captioner.client import ChatClient, ChatResult
    from pipelines.stages.caption import CaptionStage

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


def failed_names(captions: list[Caption]) -> str:
    """Failed checks over a clip's captions, e.g. 'lang_zh,numbers' ('' when all passed)."""
    names: set[str] = set()
    for c in captions:
        for name, result in json.loads(c.checks or "{}").items():
            if isinstance(result, dict) and result.get("ok") is False:
                names.add(name if name in PAIR_CHECKS else f"{name}_{c.lang}")
    return ",".join(sorted(names))


def signals_captions(task: ClipTask) -> list[Caption]:
    """Dense en + zh captions from the clip's signals and its decoded sparse frames."""
    from captioner.signals import signals_caption
    from pipelines.clip_frames import clip_sparse

    frames = clip_sparse(task)[0] if task.frames_dir else None
    en, zh = signals_caption(clip_signals(task.clip), frames)
    en_checks, zh_checks = pair_checks(en, zh)
    common = {
        "clip_id": task.clip.clip_id,
        "kind": "dense",
        "model": SIGNALS_MODEL,
        "backend": "signals",
        "finish_reason": "stop",
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

    def _video_request(self, clip: Clip, kind: str, prompt_name: str, parts: list[dict[str, Any]]) -> Any:
        from captioner.client import ChatRequest

        text = self.prompts[prompt_name].text
        return ChatRequest(
            key=f"{clip.clip_id}:{kind}",
            params=self.params,
            messages=[{"role": "user", "content": [*parts, {"type": "text", "text": text}]}],
        )

    def _translate_request(self, clip: Clip, kind: str, english: str) -> Any:
        from captioner.client import ChatRequest
        from captioner.prompts import render

        params = {**self.params, "model": self.s.zh_model or self.s.model}
        return ChatRequest(
            key=f"{clip.clip_id}:{kind}",
            params=params,
            messages=[{"role": "user", "content": render(self.prompts["translate_zh"], caption=english)}],
        )

    def _caption(
        self, clip: Clip, lang: str, kind: str, prompt_name: str, r: ChatResult, params: dict[str, Any]
    ) -> Caption:
        from captioner.validate import clean_caption

        return Caption(
            clip_id=clip.clip_id,
            lang=lang,
            kind=kind,
            text=clean_caption(r.text or ""),  # type: ignore[arg-type]
            model=r.model or params["model"],
            revision=self.s.model_revision,
            prompt_sha=self.prompts[prompt_name].sha256,
            backend=self.s.backend,
            tokens=r.completion_tokens,
            prompt_tokens=r.prompt_tokens,
            finish_reason=r.finish_reason or "",
            params=json.dumps(params, sort_keys=True),
        )

    async def caption(self, task: ClipTask) -> None:
        """Fill ``task.captions``; set ``task.error`` when a request failed after retries."""
        clip = task.clip
        try:
            parts = await self._parts(clip)
        except Exception as e:  # an unreadable clip file: this clip fails, the batch goes on
            task.error = f"caption frames: {type(e).__name__}: {e}"
            return
        kinds = ["dense", "short"] if self.s.short else ["dense"]
        en = await asyncio.gather(
            *(self.client.complete(self._video_request(clip, f"{k}_en", f"{k}_en", parts)) for k in kinds)
        )
        if self.s.zh_mode == "direct":
            zh_reqs = [self._video_request(clip, f"{k}_zh", f"{k}_zh", parts) for k in kinds]
        else:
            zh_reqs = [
                self._translate_request(clip, f"{k}_zh", r.text or "")
                for k, r in zip(kinds, en, strict=True)
                if r.ok
            ]
        zh = await asyncio.gather(*(self.zh_client.complete(q) for q in zh_reqs))
        errors = [f"{r.key.split(':')[1]}: {r.error}" for r in (*en, *zh) if not r.ok]
        zh_by_kind = {r.key.split(":")[1].split("_")[0]: (r, q) for r, q in zip(zh, zh_reqs, strict=True)}
        zh_prompt = "translate_zh" if self.s.zh_mode == "translate" else None
        for kind, r_en in zip(kinds, en, strict=True):
            if not r_en.ok:
                continue
            c_en = self._caption(clip, "en", kind, f"{kind}_en", r_en, self.params)
            pair = zh_by_kind.get(kind)
            if pair is None or not pair[0].ok:
                c_en.checks = json.dumps(pair_checks(c_en.text, "", kind)[0] | {"zh_missing": {"ok": False}})
                task.captions.append(c_en)
                continue
            r_zh, q_zh = pair
            c_zh = self._caption(clip, "zh", kind, zh_prompt or f"{kind}_zh", r_zh, q_zh.params)
            en_checks, zh_checks = pair_checks(c_en.text, c_zh.text, kind)
            for c, checks in ((c_en, en_checks), (c_zh, zh_checks)):
                checks["finish"] = {"ok": c.finish_reason == "stop", "finish_reason": c.finish_reason}
                c.checks = json.dumps(checks, ensure_ascii=False, sort_keys=True)
            task.captions += [c_en, c_zh]
        if errors:
            task.error = "caption " + "; ".join(errors)[:480]
