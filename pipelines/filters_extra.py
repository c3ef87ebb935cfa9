"""``filters.extra``: user reject rules written as SQL predicates over the clips table's stored columns.

    filters:
      extra:
        - {name: too_dark, where: "luma < 30 AND luma_high < 60", reason: too dark}
        - {name: tiny, where: "width * height < 320 * 240", reason: small picture}

or ``--set 'filters.extra=[{name: tiny, where: "width < 320", reason: small picture}]'``.

The filter step applies them after the built-in rules, in order, to the clips every built-in
rule keeps: the first predicate that is true rejects the clip and its ``reason`` becomes the
clip's ``reject_reason`` (``reason`` defaults to ``name``). A NULL (unmeasured) predicate does
not reject. ``vidloom curate --rescore`` re-applies them (the filter step is all it runs).

User SQL is sandboxed as ``vidloom query`` and ``--where`` are (curation/sandbox.py):
:func:`curation.sandbox.check_where` refuses anything but one boolean expression over
``clips``; on top of it a predicate may read only stored columns (not the filter step's own
outputs, ``status``, ``reject_reason``, ``dup_of``, the extraction crop, nor the extraction's:
:data:`DECISION_COLUMNS`), holds no subquery, and
calls only the scalar functions in :data:`FUNCTIONS` (no ``read_csv``, ``read_text``, ``getenv``
...; ``COPY`` and ``ATTACH`` are statements, which the shape check already refuses). The checks
run at config load (a bad rule fails before any work, naming the valid columns) and again
before evaluation. Evaluation runs on an in-memory DuckDB connection that holds only the columns
the rules read, with external access off and its configuration locked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import duckdb
import numpy as np

from curation.db import TABLE_COLUMNS
from curation.sandbox import UnsafeSQL, check_where
from pipelines.config_check import ConfigError

KEYS = ("name", "where", "reason")
# what the filter step itself writes, and the extraction after it: a rule reading them would read
# the previous run's decision or cut
DECISION_COLUMNS = ("status", "reject_reason", "dup_of", "extract_crop_x", "extract_crop_y", "extract_crop_w",
                    "extract_crop_h", "crop_reason", "path", "codec", "extract_mode", "bytes")
RESERVED_REASONS = ("score_error", "not_scored")
# expression nodes a predicate may hold (json_serialize_sql classes); SUBQUERY, WINDOW, STAR,
# PARAMETER, LAMBDA ... are refused
NODES = ("CONJUNCTION", "COMPARISON", "COLUMN_REF", "CONSTANT", "FUNCTION", "OPERATOR", "BETWEEN", "CASE",
         "CAST", "TYPE")
# scalar functions and operators a predicate may call: pure, no file, network or environment access
FUNCTIONS = frozenset((
    "+", "-", "*", "/", "//", "%", "^", "**", "~~", "!~~", "~~*", "!~~*", "~~~", "||",
    "abs", "ceil", "ceiling", "floor", "round", "trunc", "sqrt", "cbrt", "pow", "power", "exp", "ln", "log",
    "log2", "log10", "sign", "greatest", "least", "isnan", "isinf", "isfinite", "coalesce", "ifnull",
    "nullif", "length", "strlen", "lower", "upper", "lcase", "ucase", "trim", "ltrim", "rtrim",
    "substring", "substr", "contains", "starts_with", "ends_with", "prefix", "suffix", "instr",
    "strpos", "position", "replace", "concat", "regexp_matches", "regexp_full_match", "like_escape",
    "json_extract", "json_extract_string", "json_array_length", "json_valid",
))
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def columns() -> tuple[str, ...]:
    """The columns a predicate may name: the clips table's, scores included, minus the decision's."""
    return tuple(c for c in TABLE_COLUMNS["clips"] if c not in DECISION_COLUMNS)


def check_rules(rules: Iterable[Any], known: Sequence[str] | None = None) -> list[dict[str, str]]:
    """Each rule normalised to {name, where, reason}; raises :class:`ConfigError` naming the rule,
    what is wrong and what is allowed (the valid columns for an unknown one)."""
    out: list[dict[str, str]] = []
    valid = tuple(known or columns())
    for i, rule in enumerate(rules):
        at = f"filters.extra[{i}]"
        if not isinstance(rule, dict):
            raise ConfigError(f"{at} must be a mapping with keys {', '.join(KEYS)}; got {rule!r}")
        bad = sorted(set(rule) - set(KEYS))
        if bad or "name" not in rule or "where" not in rule:
            raise ConfigError(f"{at}: keys are name, where (required) and reason; got {sorted(rule)}")
        name, where = str(rule["name"]), str(rule["where"])
        reason = str(rule.get("reason") or name)
        if not _NAME.match(name):
            raise ConfigError(f"{at}: name {name!r} must be letters, digits and '_'")
        if name in {r["name"] for r in out}:
            raise ConfigError(f"{at}: name {name!r} is used twice")
        if reason in RESERVED_REASONS:
            raise ConfigError(f"{at} ({name}): reason {reason!r} is vidloom's own; choose another")
        try:
            referenced = check_predicate(where, valid)
        except UnsafeSQL as e:
            raise ConfigError(f"{at} ({name}): {e}") from None
        out.append({"name": name, "where": where, "reason": reason, "columns": ",".join(referenced)})
    return out


def check_predicate(where: str, valid: Sequence[str]) -> list[str]:
    """The stored columns ``where`` reads; raises :class:`UnsafeSQL` when it is not one safe
    boolean expression over them."""
    check_where(where)  # one expression over clips: no ';', UNION, ORDER BY, COPY, ATTACH ...
    with duckdb.connect(":memory:") as parser:
        probe = f"SELECT 1 FROM clips WHERE {where}"
        tree = json.loads(parser.execute("SELECT json_serialize_sql(?)", [probe]).fetchone()[0])
    found: list[str] = []
    _walk(tree["statements"][0]["node"]["where_clause"], valid, found)
    return sorted(set(found))


def _walk(node: Any, valid: Sequence[str], found: list[str]) -> None:
    if isinstance(node, list):
        for v in node:
            _walk(v, valid, found)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("class")
    if kind is not None:
        if kind == "SUBQUERY":
            raise UnsafeSQL("a predicate may not hold a subquery (SELECT, EXISTS, IN (SELECT ...))")
        if kind not in NODES:
            raise UnsafeSQL(f"a predicate may not hold a {kind} expression")
        if kind == "COLUMN_REF":
            parts = node.get("column_names") or []
            name = parts[-1] if parts else ""
            if len(parts) > 2 or (len(parts) == 2 and parts[0] != "clips") or name not in valid:
                raise UnsafeSQL(f"unknown column {'.'.join(parts)!r}; the columns are: {', '.join(valid)}")
            found.append(name)
        if kind == "FUNCTION":
            fn = str(node.get("function_name", "")).lower()
            if fn not in FUNCTIONS or node.get("schema") not in ("", None):
                raise UnsafeSQL(f"function {fn!r} is not allowed in a predicate; allowed: "
                                f"{', '.join(sorted(f for f in FUNCTIONS if f[0].isalpha()))} and operators")
    for v in node.values():
        _walk(v, valid, found)


def matches(
    con: duckdb.DuckDBPyConnection, split_hash: str, rules: Sequence[dict[str, str]]
) -> list[set[str]]:
    """For each rule (normalised by :func:`check_rules`), the clip_ids of ``split_hash`` it matches.

    ``con``: the catalog's connection, read from for the referenced columns only (their names
    were checked); the predicates themselves run in a locked in-memory sandbox.
    """
    if not rules:
        return []
    cols = sorted({c for r in rules for c in r["columns"].split(",") if c} - {"clip_id"})
    select = ", ".join(["clip_id", *cols])
    table = con.sql(f"SELECT {select} FROM clips WHERE split_hash = ?", params=[split_hash]).to_arrow_table()
    with duckdb.connect(":memory:") as box:
        box.register("clips", table)
        for setting in ("autoinstall_known_extensions", "autoload_known_extensions",
                        "allow_community_extensions", "enable_external_access"):  # as curation/sandbox.py
            box.execute(f"SET {setting} = false")
        box.execute("SET lock_configuration = true")
        # the newlines keep a trailing '--' comment in a predicate from eating the closing parenthesis
        sql = "SELECT clip_id FROM clips WHERE (\n{}\n)"
        return [{row[0] for row in box.execute(sql.format(r["where"])).fetchall()} for r in rules]


def apply_rules(
    con: Any, split_hash: str, clip_ids: Any, reason: np.ndarray, order: tuple[str, ...], f: Any
) -> tuple[np.ndarray, tuple[str, ...]]:
    """``reason`` with the ``filters.extra`` rules applied to the rows every registered rule keeps,
    in order (the first match wins), and the reasons the indices now name: ``order`` then theirs.

    The predicates are checked again here (the config may come from a dict no loader checked)
    and run sandboxed (:func:`matches`). ``reason``: int indices into ``order`` (-1: kept);
    ``clip_ids``: the rows' ids (Arrow strings); ``f``: the FilterConfig.
    """
    import pyarrow as pa  # not at import: the config loader imports this module for check_rules
    import pyarrow.compute as pc

    rules = check_rules(f.extra)
    if not rules:
        return reason, order
    clash = sorted({r["reason"] for r in rules} & set(order))
    if clash:
        raise ConfigError(f"filters.extra: reason(s) {clash} are built-in rules' (the decision order: "
                          f"{', '.join(order)}); choose others")
    names = list(order)
    reason = reason.astype(np.int16)
    for rule, ids in zip(rules, matches(con, split_hash, rules), strict=True):
        if rule["reason"] not in names:
            names.append(rule["reason"])
        hit = np.asarray(pc.is_in(clip_ids, value_set=pa.array(sorted(ids), pa.string())), bool)
        reason[(reason < 0) & hit] = names.index(rule["reason"])
    return reason, tuple(names)
