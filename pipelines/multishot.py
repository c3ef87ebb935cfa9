"""Multi-shot samples: consecutive accepted shots of one video, joined across hard cuts.

``vidloom export --multi-shot`` (``export_multishot``) plans, per video, runs of consecutive
shots (``plan_samples``), cuts each run's span from the source once with the clip cutter
(pipelines/stages/extract.py: copy or verified re-encode) and writes the samples as shards in
the usual buckets and versions. A sample's json holds ``shots``, one entry per shot with its
frame span relative to the sample's mp4 and its own en/zh captions (docs/data-engineers.md
"Shard sample layout").

Joining rules. Shot ``k+1`` joins the sample that ends with shot ``k`` when all hold:

- shot ``k+1`` was entered by a hard ``cut`` (a dissolve or fade ends the sample: its blended
  frames belong to neither shot);
- the clips at the cut are the ones next to it: shot ``k``'s last clip and shot ``k+1``'s first
  clip (of the same split); a middle shot must be one clip, so no frames are skipped;
- each joined clip is accepted: ``status = 'kept'``, chosen by the export's ``--where``, and with a
  valid dense en + zh caption pair (``captioner.validate.exportable``). A shot without one ends
  the sample before it: a frame span with no text to route is not a multi-shot training signal;
- the clips share one extraction crop (a sample has one frame size);
- the sample stays within ``shards.multishot_max_shots`` shots and ``shards.multishot_max_s``
  seconds (runs are packed greedily, front to back).

Runs of fewer than ``shards.multishot_min_shots`` shots are not written (single shots are what
the plain export writes). The sample spans source frames ``[first clip start, last clip end)``;
each shot's span is its catalog shot clipped to that range, so the few frames the clip trims
leave at a cut (``clips.trim_*_frames``) stay with their own shot and the spans tile the mp4.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation import schema
from curation.db import Catalog
from pipelines.clip_cut import crop_box
from pipelines.config import CurateConfig, ShardConfig

SAMPLE_DIR = "multishot"  # the cut samples: <root>/multishot/<video_id>/<key>.mp4


@dataclass(slots=True)
class ShotPart:
    """One shot of a planned sample: the catalog shot, its accepted clip, its dense captions."""

    shot: schema.Shot
    clip: schema.Clip
    caption_en: str
    caption_zh: str


@dataclass(slots=True)
class SamplePlan:
    """A multi-shot sample: source frames ``[start_frame, end_frame)`` of one video."""

    video_id: str
    parts: list[ShotPart]
    fps: float

    @property
    def start_frame(self) -> int:
        return self.parts[0].clip.start_frame

    @property
    def end_frame(self) -> int:
        return self.parts[-1].clip.end_frame

    @property
    def key(self) -> str:
        return schema.short_hash("multishot", self.video_id, self.start_frame, self.end_frame,
                                 *(p.clip.clip_id for p in self.parts))

    def shot_spans(self) -> list[tuple[int, int]]:
        """Each shot's ``[start, end)`` in the sample's frames (its catalog shot, clipped)."""
        s, e = self.start_frame, self.end_frame
        return [(max(p.shot.start_frame, s) - s, min(p.shot.end_frame, e) - s) for p in self.parts]


@dataclass
class Plan:
    """Planned samples and why runs of shots ended (``breaks``: reason -> count)."""

    samples: list[SamplePlan] = field(default_factory=list)
    breaks: Counter[str] = field(default_factory=Counter)
    short_runs: int = 0  # runs shorter than multishot_min_shots, not written


def dense_pair(captions: list[schema.Caption]) -> tuple[str, str] | None:
    """The valid dense (en, zh) captions of a clip, or None when it has no valid pair."""
    from captioner.validate import exportable

    dense = {c.lang: c.text for c in exportable(captions) if c.kind == "dense"}
    return (dense["en"], dense["zh"]) if {"en", "zh"} <= set(dense) else None


def _span_clips(cat: Catalog, video_id: str,
                shots: list[schema.Shot]) -> dict[tuple[str, int], list[schema.Clip]]:
    """Clips of each (split_hash, shot_index) that lie inside the catalog's shot, by position."""
    bounds = {s.shot_index: (s.start_frame, s.end_frame) for s in shots}
    out: dict[tuple[str, int], list[schema.Clip]] = {}
    for c in cat.clips("video_id = ?", [video_id]):
        lo_hi = bounds.get(c.shot_index)
        if lo_hi and lo_hi[0] <= c.start_frame < c.end_frame <= lo_hi[1]:
            out.setdefault((c.split_hash, c.shot_index), []).append(c)
    for clips in out.values():
        clips.sort(key=lambda c: (c.start_frame, c.end_frame))
    return out


