"""Balanced exports: ``vidloom export --balance [FILE.yaml]`` (docs/data-engineers.md "Balanced exports").

The export's views and their classes (:data:`EXPORT_CLASSES`, :func:`export_classes`):

==========  ==============================================  =======================================
view        classes (targeted by default in **bold**)       from
==========  ==============================================  =======================================
content     **nature people objects**, animation screen     ``clips.content_class`` if the catalog
            other, unknown                                  has it, else the clip's captions'
                                                            ``content_class`` (most common known)
duration    under_2s, **2-5s 5-15s 15-30s**, over_30s       ``end_s - start_s``; [2,5) [5,15) [15,30]
resolution  sub_480p, **480p 720p 1080p+**                   short side: [480,720) [720,1080) >=1080
fps         under_24, **24 30 60**                           [22,27) [27,40) >=40 (23.976/25 are 24)
language    **zh en other**, unknown                         ``videos.source_meta`` ``language``;
                                                            else a clip captioned in one language
motion      static moderate dynamic, unknown (no target)   ``clips.motion`` (curation/balance.py)
==========  ==============================================  =======================================

Classes without a target share take no part when their view is targeted (animation, screen and
other content, clips under 2 s or over 30 s, ...): give them a ratio to include them. 'unknown'
is a class like the others (no share unless the targets name it), with one exception: a targeted
view in which no clip of the pool has a known class (a catalog without content classes, a source
without language metadata) is skipped, listed in ``skipped_views``, instead of excluding every clip.

Two modes: ``subset`` draws the balanced subset with the cube sampler (curation/balance.py,
:func:`curation.balance.balance`); ``weights`` exports every clip with a positive weight and
records per-sample sampling weights (:func:`curation.balance.balance_weights`) in the manifest's
``balance.weights`` and each sample's json ``sample_weight``; the loader then draws by weight
(training/data/weighted_order.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curation.balance import (
    UNKNOWN,
    BalanceResult,
    _bin,
    balance,
    balance_weights,
    proportions,
    tv_distance,
    view_classes,
)

EXPORT_CLASSES: dict[str, tuple[str, ...]] = {
    "content": ("nature", "people", "objects", "animation", "screen", "other"),
    "duration": ("under_2s", "2-5s", "5-15s", "15-30s", "over_30s"),
    "resolution": ("sub_480p", "480p", "720p", "1080p+"),
    "fps": ("under_24", "24", "30", "60"),
    "language": ("zh", "en", "other"),
    "motion": ("static", "moderate", "dynamic"),
}
EXPORT_VIEWS: tuple[str, ...] = tuple(EXPORT_CLASSES)
DEFAULT_EXPORT_TARGETS: dict[str, dict[str, float]] = {
    "content": {"nature": 4, "people": 3, "objects": 3},
    "duration": {"2-5s": 3, "5-15s": 4, "15-30s": 3},
    "resolution": {"480p": 2, "720p": 5, "1080p+": 3},
    "fps": {"24": 4, "30": 4, "60": 2},
    "language": {"zh": 4, "en": 4, "other": 2},
}
MODES = ("subset", "weights")


@dataclass(slots=True)
class BalanceSpec:
    """What ``--balance`` asks for: targets (view -> class -> ratio), mode, seed and size."""

    targets: dict[str, dict[str, float]] = field(default_factory=lambda: {
        v: dict(t) for v, t in DEFAULT_EXPORT_TARGETS.items()})
    mode: str = "subset"
    seed: int = 0
    n: int | None = None  # subset size; None: the largest reachable


def export_classes(row: Mapping[str, Any]) -> dict[str, str]:
    """The class of a pool row (see :func:`pool_rows`) in every export view."""
    start, end = row.get("start_s"), row.get("end_s")
    width, height = row.get("width"), row.get("height")
    content = row.get("content_class")
    return {
        "content": content if content in EXPORT_CLASSES["content"] else UNKNOWN,
        "duration": _duration(None if start is None or end is None else end - start),
        "resolution": _bin(None if not width or not height else min(width, height), (480, 720, 1080),
                           EXPORT_CLASSES["resolution"]),
        "fps": _bin(row.get("fps"), (22.0, 27.0, 40.0), EXPORT_CLASSES["fps"]),
        "language": row.get("language") or UNKNOWN,
        "motion": view_classes(row)["content"],  # the report's motion bins
    }


def _duration(seconds: float | None) -> str:
    """[2, 5) -> 2-5s, [5, 15) -> 5-15s, [15, 30] -> 15-30s (30 s itself included)."""
    if seconds is not None and seconds == 30.0:
        return "15-30s"
    return _bin(seconds, (2.0, 5.0, 15.0, 30.0), EXPORT_CLASSES["duration"])


def _language(source: str | None, caption_langs: set[str]) -> str | None:
    if source:
        code = source.strip().lower().replace("_", "-").split("-")[0]
        return code if code in ("zh", "en") else "other"
    if len(caption_langs) == 1:
        return next(iter(caption_langs))
    return None


def load_spec(path: str | None, overrides: Sequence[str] = (), mode: str | None = None) -> BalanceSpec:
    """The balance spec: defaults, then the YAML file (optionally under a ``balance:`` key), then
    ``balance.KEY=VALUE`` overrides (``balance.targets.fps.60=1``, ``balance.mode=weights``).

    A view given in the file or an override replaces that view's default ratios; ``VIEW: null``
    (or ``{}``) leaves the view untargeted.

    Raises:
        ValueError: unknown key, view, class or mode, or a ratio that is not a number >= 0.
    """
    raw: dict[str, Any] = {}
    if path:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"balance file {path}: needs a mapping")
        raw = loaded.get("balance", loaded) if isinstance(loaded.get("balance"), dict) else loaded
    spec = BalanceSpec()
    _apply(spec, raw, f"balance file {path}")
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.split(".")
        if not sep or parts[0] != "balance" or len(parts) < 2:
            raise ValueError(f"override {item!r} must look like balance.key=value")
        nested: dict[str, Any] = {}
        node = nested
        for p in parts[1:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
        if parts[1] == "targets" and len(parts) == 4:  # one class: keep the view's other ratios
            view = parts[2]
            nested["targets"][view] = {**spec.targets.get(view, {}), **nested["targets"][view]}
        _apply(spec, nested, f"override {item!r}")
    if mode is not None:
        _apply(spec, {"mode": mode}, "--balance-mode")
    return spec


def _apply(spec: BalanceSpec, raw: Mapping[str, Any], where: str) -> None:
    for key, value in raw.items():
        if key == "targets":
            if not isinstance(value, dict):
                raise ValueError(f"{where}: targets needs a mapping view -> class -> ratio")
            for view, ratios in value.items():
                if view not in EXPORT_CLASSES:
                    raise ValueError(f"{where}: unknown view {view!r}; views are {', '.join(EXPORT_VIEWS)}")
                if not ratios:
                    spec.targets.pop(view, None)
                    continue
                if not isinstance(ratios, dict):
                    raise ValueError(f"{where}: view {view!r} needs a mapping class -> ratio")
                known = (*EXPORT_CLASSES[view], UNKNOWN)
                for c, r in ratios.items():
                    if str(c) not in known:
                        raise ValueError(f"{where}: unknown class {c!r} of view {view!r}; "
                                         f"classes are {', '.join(known)}")
                    if isinstance(r, bool) or not isinstance(r, int | float) or r < 0:
                        raise ValueError(f"{where}: ratio of {view}/{c} must be a number >= 0, got {r!r}")
                spec.targets[view] = {str(c): float(r) for c, r in ratios.items()}
        elif key == "mode":
            if value not in MODES:
                raise ValueError(f"{where}: mode must be one of {', '.join(MODES)}, got {value!r}")
            spec.mode = value
        elif key == "seed":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where}: seed must be an integer, got {value!r}")
            spec.seed = value
        elif key == "n":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{where}: n must be an integer >= 0 or null, got {value!r}")
            spec.n = value
        else:
            raise ValueError(f"{where}: unknown key {key!r}; keys are targets, mode, seed, n")


def _columns(cat: Any, table: str) -> set[str]:
    return {r[0] for r in cat.query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table])[1]}


def pool_rows(cat: Any, clip_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The selected clips with what the views read: geometry, fps, motion, content class, language."""
    clip_cols, cap_cols = _columns(cat, "clips"), _columns(cat, "captions")
    video_cols = _columns(cat, "videos")
    cc = "c.content_class" if "content_class" in clip_cols else "NULL"
    lang = ("json_extract_string(v.source_meta, '$.language')" if "source_meta" in video_cols else "NULL")
    rows = cat.dicts(
        f"SELECT c.clip_id, c.start_s, c.end_s, c.width, c.height, c.fps, c.motion, {cc} AS clip_class, "
        f"{lang} AS source_language FROM clips c LEFT JOIN videos v ON v.video_id = c.video_id "
        "WHERE c.clip_id IN (SELECT unnest(?)) ORDER BY c.clip_id", [list(clip_ids)])
    ccap = "content_class" if "content_class" in cap_cols else "NULL"
    classes: dict[str, Counter[str]] = {}
    langs: dict[str, set[str]] = {}
    for clip_id, lng, klass in cat.query(
            f"SELECT clip_id, lang, {ccap} FROM captions WHERE clip_id IN (SELECT unnest(?)) "
            "ORDER BY clip_id, lang, kind", [list(clip_ids)])[1]:
        langs.setdefault(clip_id, set()).add(lng)
        if klass and klass != UNKNOWN:
            classes.setdefault(clip_id, Counter())[klass] += 1
    for r in rows:
        votes = classes.get(r["clip_id"])
        known = r.pop("clip_class")
        if not known or known == UNKNOWN:  # the captions' most common class, ties by name
            known = min(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0] if votes else None
        r["content_class"] = known
        r["language"] = _language(r.pop("source_language"), langs.get(r["clip_id"], set()))
    return rows


