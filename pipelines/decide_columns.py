"""The filter step on columns: the rules of pipelines/decide.py over numpy arrays, for 10^7 clips.

``vidloom curate --rescore`` decides every clip of the catalog again. Row dicts cost ~2 KB and a
Python call per rule each: minutes and gigabytes at 10^7 clips. Here the catalog hands over the
columns the rules read as Arrow, each rule is one vectorised comparison, and only the clips
whose outcome changed are written back.

:func:`reject_reasons` must say what :func:`pipelines.decide.reject_reason` says for every row:
each registered rule (pipelines/scorers.py ``Rule``) carries both forms, its ``mask`` here and its
``row`` there, and tests/test_dedup_scale.py compares the two on random rows (nulls, NaN and
values on the thresholds included). Per-row Python remains where the rule is not a comparison
and few rows take part: the text crop (rows with text boxes) and the caption checks (rows with
failed checks). The user's ``filters.extra`` predicates come last, evaluated by DuckDB. The
columns are loaded and read by pipelines/catalog_columns.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines import catalog_columns, filters_extra
from pipelines.catalog_columns import KEEP_KEYS, load_columns
from pipelines.config import CaptionConfig, FilterConfig
from pipelines.decide import CROP_COLUMNS, REASONS, crop_columns, decision_rules, rule_settings

# the decision order as decide.py first saw it (the built-in rules); rule_order() is live. Both
# forms of a rule are registered together (pipelines/scorers.py Rule), so they cannot disagree.
RULE_ORDER: tuple[str, ...] = REASONS


def rule_order() -> tuple[str, ...]:
    """The reasons in decision order, the scorers registered since import included."""
    return tuple(r.reason for r in decision_rules())


NUMERIC = (
    "start_s",
    "end_s",
    "width",
    "height",
    "black_frac",
    "luma",
    "luma_high",
    "clipped",
    "artifacts",
    "blur",
    "black_border",
    "frozen",
    "text_area",
    "motion",
    "aesthetic",
)
TEXT = ("score_error", "not_scored", "extract_error", "caption_error", "caption_failed")
CROP_INPUTS = ("text_boxes", "source_width", "source_height", "crop_x", "crop_y", "crop_w", "crop_h")


def numeric_columns() -> tuple[str, ...]:
    """``NUMERIC`` and every other column a registered rule reads (a scorer's own score)."""
    return tuple(dict.fromkeys([*NUMERIC, *(c for r in decision_rules() for c in r.reads)]))


class _Lazy(dict):  # type: ignore[type-arg]
    """The columns as a rule's mask reads them (pipelines/scorers.py ``Rule``): ``x[name]`` float64
    with NaN for null, converted on first use (a rule that never runs costs nothing);
    ``x.present(name)``, ``x.sparse(name)`` (indices and values of the non-empty strings), ``x.n``."""

    def __init__(self, cols: dict[str, Any]) -> None:
        super().__init__()
        self.cols = cols
        self.n = len(cols["clip_id"])

    def present(self, name: str) -> np.ndarray:
        return catalog_columns.present(self.cols, name)

    def sparse(self, name: str) -> tuple[np.ndarray, list[Any]]:
        return catalog_columns.sparse_rows(self.cols, name)

    def __missing__(self, key: str) -> np.ndarray:
        self[key] = catalog_columns.num(self.cols, key)
        return self[key]


def crop_arrays(cols: dict[str, Any], f: FilterConfig) -> dict[str, np.ndarray]:
    """``CROP_COLUMNS`` for every row (float with NaN, crop_reason objects with None: no crop);
    Python only for the rows with text boxes."""
    n = len(cols["clip_id"])
    out = {c: np.full(n, np.nan) for c in CROP_COLUMNS[:4]}  # NaN: no crop
    out["crop_reason"] = np.full(n, None, object)
    idx = catalog_columns.sparse_rows(cols, "text_boxes")[0]
    keys = [k for k in ("width", "height", *CROP_INPUTS) if k in cols]
    values = [_values_at(cols, k, idx) for k in keys]
    for j, i in enumerate(idx.tolist()):
        for c, v in crop_columns({k: vs[j] for k, vs in zip(keys, values, strict=True)}, f).items():
            out[c][i] = np.nan if v is None and c != "crop_reason" else v
    return out


def _values_at(cols: dict[str, Any], name: str, idx: np.ndarray) -> list[Any]:
    """``catalog_columns.item(cols[name], i)`` for each ``i`` of ``idx``: a float64 column in one
    take (NaN: None), any other form row by row."""
    v = cols[name]
    if isinstance(v, catalog_columns.Sparse) and np.array_equal(v.idx, idx):
        return list(v.values)
    if isinstance(v, np.ndarray) and v.dtype == np.float64:
        taken = v[idx]
        return [None if x != x else x for x in taken.tolist()]
    return [catalog_columns.item(v, i) for i in idx.tolist()]


def _crop_arrow(name: str, v: np.ndarray) -> Any:
    import pyarrow as pa

    if name == "crop_reason":
        return pa.array(v, pa.string())
    return pa.array(np.nan_to_num(v).astype(np.int32), pa.int32(), mask=np.isnan(v))


def reject_reasons(
    cols: dict[str, Any],
    f: FilterConfig,
    c: CaptionConfig | None = None,
    upto: int | None = None,
    scores: Any = None,
) -> np.ndarray:
    """int8 [n]: index into ``rule_order()`` of each row's first failing rule, -1 when it passes.

    ``cols``: the rule columns (``numeric_columns()``, ``TEXT``, ``extract_crop_w``, and ``dup_of``
    unless ``upto`` stops before 'duplicate'). ``upto``: evaluate only the rules before this index
    (the dedup candidates are the rows no rule before 'duplicate' rejects). ``scores``: the
    scorers' config sections (their defaults when None). ``score_error`` is not a rule: the caller
    rejects those rows first.
    """
    c = c or CaptionConfig()
    x = _Lazy(cols)
    rules = decision_rules()
    n = x.n
    reason = np.full(n, -1, np.int8)
    for i, rule in enumerate(rules[:upto]):
        open_ = reason < 0
        if not open_.any():
            break
        reason[open_ & np.broadcast_to(rule.mask(x, f, rule_settings(rule, c, scores)), (n,))] = i
    return reason


def reason_names(
    reason: np.ndarray, score_error: np.ndarray, not_scored: np.ndarray | None = None,
    order: tuple[str, ...] | None = None,
) -> np.ndarray:
    """Object array of reject reasons (None = kept); a row with a ``score_error`` is 'score_error'.

    A clip that every rule would keep but that cost-ordered scoring left without an expensive
    score (``not_scored``: an earlier rule rejected it then, a looser threshold keeps it now, as
    after a ``--rescore``) is 'not_scored' until a run scores it: a score never measured must not
    pass its rule (a clip with burned-in text would be kept unread). ``order``: the reasons
    ``reason`` indexes (default: the decision order, then no ``filters.extra`` rule).
    """
    order = rule_order() if order is None else order
    names = np.asarray([*order, None], object)
    out = names[np.where(reason < 0, len(order), reason)]
    if not_scored is not None:
        out[(reason < 0) & not_scored] = "not_scored"
    out[score_error] = "score_error"
    return out


def decide_catalog(
    cat: Any, f: FilterConfig, c: CaptionConfig, split_hash: str, method: str = "auto", scores: Any = None
) -> dict[str, Any]:
    """The filter step over the catalog's columns (pipelines/score_step.py ``decide``).

    Loads the columns the rules and dedup read in compact form (:func:`load_columns`: numbers as
    float64, ids and hashes parsed to integers, mostly-null text as sparse Python lists), decides
    every clip of ``split_hash``, and lets DuckDB write back only the clips whose dup_of, status,
    reason or crop changed (``IS DISTINCT FROM``), in one transaction. The registered rules run in
    decision order (``scores``: the scorers' sections), then ``f.extra`` in DuckDB
    (pipelines/filters_extra.py ``apply_rules``).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipelines import dedup_cache
    from pipelines.dedup import decode_embedding, duplicate_index, keep_rank

    kinds = {
        "clip_id": "arrow",
        "video_id": "key",
        "start_frame": "num",
        "end_frame": "num",
        "bits_per_pixel": "num",
        "content_hash": "content",
        "phash": "phash",
        **{k: "num" for k in numeric_columns()},
        **{k: "sparse" for k in TEXT},
        "text_boxes": "sparse",
        **{k: "num" for k in CROP_INPUTS[3:]},
        "source_width": "num",
        "source_height": "num",
    }
    names = [k for k in kinds if k not in ("source_width", "source_height")]
    cols = load_columns(
        cat.con,
        f"SELECT {', '.join('c.' + k for k in names)}, v.width AS source_width, "
        "v.height AS source_height FROM clips c JOIN videos v USING (video_id) WHERE c.split_hash = ?",
        [split_hash],
        kinds,
    )
    n = len(cols["clip_id"])
    crops = crop_arrays(cols, f)
    cols["extract_crop_w"] = crops["extract_crop_w"]
    order = rule_order()
    cand = np.flatnonzero(reject_reasons(cols, f, c, upto=order.index("duplicate"), scores=scores) < 0)
    target = np.full(n, -1, np.int64)
    cached = None
    if f.dedup and len(cand):
        clip_key = _clip_key(cols["clip_id"])
        sub = {k: (clip_key if k == "clip_id" else cols[k])[cand] for k in KEEP_KEYS}
        rank = cand[keep_rank(sub)]
        words, present = cols["content_hash"]
        h, valid = cols["phash"]
        pair_a, pair_b, cached = dedup_cache.near_pairs(
            cat, split_hash, np.argsort(clip_key), h, valid, f.phash_max_distance, method
        )
        at = np.full(n, -1, np.int64)
        at[rank] = np.arange(len(rank))
        emb = _embeddings(cat, split_hash, cols["clip_id"].take(pa.array(rank)), decode_embedding)
        dup = duplicate_index(
            (words[rank], present[rank]),
            (h[rank], valid[rank]),
            f.phash_max_distance,
            emb,
            f.semantic_dedup_min_cosine,
            method,
            pairs=(at[pair_a], at[pair_b]),
        )
        target[rank] = np.where(dup >= 0, rank[np.maximum(dup, 0)], -1)
    dup_of = cols["clip_id"].take(pa.array(target, mask=target < 0))
    cols["dup_of"] = dup_of
    first = reject_reasons(cols, f, c, scores=scores)
    reason_idx, order = filters_extra.apply_rules(cat.con, split_hash, cols["clip_id"], first, order, f)
    errors, not_scored = (catalog_columns.present(cols, k) for k in ("score_error", "not_scored"))
    names = reason_names(reason_idx, errors, not_scored, order)
    reason = pa.array(names, pa.string())
    status = pc.if_else(pc.is_null(reason), "kept", "rejected")
    new = pa.table(
        {
            "clip_id": cols["clip_id"],
            "dup_of": dup_of,
            "status": status,
            "reject_reason": reason,
            **{k: _crop_arrow(k, v) for k, v in crops.items()},
        }
    )
    kept = int(pc.sum(pc.equal(status, "kept")).as_py() or 0)
    cropped = int(pc.sum(pc.and_(pc.equal(status, "kept"), pc.is_valid(new["crop_reason"]))).as_py() or 0)
    cols_new = [k for k in new.column_names if k != "clip_id"]
    differs = " OR ".join(f"clips.{k} IS DISTINCT FROM u.{k}" for k in cols_new)
    with cat.transaction():
        cat.con.register("_vidloom_decide", new)
        try:
            changed = cat.con.execute(
                "SELECT count(*) FROM clips JOIN _vidloom_decide u USING (clip_id) WHERE clips.status "
                "IS DISTINCT FROM u.status OR clips.reject_reason IS DISTINCT FROM u.reject_reason"
            ).fetchone()[0]
            written = cat.con.execute(
                f"UPDATE clips SET {', '.join(f'{k} = u.{k}' for k in cols_new)} FROM _vidloom_decide u "
                f"WHERE clips.clip_id = u.clip_id AND ({differs})"
            ).fetchone()[0]
        finally:
            cat.con.unregister("_vidloom_decide")
    return {
        "clips": n,
        "kept": kept,
        "rejected": n - kept,
        "changed": int(changed),
        "duplicates": int(n - dup_of.null_count),
        "cropped": cropped,
        "written": int(written),
        "pairs_from_store": cached,
    }


def _clip_key(ids: Any) -> np.ndarray:
    from pipelines.dedup import _sort_key

    return _sort_key(catalog_columns.fixed_width(ids))


def _embeddings(cat: Any, split_hash: str, ids_in_order: Any, decode: Any) -> np.ndarray | None:
    """float32 [n, dim] unit embeddings of ``ids_in_order`` (NaN rows: none), or None when no clip has one."""
    rows = cat.con.execute(
        "SELECT clip_id, embedding FROM clips WHERE split_hash = ? AND embedding IS NOT NULL", [split_hash]
    ).fetchall()
    if not rows:
        return None
    pos = {cid: i for i, cid in enumerate(ids_in_order.to_pylist())}
    found = [(pos[cid], decode(text)) for cid, text in rows if cid in pos]
    if not found:
        return None
    out = np.full((len(pos), len(found[0][1])), np.nan, np.float32)
    for i, v in found:
        out[i] = v
    return out
