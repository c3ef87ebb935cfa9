"""The extract and export steps: cut the chosen clips, then write them as WebDataset shards.

Only clips that are wanted are cut: ``extract`` cuts the kept clips after the filter step
(rejected clips keep their rows and scores but cost no encode), and ``export`` of any SQL
selection first cuts the selected clips that have no file yet (e.g. clips a ``--rescore``
has just kept). A selection is checked to be one boolean expression over ``clips`` and evaluated
in the SQL sandbox (curation/sandbox.py), so a predicate can neither change the catalog nor touch
a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curation import schema
from curation.db import Catalog
from pipelines.clip_cut import clip_file_name
from pipelines.config import CurateConfig
from pipelines.journal import StepJournal, run_step
from pipelines.runner import Runner
from pipelines.score_step import clip_tasks_from_catalog
from pipelines.stages.extract import ClipExtract
from pipelines.tasks import ClipTask
from pipelines.version_writer import write_version

EXTRACT_COLUMNS = (
    "clip_id",
    "path",
    "codec",
    "extract_mode",
    "n_frames",
    "bytes",
    "width",
    "height",
    "extract_error",
)


def select_clip_ids(db_path: Path, where: str) -> list[str]:
    """The clip ids matching the SQL predicate ``where`` over ``clips``, sorted (sandboxed:
    one boolean expression, read-only, no file access; curation/sandbox.py)."""
    from curation.sandbox import select_clip_ids as select

    return select(db_path, where)


def extract(
    tasks: list[ClipTask], root: Path, cfg: CurateConfig, runner: Runner, cat: Catalog
) -> dict[str, int]:
    """Cut each task's clip to ``<root>/clips/<video_id>/<clip_id>.mp4`` (resumable; errors recorded)."""
    stage = ClipExtract.from_config(cfg.extract, out_dir=str(root / "clips"))
    for stale in sorted((root / "clips").glob("*/.*.part")):  # a killed run's half-written cuts
        stale.unlink(missing_ok=True)
    for t in tasks:  # the stage skips rejected clips; here every task is wanted
        t.clip.status = "kept"

    def to_tables(t: ClipTask) -> dict[str, list[dict[str, Any]]]:
        row = schema.clip_row(t.clip)
        row["extract_error"] = t.error[:500] if t.error else None
        return {"clips": [{c: row[c] for c in EXTRACT_COLUMNS}]}

    return run_step(
        cat,
        StepJournal(root / ".work", "extract"),
        runner,
        [stage],
        tasks,
        lambda t: clip_file_name(t.clip).removesuffix(".mp4"),  # a changed crop is a new cut
        to_tables,
        ("extract", stage.version, stage.params_hash()),
        batch_parts=8,
        progress=not cfg.runtime.quiet,
    )


def missing_file(root: Path, clip: schema.Clip) -> bool:
    """No file, or one cut with another crop than the clip's current one (a ``--rescore``)."""
    if clip.path is None or Path(clip.path).name != clip_file_name(clip):
        return True
    return not (root / clip.path).is_file()


def export(
    root: Path,
    cfg: CurateConfig,
    runner: Runner,
    cat: Catalog,
    clip_ids: list[str],
    shards_dir: Path,
    selection: str,
    meta: dict[str, Any] | None = None,
    sample_meta: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write the given clips as bucketed shards under ``shards_dir`` (deterministic, resumable).

    ``meta`` adds manifest fields (a balanced export's ``balance`` record) and ``sample_meta``
    clip_id -> fields added to that sample's json (its ``sample_weight``).

    Clips without a file are cut first. Each export is a new immutable version
    ``shards_dir/<dataset_hash>/`` (its own manifest) and ``shards_dir/latest`` is switched to
    it atomically; an identical selection only points ``latest`` at the existing version
    (pipelines/dataset_versions.py). The ``shards`` table then describes the version ``latest``
    points at: its shards, paths inside the version directory and ``dataset`` = the version's hash
    (replacing the rows of an earlier export to the same directory).
    """
    from pipelines.shard_samples import bucket_for, sample_for_clip

    ids = sorted(set(clip_ids))
    clips = cat.clips("clip_id IN (SELECT unnest(?))", [ids]) if ids else []
    todo = [c.clip_id for c in clips if missing_file(root, c) and c.extract_error is None]
    extracted = None
    if todo:
        tasks = []
        for split_hash in sorted({c.split_hash for c in clips if c.clip_id in todo}):
            tasks += clip_tasks_from_catalog(
                cat, root / ".work" / "frames", split_hash, "c.clip_id IN (SELECT unnest(?))", [todo]
            )
        extracted = extract(tasks, root, cfg, runner, cat)
        clips = cat.clips("clip_id IN (SELECT unnest(?))", [ids])
    usable = [c for c in clips if not missing_file(root, c)]

    def samples() -> Any:
        for c in sorted(usable, key=lambda c: (bucket_for(c.width, c.height, c.duration_s), c.clip_id)):
            sample = sample_for_clip(c, root, cat.captions(c.clip_id), cfg.shards.with_first_frame)
            sample.meta.update((sample_meta or {}).get(c.clip_id, {}))
            yield bucket_for(c.width, c.height, c.duration_s), sample

    infos, dataset, version_dir, created = publish_version(
        cat, samples(), shards_dir, root, cfg, selection, meta)
    return {
        "shards": len(infos),
        "samples": sum(i.n_samples for i in infos),
        "selected": len(ids),
        "unavailable": len(ids) - len(usable),
        "dataset": dataset,
        "version": str(version_dir),
        "new_version": created,
        "extracted": extracted,
    }


def publish_version(
    cat: Any, samples: Any, shards_dir: Path, root: Path, cfg: Any, selection: str,
    meta: dict[str, Any] | None = None,
) -> tuple[list[Any], str, Path, bool]:
    """Write ``samples`` as a dataset version under ``shards_dir`` and record its shards in the
    catalog (paths relative to ``root`` when inside it); (infos, dataset, version dir, created)."""
    shards_dir = shards_dir.resolve()
    infos, dataset, version_dir, created = write_version(
        samples, shards_dir, cfg.shards.target_bytes, {"selection": selection, **(meta or {})})
    for info in infos:
        p = Path(info.path)
        info.shard = p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)
        info.dataset, info.export_root, info.selection = dataset, str(shards_dir), selection
    cat.replace_shards(infos, str(shards_dir))
    return infos, dataset, version_dir, created