def plan(rows: Sequence[Mapping[str, Any]], spec: BalanceSpec) -> tuple[list[str], dict[str, Any]]:
    """``(clip ids to export, the manifest's ``balance`` record)`` for a pool and a spec."""
    pool = proportions(rows, label=export_classes, classes=_with_unknown())
    skipped = sorted(v for v in spec.targets
                     if all(c == UNKNOWN for c, s in pool[v].items() if s > 0))
    targets = {v: t for v, t in spec.targets.items() if v not in skipped}
    weights: dict[str, float] | None = None
    result: BalanceResult
    if spec.mode == "weights":
        weights, result = balance_weights(rows, targets, export_classes, _with_unknown())
    else:
        result = balance(rows, targets, spec.n, spec.seed, export_classes, _with_unknown())
    views: dict[str, Any] = {}
    for v in EXPORT_VIEWS:
        target = result.targets.get(v)
        views[v] = {
            "target": target,
            "pool": {c: s for c, s in pool[v].items() if s > 0 or (target and c in target)},
            "pool_clips": {c: k for c, k in result.available[v].items() if k},
            "achieved": {c: s for c, s in result.achieved[v].items() if s > 0 or (target and c in target)},
            "tv_pool": None if target is None else tv_distance(pool[v], target),
            "tv": None if target is None else result.distance[v],
        }
    record: dict[str, Any] = {
        "mode": spec.mode, "seed": spec.seed, "n": spec.n, "ratios": spec.targets,
        "skipped_views": skipped, "unreachable": [list(u) for u in result.unreachable],
        "pool": len(rows), "selected": len(result.selected), "views": views,
    }
    if weights is not None:
        record["weights"] = {c: w for c, w in weights.items() if w > 0}
    return result.selected, record


