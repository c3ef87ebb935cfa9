"""The generated catalog reference, ``docs/catalog.md``: every table, view and column of
``<out>/catalog.duckdb`` with its DuckDB type and meaning.

``python -m curation.catalog_reference --out docs/catalog.md`` writes it;
``tests/test_catalog_reference.py`` fails when the file is not what this module renders, or a
column has no meaning. Tables and types come from the catalog's own DDL (an in-memory catalog
is created and described), so a column added to ``curation/db.py`` or by a scorer shows up with
no edit here; its meaning is :data:`MEANINGS` (or the scorer's ``ScoreColumn.meaning``).
"""

from __future__ import annotations

import sys

import duckdb

from curation import db, generated_docs, score_columns

TABLE_MEANINGS = {
    "videos": "one row per distinct input content (identity: the file's sha256), ok or error",
    "files": "one row per input path; several paths with identical bytes share one video",
    "shots": "raw shot boundaries of each ok video, before clip trimming; a shot starts at start_frame",
    "clips": "every clip span, kept or rejected (with its reason), with every score as a column",
    "captions": "one row per clip, language and kind: the text, its provenance and checks, and the "
                "structured description fields",
    "caption_checks": "per clip and field: the captioned value against the measured one",
    "shards": "the shards of every export (local or bucket), by dataset version",
    "balance_counts": "the taxonomy counts behind a balanced export: one row per view and class",
    "dup_clusters": "view: the duplicate groups over clips.dup_of",
    "runs": "one row per curation run: its resolved config, git sha and counts",
    "stage_done": "which (item, stage, version, params) are finished: what a rerun skips",
}

_ERROR = "readable reason when status is 'error'"
MEANINGS: dict[str, dict[str, str]] = {
    "videos": {
        "video_id": "shortened sha256 of the file's bytes (the identity; the path is an attribute)",
        "path": "the first path (or URL) these bytes were found at", "sha256": "full sha256 of the bytes",
        "status": "'ok' or 'error'", "error": _ERROR, "duration_s": "duration, seconds",
        "fps": "average frame rate", "n_frames": "frames (exact after the decode pass)",
        "width": "displayed width, px (after rotation)", "height": "displayed height, px (after rotation)",
        "codec": "video codec name", "rotation": "display rotation, degrees counter-clockwise (0/90/180/270)",
        "has_audio": "whether an audio stream exists", "vfr": "variable frame rate",
        "size_bytes": "file size", "source_meta": "a manifest row's metadata columns (JSON)",
        "ingested_at": "when the row was written",
    },
    "files": {
        "path": "the input path or URL", "video_id": "the content it holds (videos.video_id)",
        "size_bytes": "file size", "status": "'ok', 'duplicate' (same bytes as another path) or 'error'",
        "error": _ERROR,
    },
    "shots": {
        "video_id": "the video", "shot_index": "0-based shot number in the video",
        "start_frame": "first frame of the shot", "end_frame": "frame after its last (half-open)",
        "start_s": "start, seconds", "end_s": "end, seconds", "detector": "the detector that found it",
        "transition": "what opened the shot: 'cut', 'dissolve', 'fade', ... (NULL for the first shot)",
        "transition_start": "first frame of that transition", "transition_end": "frame after its last",
        "transition_score": "the detector's confidence in it",
    },
    "clips": {
        "clip_id": "hash of (video_id, start_frame, end_frame, split_hash)", "video_id": "the video",
        "shot_index": "the shot it was cut from", "start_frame": "first source frame",
        "end_frame": "source frame after its last (half-open)", "start_s": "start in the source, seconds",
        "end_s": "end in the source, seconds", "width": "width, px (the crop's when cropped)",
        "height": "height, px (the crop's when cropped)", "fps": "frame rate",
        "path": "the extracted clip file, relative to the output root (kept clips)",
        "status": "'kept' or 'rejected'", "reject_reason": "the first failing rule (rejected clips)",
        "codec": "codec of the extracted file", "extract_mode": "'copy' (stream copy) or 'reencode'",
        "n_frames": "frames in the extracted file", "bytes": "size of the extracted file",
        "split_hash": "hash of the decode/split/clip settings that decided the span",
        "score_error": "a scorer failed on this clip (retried by the next run)",
        "not_scored": "scorers skipped by cost-ordered scoring, and why",
        "extract_error": "why the clip could not be cut (retried by the next run)",
        "caption_error": "why captioning failed after its retries (retried by the next run)",
        "caption_failed": "caption checks that failed (comma list)",
        "extract_crop_x": "overlay-text crop: left, source px",
        "extract_crop_y": "overlay-text crop: top, source px",
        "extract_crop_w": "overlay-text crop: width, px", "extract_crop_h": "overlay-text crop: height, px",
        "crop_reason": "why the crop was made (text_bottom_band, text_corner_top_right, ...)",
    },
    "captions": {
        "clip_id": "the clip", "lang": "'en' or 'zh'", "text": "the caption",
        "kind": "'dense' or 'short' (motion only, for image-to-video)", "model": "the model that wrote it",
        "prompt_sha": "sha256 of the prompt sent", "backend": "'signals', 'openai' or 'vllm'",
        "tokens": "completion tokens", "finish_reason": "the endpoint's finish reason",
        "checks": "every check and its result (JSON): language, length, zh/en agreement, fields",
        "revision": "the served weights' revision (caption.model_revision)",
        "params": "request parameters (JSON)",
        "prompt_tokens": "prompt tokens", "created_at": "when the row was written",
        "fields_version": "the structured description's schema version (clip-v1)",
        "content_class": "content class (people, nature, objects, ...)",
        "camera_movement": "captioned camera movement", "camera_speed": "captioned camera speed",
        "shot_size": "shot size (close-up, medium, wide, ...)", "camera_angle": "camera angle",
        "lighting": "lighting", "light_source": "light source", "style": "visual style", "scene": "scene",
        "shot_count": "shots the captioner saw in the clip",
        "subjects": "subjects and their appearance (JSON)",
        "actions": "actions (JSON)", "text_overlays": "overlay text the captioner read (JSON)",
        "fields": "the whole structured description (JSON)",
    },
    "caption_checks": {
        "clip_id": "the clip", "field": "the checked field (camera_movement, text_overlays)",
        "captioned": "what the caption says", "measured": "what was measured (optical flow, OCR)",
        "agree": "whether they agree", "detail": "how they were compared", "backend": "the caption's backend",
    },
    "shards": {
        "shard": "shard key (its path or URL)", "path": "the shard file or URL", "n_samples": "samples in it",
        "bytes": "its size", "sha256": "sha256 of its bytes",
        "bucket": "resolution/aspect/duration bucket (e.g. 480p/16x9/2-5s)",
        "dataset": "the dataset version's hash", "export_root": "the export directory or URL",
        "selection": "the --where predicate that selected the clips",
    },
    "balance_counts": {
        "export_root": "the export directory", "dataset": "the dataset version's hash",
        "mode": "'subset' or 'weights'", "view_name": "the balanced view (content, duration, ...)",
        "class_name": "the class within the view", "target": "its target share",
        "pool_clips": "clips of the class in the selection",
        "pool_share": "the class's share of the selection",
        "achieved_share": "its share of the export", "tv": "total-variation distance of the view",
    },
    "dup_clusters": {
        "cluster": "the kept clip of the group (its clip_id)", "members": "clips in the group",
        "kept": "members kept (1 unless filters.dedup is off)", "clip_ids": "the members, sorted",
    },
    "runs": {
        "run_id": "the run", "started_at": "start time", "finished_at": "end time",
        "config_yaml": "the resolved config", "git_sha": "vidloom's git sha", "counts": "step counts (JSON)",
        "flow_run_id": "the Prefect flow run, when run as a flow",
    },
    "stage_done": {
        "item_id": "the video, file or clip", "stage": "the stage", "version": "the stage's version",
        "params_hash": "hash of its parameters", "finished_at": "when it finished",
    },
}