def plan_samples(cat: Catalog, clip_ids: list[str], shards: ShardConfig) -> Plan:
    """The multi-shot samples the selected clips allow (see the module docstring for the rules)."""
    max_shots, max_s = shards.multishot_max_shots, shards.multishot_max_s
    min_shots = shards.multishot_min_shots
    if min_shots < 2 or max_shots < min_shots or max_s <= 0:
        raise ValueError(f"need 2 <= multishot_min_shots <= multishot_max_shots and multishot_max_s > 0 "
                         f"(got {min_shots}, {max_shots}, {max_s})")
    chosen = set(clip_ids)
    selected = cat.clips("clip_id IN (SELECT unnest(?))", [sorted(chosen)]) if chosen else []
    plan = Plan()
    for video_id in sorted({c.video_id for c in selected}):
        shots = cat.shots(video_id)
        by_shot = _span_clips(cat, video_id, shots)
        for split_hash in sorted({c.split_hash for c in selected if c.video_id == video_id}):
            _plan_run(cat, video_id, shots, {i: cl for (h, i), cl in by_shot.items() if h == split_hash},
                      chosen, (max_shots, max_s, min_shots), plan)
    return plan


def _plan_run(cat: Catalog, video_id: str, shots: list[schema.Shot], clips: dict[int, list[schema.Clip]],
              chosen: set[str], limits: tuple[int, float, int], plan: Plan) -> None:
    max_shots, max_s, min_shots = limits
    captions: dict[str, tuple[str, str] | None] = {}

    def refuse(clip: schema.Clip | None) -> str | None:
        """Why this clip cannot be part of a multi-shot sample, or None."""
        if clip is None:
            return "no_clip"
        if clip.status != "kept" or clip.clip_id not in chosen:
            return "not_accepted"
        if clip.clip_id not in captions:
            captions[clip.clip_id] = dense_pair(cat.captions(clip.clip_id))
        return None if captions[clip.clip_id] else "no_caption"

    def part(shot: schema.Shot, clip: schema.Clip) -> ShotPart:
        en, zh = captions[clip.clip_id]  # type: ignore[misc]
        return ShotPart(shot, clip, en, zh)

    cur: list[ShotPart] = []

    def close() -> None:
        if len(cur) >= min_shots:
            plan.samples.append(SamplePlan(video_id, list(cur), cur[0].clip.fps))
        elif cur:
            plan.short_runs += 1
        cur.clear()

    def refuse_join(shot: schema.Shot, entry: schema.Clip | None) -> str | None:
        """Why ``shot`` (entered through its first clip) cannot extend ``cur``, or None."""
        last = cur[-1]
        if shot.transition != "cut":
            return "gradual"
        if shot.shot_index != last.shot.shot_index + 1:
            return "not_adjacent"  # a shot between them has no catalog row
        if last.clip is not clips[last.shot.shot_index][-1]:
            return "long_shot"  # the previous shot is several clips: its clip in cur is not at the cut
        why = refuse(entry)
        if why is None and entry is not None:
            if crop_box(entry) != crop_box(cur[0].clip):
                return "crop"
            seconds = (entry.end_frame - cur[0].clip.start_frame) / cur[0].clip.fps
            if len(cur) >= max_shots or seconds > max_s + 1e-9:
                return "limit"
        return why

    for shot in shots:
        mine = clips.get(shot.shot_index, [])
        entry, exit_ = (mine[0], mine[-1]) if mine else (None, None)
        if cur:
            why = refuse_join(shot, entry)
            if why == "long_shot":  # start again from the previous shot's clip at the cut
                plan.breaks[why] += 1
                prev = cur[-1].shot
                close()
                prev_exit = clips[prev.shot_index][-1]
                if refuse(prev_exit) is None:
                    cur.append(part(prev, prev_exit))
                    why = refuse_join(shot, entry)
            if cur and why is None and entry is not None:
                cur.append(part(shot, entry))
                continue
            if cur and why is not None:
                plan.breaks[why] += 1
            close()
        if refuse(exit_) is None and exit_ is not None:
            cur.append(part(shot, exit_))
    close()


def sample_meta(p: SamplePlan, clip: schema.Clip) -> dict[str, Any]:
    """The json of a multi-shot sample (``clip`` is its cut file's row: size, codec, frames)."""
    shots = []
    for part, (a, b) in zip(p.parts, p.shot_spans(), strict=True):
        shots.append({
            "shot_index": part.shot.shot_index,
            "clip_id": part.clip.clip_id,
            "transition": part.shot.transition,
            "start_frame": a,
            "end_frame": b,
            "source_start_frame": a + p.start_frame,
            "source_end_frame": b + p.start_frame,
            "caption_en": part.caption_en,
            "caption_zh": part.caption_zh,
        })
    return {
        "key": p.key, "multi_shot": True, "video_id": p.video_id,
        "start_frame": p.start_frame, "end_frame": p.end_frame,
        "start_s": clip.start_s, "end_s": clip.end_s, "fps": p.fps,
        "width": clip.width, "height": clip.height, "n_frames": clip.n_frames,
        "codec": clip.codec, "extract_mode": clip.extract_mode, "split_hash": clip.split_hash,
        "shots": shots,
    }


