"""The score and filter steps: measure every clip once, then decide from the stored scores.

score   runs the registered scorers (pipelines/scorers.py; built in: quality, compression,
        motion, duplicate hashes, then overlay text and aesthetic) on every clip of the current
        split, kept or not, from the decode pass's frames;
        cost-ordered by default: the expensive two skip a clip a cheaper score already rejects
        (``not_scored`` says so; ``scores.score_all`` / ``--score-all`` scores everything). Each
        scorer's results are keyed by (clip, scorer, version, params hash), so changing one
        scorer's parameters re-runs that scorer alone, and only on the clips it has not done.
filter  dedups across the whole catalog and decides kept/rejected with the first failing
        rule (pipelines/decide.py: the registered rules in order, then ``filters.extra``). It
        reads columns only: ``--rescore`` is this step alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from curation import schema
from curation.db import Catalog
from pipelines import scorers
from pipelines.config import CurateConfig
from pipelines.journal import StepJournal, done_rows, run_step
from pipelines.runner import Runner
from pipelines.stage import Stage
from pipelines.tasks import ClipTask

log = logging.getLogger("vidloom.score")


def build_scorers(cfg: CurateConfig) -> tuple[list[Stage[Any, Any]], list[str]]:
    """The registered scorers (pipelines/scorers.py) in cost order, each built from its
    ``scores.<key>`` section, and the reasons any were skipped (logged, recorded in the run)."""
    built: list[Stage[Any, Any]] = []  # cheap first: cost-ordered scoring gates what follows
    skipped = []
    for spec in scorers.specs():
        section = spec.section(cfg.scores)
        reason = spec.skip_reason(section)
        if reason is None:
            built.append(spec.make(section))
        elif spec.required is not None and spec.required(section):
            raise RuntimeError(
                f"{spec.name} scorer required (scores.{spec.key}.required) but unavailable: {reason}")
        else:
            skipped.append(f"{spec.name}: {reason}")
    for s in skipped:
        log.warning("scorer skipped: %s", s)
    return built, skipped


def with_gates(stages: list[Stage[Any, Any]], cfg: CurateConfig) -> list[Stage[Any, Any]]:
    """The scorers with a ScoreGate in front of each expensive one (none with ``scores.score_all``)."""
    from pipelines.stages.score_gate import ScoreGate

    if cfg.scores.score_all:
        return list(stages)
    gated = scorers.GATED
    # the sections of scorers with a config class of their own (picklable for Ray, unlike a
    # ScoreConfig with sections added); the built-in rules read the filters only
    own = {sp.key: sp.section(cfg.scores) for sp in scorers.specs() if sp.config is not None and sp.key}
    expensive = [s.name for s in stages if s.name in gated]
    out: list[Stage[Any, Any]] = []
    for s in stages:
        if s.name in gated:
            rest = tuple(expensive[expensive.index(s.name):])
            out.append(ScoreGate(before=s.name, skip=rest, filters=cfg.filters, scores=own))
        out.append(s)
    return out


def _key(stage: Stage[Any, Any]) -> tuple[str, int, str]:
    return (f"score:{stage.name}", stage.version, stage.params_hash())


PAGE = 4096  # clips read from the catalog at a time by iter_clip_tasks


def iter_clip_tasks(
    cat: Catalog,
    frames_root: Any,
    split_hash: str,
    where: str = "TRUE",
    params: list[Any] | None = None,
    source_size: bool = False,
    page: int = PAGE,
) -> Iterator[ClipTask]:
    """ClipTasks for the catalog's clips of ``split_hash`` (sources and decoded frames attached),
    in clip_id order, read ``page`` clips at a time: the driver holds one page of tasks, not one
    per clip of the catalog (the runner takes them as they come).

    Each page is a query of its own (``clip_id`` after the last one read), so a step may commit
    between pages: a later page reads clips the step has not written yet.

    source_size: give each clip its source's displayed width and height (the scorers measure
        the source's frames; a clip cut with a crop has the crop's size in its row).
    """
    last = ""
    while True:
        rows = cat.dicts(
            f"SELECT c.clip_id, v.path AS src, v.width, v.height FROM clips c JOIN videos v USING (video_id) "
            f"WHERE c.split_hash = ? AND ({where}) AND c.clip_id > ? ORDER BY c.clip_id LIMIT {int(page)}",
            [split_hash, *(params or []), last],
        )
        if not rows:
            return
        src = {r["clip_id"]: r for r in rows}
        clips = cat.clips("split_hash = ? AND clip_id IN (SELECT unnest(?))", [split_hash, list(src)])
        for c in sorted(clips, key=lambda c: c.clip_id):
            if source_size:
                c.width, c.height = src[c.clip_id]["width"] or c.width, src[c.clip_id]["height"] or c.height
            yield ClipTask(clip=c, src_path=src[c.clip_id]["src"], frames_dir=str(frames_root / c.video_id))
        last = rows[-1]["clip_id"]


def clip_tasks_from_catalog(
    cat: Catalog,
    frames_root: Any,
    split_hash: str,
    where: str = "TRUE",
    params: list[Any] | None = None,
    source_size: bool = False,
) -> list[ClipTask]:
    """Every task of ``iter_clip_tasks`` as a list (for callers that need them all at once)."""
    return list(iter_clip_tasks(cat, frames_root, split_hash, where, params, source_size))


def score(
    tasks: Iterable[ClipTask], work_dir: Any, cfg: CurateConfig, runner: Runner, cat: Catalog
) -> dict[str, Any]:
    """Run the scorers each clip still needs; write their columns and per-scorer done marks.

    Cost-ordered (unless ``scores.score_all``): the cheap scorers run first, and a gate in front
    of each expensive one (OCR, aesthetic) skips a clip that an earlier filter rule already
    rejects (pipelines/stages/score_gate.py). A skipped scorer writes nothing and is not marked
    done; ``not_scored`` records what was skipped and why (None when nothing was). The step's key
    holds the filter settings then, so a changed threshold re-runs it and the gates re-decide.
    """
    scorers, skipped = build_scorers(cfg)
    stages = with_gates(scorers, cfg)
    keys = {s.name: _key(s) for s in scorers}
    columns = {s.name: s.columns for s in scorers}  # type: ignore[attr-defined]
    done = {name: cat.done_items(*key) for name, key in keys.items()}

    def todo() -> Iterator[ClipTask]:  # lazily: the tasks may be a stream (iter_clip_tasks)
        for t in tasks:
            t.todo = tuple(n for n in keys if t.clip.clip_id not in done[n])
            t.clip.not_scored = None  # decided afresh by this run's gates
            yield t

    gated = [0]

    def to_tables(t: ClipTask) -> dict[str, list[dict[str, Any]]]:
        row: dict[str, Any] = {"clip_id": t.clip.clip_id, "score_error": t.error}
        ran = t.todo or ()
        if t.error is None:
            scores = schema.clip_row(t.clip)
            for n in ran:
                row.update({c: scores[c] for c in columns[n]})
            row["not_scored"] = t.clip.not_scored
            gated[0] += t.clip.not_scored is not None
        tables: dict[str, list[dict[str, Any]]] = {"clips": [row]}
        if t.error is None:
            tables["stage_done"] = [r for n in ran for r in done_rows(keys[n], [t.clip.clip_id])]
        return tables

    ident: dict[str, Any] = {"scorers": sorted(keys.values())}
    gates = [g.params() for g in stages if g.name == "score_gate"]
    if gates:
        ident["gates"] = gates
    combined = ("score", 1, schema.params_hash(ident))
    counts: dict[str, Any] = run_step(
        cat,
        StepJournal(work_dir, "score"),
        runner,
        stages,
        todo(),
        lambda t: t.clip.clip_id,
        to_tables,
        combined,
        batch_parts=16,
        retry_errors=True,
        progress=not cfg.runtime.quiet,
    )
    counts["scorers"] = sorted(keys)
    counts["skipped_scorers"] = skipped
    counts["cost_ordered"] = bool(gates)
    counts["not_scored"] = gated[0]  # clips the gates kept from an expensive scorer
    return counts


def decide(cat: Catalog, cfg: CurateConfig, split_hash: str) -> dict[str, Any]:
    """Dedup and keep/reject every clip of ``split_hash`` from stored columns (no decode).

    Columnar (pipelines/decide_columns.py): the rules of pipelines/decide.py as array comparisons
    and dedup without all-pairs, so a rescore of 10^7 clips takes about a minute, not hours.
    """
    from pipelines.decide_columns import decide_catalog

    return decide_catalog(cat, cfg.filters, cfg.caption, split_hash, scores=cfg.scores)