HEADER = """# Catalog reference

Generated by `python -m curation.catalog_reference --out docs/catalog.md` from the catalog's DDL
(`curation/db.py`) and the scorers' columns (`curation/score_columns.py`);
`tests/test_catalog_reference.py` checks that it is current. One DuckDB file per output root,
`<out>/catalog.duckdb`; query it read-only with `vidloom query DB "SQL"` (sandboxed), even while a
run writes it. A score that was not measured is NULL and never rejects.
"""


def describe() -> dict[str, list[tuple[str, str]]]:
    """``{table or view: [(column, type), ...]}`` of a fresh catalog, in DDL order."""
    con = duckdb.connect(":memory:")
    con.execute(db.ddl())
    names = [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables ORDER BY table_name").fetchall()]
    order = [n for n in TABLE_MEANINGS if n in names] + sorted(set(names) - set(TABLE_MEANINGS))
    return {n: [(c, t) for c, t, *_ in con.execute(f'DESCRIBE "{n}"').fetchall()] for n in order}


def meaning(table: str, column: str) -> str:
    if table == "clips" and score_columns.get(column) is not None:
        col = score_columns.get(column)
        return f"{col.meaning} (scorer {col.scorer})" if col.scorer else col.meaning
    return MEANINGS.get(table, {}).get(column, "")


def render() -> str:
    parts = [HEADER]
    for table, cols in describe().items():
        parts.append(f"\n## `{table}`\n\n{TABLE_MEANINGS.get(table, '')}\n\n| column | type | meaning |\n"
                     "|---|---|---|\n")
        parts += [f"| `{c}` | `{t}` | {meaning(table, c).replace('|', '/')} |\n" for c, t in cols]
    parts.append("\n## Outside the catalog\n\nThe evaluation loop keeps its own DuckDB files: "
                 "`annotation_tasks` and `preferences` (`evaluation/preferences.py`, the labels file of "
                 "`vidloom annotate`), and `eval_runs`, `eval_videos`, `eval_scores`, `eval_winrates` "
                 "(`evaluation/eval_db.py`, `<eval out>/eval.duckdb`).\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    return generated_docs.main(render, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