def cut_samples(plans: list[SamplePlan], root: Path, cfg: CurateConfig, cat: Catalog
                ) -> tuple[list[tuple[SamplePlan, schema.Clip]], list[dict[str, str]]]:
    """Cut each plan's span to ``<root>/multishot/<video_id>/<key>.mp4``; returns the cut
    ``(plan, file row)`` pairs and ``{key, video_id, error}`` failures.

    A file already there (cuts are renamed into place whole, after their check) with the span's
    frame count is reused without the source, as the plain export reuses clip files."""
    from pipelines.clip_cut import clip_file_name, probe_clip
    from pipelines.stages.extract import ClipExtract
    from pipelines.tasks import ClipTask

    stage = ClipExtract.from_config(cfg.extract, out_dir=str(root / SAMPLE_DIR))
    sources = {v.video_id: v.path for v in cat.videos()}
    done, failed = [], []
    for p in plans:
        first, last = p.parts[0].clip, p.parts[-1].clip
        clip = schema.Clip(
            clip_id=p.key, video_id=p.video_id, shot_index=first.shot_index,
            start_frame=p.start_frame, end_frame=p.end_frame, start_s=first.start_s, end_s=last.end_s,
            width=first.width, height=first.height, fps=p.fps, split_hash=first.split_hash,
            extract_crop_x=first.extract_crop_x, extract_crop_y=first.extract_crop_y,
            extract_crop_w=first.extract_crop_w, extract_crop_h=first.extract_crop_h,
        )
        final = root / SAMPLE_DIR / p.video_id / clip_file_name(clip)
        if final.is_file():
            codec, times, width, height, mode = probe_clip(str(final))
            if len(times) == p.end_frame - p.start_frame:
                clip.path = f"{SAMPLE_DIR}/{p.video_id}/{final.name}"
                clip.codec, clip.extract_mode, clip.width, clip.height = codec, mode, width, height
                clip.n_frames, clip.bytes = len(times), final.stat().st_size
                done.append((p, clip))
                continue
        src = sources.get(p.video_id)
        task = ClipTask(clip=clip, src_path=src or "", frames_dir=str(root / ".work" / "frames" / p.video_id))
        if src is None:
            task.error = f"video {p.video_id} is not in the catalog"
        else:
            task = stage.process(task)
        if task.error:
            failed.append({"key": p.key, "video_id": p.video_id, "error": task.error[:500]})
        else:
            done.append((p, task.clip))
    return done, failed


def export_multishot(root: Path, cfg: CurateConfig, cat: Catalog, clip_ids: list[str], shards_dir: Path,
                     selection: str) -> dict[str, Any]:
    """Write the multi-shot samples of the selected clips as a new shards version under ``shards_dir``.

    Like ``pipelines.export_step.export`` (immutable ``<dataset_hash>/`` versions, ``latest``, the
    ``shards`` table), with samples planned by ``plan_samples`` and cut by ``cut_samples``. The
    manifest's ``multi_shot`` records the limits, the run breaks and any span that failed to cut.
    """
    from pipelines.export_step import publish_version
    from pipelines.shard_samples import bucket_for, first_frame_jpeg

    plan = plan_samples(cat, clip_ids, cfg.shards)
    for stale in sorted((root / SAMPLE_DIR).glob("*/.*.part")):  # a killed run's half-written cuts
        stale.unlink(missing_ok=True)
    cut, failed = cut_samples(plan.samples, root, cfg, cat)

    def samples() -> Any:
        for p, clip in sorted(cut, key=lambda pc: (bucket_for(pc[1].width, pc[1].height, pc[1].duration_s),
                                                  pc[0].key)):
            path = root / str(clip.path)
            meta = sample_meta(p, clip)
            yield bucket_for(clip.width, clip.height, clip.duration_s), schema.ShardSample(
                key=p.key, mp4=path.read_bytes(), meta=meta,
                # one text per language for loaders without shot routing: the shots' captions in order
                en_txt="\n".join(s["caption_en"] for s in meta["shots"]),
                zh_txt="\n".join(s["caption_zh"] for s in meta["shots"]),
                jpg=first_frame_jpeg(path) if cfg.shards.with_first_frame else None,
            )

    info = {
        "max_shots": cfg.shards.multishot_max_shots, "max_s": cfg.shards.multishot_max_s,
        "min_shots": cfg.shards.multishot_min_shots, "breaks": dict(sorted(plan.breaks.items())),
        "short_runs": plan.short_runs, "errors": failed,
    }
    infos, dataset, version_dir, created = publish_version(
        cat, samples(), shards_dir, root, cfg, selection, {"multi_shot": info})
    return {
        "shards": len(infos), "samples": sum(i.n_samples for i in infos), "selected": len(set(clip_ids)),
        "multi_shot_samples": len(cut), "shots": sum(len(p.parts) for p, _ in cut),
        "unavailable": len(failed), "breaks": info["breaks"], "dataset": dataset,
        "version": str(version_dir), "new_version": created,
    }
