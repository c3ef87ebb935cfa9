"""The caption step: dense zh + en captions for every kept clip (after extraction).

Each clip is keyed by (clip, 'caption', version, params hash of the backend, model, prompt
shas and sampling params): a rerun skips captioned clips, a new model or prompt re-captions.
A clip whose captioning failed records ``clips.caption_error`` and is retried by the next run:
a request that got no usable reply, or a reply that still failed its checks after the client's
retries (that reply is stored too, with its failed checks). ``clips.caption_failed`` lists the
failed checks of the stored captions, and ``reply_<lang>`` for a caption asked for but not
stored ('' when every caption is there and passed). The decision is then re-run, so the
caption rules of the config (``reject_failed_checks``, ``require_caption``: off by default) take
effect. Whatever is recorded here, only valid en + zh pairs are ever exported
(``captioner.validate.exportable``). Captions with a structured description also get their
field agreement rows (``caption_checks``: camera movement vs the optical-flow label, overlay
text vs OCR; captioner/field_checks.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from curation import schema
from curation.db import Catalog
from pipelines.config import CurateConfig
from pipelines.journal import StepJournal, run_step
from pipelines.runner import Runner
from pipelines.tasks import ClipTask


def caption(
    root: Path, tasks: Iterable[ClipTask], cfg: CurateConfig, runner: Runner, cat: Catalog
) -> dict[str, Any]:
    from captioner.field_checks import field_checks
    from pipelines.captioning import failed_names
    from pipelines.stages.caption import CaptionStage

    stage = CaptionStage.from_config(cfg.caption, root=str(root))
    kinds = ("dense", "short") if stage.short and stage.backend != "signals" else ("dense",)

    def to_tables(t: ClipTask) -> dict[str, list[dict[str, Any]]]:
        row = {
            "clip_id": t.clip.clip_id,
            "caption_error": t.error,
            "caption_failed": failed_names(t.captions, kinds),
        }
        checks = [schema.row(c) for c in field_checks(t.clip, t.captions)]
        return {"clips": [row], "captions": [schema.row(c) for c in t.captions], "caption_checks": checks}

    return run_step(
        cat,
        StepJournal(root / ".work", "caption"),
        runner,
        [stage],
        tasks,
        lambda t: t.clip.clip_id,
        to_tables,
        ("caption", stage.version, stage.params_hash()),
        batch_parts=32,
        retry_errors=True,
        progress=not cfg.runtime.quiet,
    )