def _with_unknown() -> dict[str, tuple[str, ...]]:
    return {v: (*cs, UNKNOWN) for v, cs in EXPORT_CLASSES.items()}


def record_counts(cat: Any, record: Mapping[str, Any], dataset: str, export_root: str) -> None:
    """The taxonomy counts behind an export's balance, queryable as the ``balance_counts`` table
    (one row per view and class; an export directory's rows replaced by its latest export)."""
    rows = []
    for view, info in record["views"].items():
        target = info["target"] or {}
        for c in dict.fromkeys([*info["pool"], *target, *info["achieved"]]):
            rows.append((export_root, dataset, record["mode"], view, c,
                         target.get(c) if info["target"] else None,
                         int(info["pool_clips"].get(c, 0)), info["pool"].get(c, 0.0),
                         info["achieved"].get(c, 0.0), info["tv"]))
    with cat.transaction():
        cat.con.execute("DELETE FROM balance_counts WHERE export_root = ?", [export_root])
        if rows:
            cat.con.executemany("INSERT INTO balance_counts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def balanced_export(args: Any, cfg: Any, ids: list[str], overrides: Sequence[str]) -> int:
    """``vidloom export --balance``: plan the balance over the selected clips, export, record."""
    import sys

    from curation.db import Catalog
    from pipelines.export_step import export
    from pipelines.remote import is_url
    from pipelines.runner import make_runner

    try:
        spec = load_spec(args.balance or None, overrides, args.balance_mode)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"vidloom export: bad --balance: {e}", file=sys.stderr)
        return 2
    if args.multi_shot or is_url(args.out):
        print("vidloom export: --balance writes single-shot samples to a local directory", file=sys.stderr)
        return 2
    root, out = Path(args.db).resolve().parent, Path(args.out).resolve()
    with Catalog(args.db) as cat:
        chosen, record = plan(pool_rows(cat, ids), spec)
        weights = record.get("weights")
        per_sample = {c: {"sample_weight": w} for c, w in weights.items()} if weights else None
        counts = export(root, cfg, make_runner(cfg.runtime), cat, chosen, out, args.where,
                        meta={"balance": record}, sample_meta=per_sample)
        record_counts(cat, record, counts["dataset"], str(out))
    print(f"vidloom export: {counts['selected']} of {len(ids)} selected clips balanced ({spec.mode}), "
          f"{counts['samples']} samples in {counts['shards']} shards under {args.out} "
          f"(dataset {counts['dataset'][:16]})")
    for view, info in record["views"].items():
        if info["tv"] is not None:
            print(f"  {view:<10} TV distance {info['tv_pool']:.3f} (pool) -> {info['tv']:.3f}")
    for view in record["skipped_views"]:
        print(f"  {view:<10} skipped: no clip of the selection has a known class")
    for view, c in record["unreachable"]:
        print(f"  {view}/{c}: target class without clips (unreachable)")
    if counts["unavailable"]:
        print(f"  {counts['unavailable']} chosen clips could not be cut (see clips.extract_error)")
    return 0
