"""The scorer registry: a scorer is one file that registers what it measures and how it rejects.

Like datatrove's filter blocks (each returns keep/drop with a reason) and NeMo Curator's stages
(the stage is its configuration), a scorer's file ends with one :func:`register` call naming

- its stage (a ``Stage`` subclass whose ``columns`` it writes) and its **cost** (run order: cheap
  first; an ``expensive`` scorer sits behind a gate, pipelines/stages/score_gate.py);
- its **columns** (:class:`curation.score_columns.ScoreColumn`: name, DuckDB type, meaning), which
  become catalog columns, ``ClipScores`` attributes and report histograms (the built-in scorers'
  are declared in curation/score_columns.py, which cannot import the stages, and named here);
- its **config**: the section ``scores.<key>``, a dataclass with defaults defined in the same file,
  which the stage subclasses (the stage is its configuration; fields that decide rather than
  measure are ``pipelines.stage.unhashed``) (the built-in ones are also named fields of
  ``pipelines.config.ScoreConfig``; a new scorer's class is added to it as a field), with the
  ``ranges`` and ``choices`` that ``pipelines/config_check.py`` checks at load time;
- its reject **rules** (:class:`Rule`), each with a reason and a position in the decision order;
- when it cannot run: ``unavailable(section)`` gives the reason (logged, recorded in the run),
  and ``required(section)`` makes that an error.

The score step (``build_scorers``), the filter step (pipelines/decide.py and its columnar twin
pipelines/decide_columns.py), the gates and the report read this registry; nothing lists the
scorers by hand. The built-in scorers are the ``pipelines/stages/*_scorer.py`` modules, imported
on first use; a scorer kept elsewhere is a module named in ``$VIDLOOM_SCORERS`` (imported before
the config is read, and by Ray workers when they unpickle its stage).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, make_dataclass, replace
from typing import Any

import numpy as np

from curation import score_columns
from curation.schema import Clip
from curation.score_columns import ScoreColumn
from pipelines import config_check, stages

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Rule:
    """One reject rule: a clip failing it gets ``reason`` (the first failing rule in ``order`` wins).

    row:  ``(row, filters, section) -> bool``, on a clip's catalog columns (the gates, tests).
    mask: ``(cols, filters, section) -> bool array``, the same rule over all clips at once
          (pipelines/decide_columns.py): ``cols[name]`` is float64 with NaN for NULL (numeric
          columns named in ``reads``), ``cols.present(name)`` says which rows hold a value.
          Without ``row`` the row form is the mask on a one-row table.
    section: the scorer's config section (``scores.<key>``; for the filter step's own rules, the
          caption config). An unmeasured score (NULL/NaN) must never fail a rule.
    threshold: ``(column, 'min' | 'max', 'filters.<key>' | 'scores.<section>.<key>')`` drawn on the
          report's histogram of ``column``.
    """

    reason: str
    order: float
    mask: Callable[[Any, Any, Any], Any]
    row: Callable[[Row, Any, Any], bool] | None = None
    reads: tuple[str, ...] = ()
    threshold: tuple[str, str, str] | None = None
    owner: str = ""  # set by register(): the scorer's name ('filter' for the filter step's own)


@dataclass(frozen=True)
class ScorerSpec:
    """A scorer as the registry knows it (see the module docstring)."""

    name: str  # the stage's name: done marks are 'score:<name>'
    stage: type
    cost: float
    columns: tuple[ScoreColumn | str, ...] = ()
    key: str | None = None  # its config section under ``scores``; None: none
    config: type | None = None  # a new scorer's section dataclass (built-ins: a ScoreConfig field)
    rules: tuple[Rule, ...] = ()
    expensive: bool = False  # behind a gate: skipped on a clip an earlier rule already rejects
    gate: str | None = None  # the first rule that reads its scores (the gate applies those before)
    gate_skips: tuple[str, ...] = ()  # rules before ``gate`` the gate must not apply
    unavailable: Callable[[Any], str | None] | None = None
    required: Callable[[Any], bool] | None = None
    ranges: dict[str, tuple[float | None, float | None, bool]] = field(default_factory=dict)
    choices: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    build: Callable[[Any], Any] | None = None  # section -> stage; default: make()

    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name if isinstance(c, ScoreColumn) else c for c in self.columns)

    def section(self, scores: Any) -> Any:
        """This scorer's section of ``scores`` (a ScoreConfig; None: the defaults)."""
        if self.key is None:
            return None
        got = scores.get(self.key) if isinstance(scores, Mapping) else getattr(scores, self.key, None)
        if got is not None:
            return got
        return self.config() if self.config is not None else None  # built-in rules read filters only

    def skip_reason(self, section: Any) -> str | None:
        return self.unavailable(section) if self.unavailable else None

    def make(self, section: Any) -> Any:
        """The stage: configured by its section when it subclasses the section's class (the stage
        is its configuration, pipelines/stage.py); a stage with no config class measures without
        settings (its section, if any, holds only what its rules read)."""
        if self.build is not None:
            return self.build(section)
        configured = section is not None and getattr(self.stage, "config_class", lambda: None)() is not None
        return self.stage.from_config(section) if configured else self.stage()


_SPECS: dict[str, ScorerSpec] = {}
_CORE: list[Rule] = []
_loaded = [False]


def register(spec: ScorerSpec) -> ScorerSpec:
    """Add (or replace) a scorer; its columns, config checks and rules take effect at once.

    Raises ValueError when a column, a reason or a rule position is another's, or the stage's
    ``columns`` are not the declared ones.
    """
    names = spec.column_names()
    if tuple(getattr(spec.stage, "columns", names)) != names:
        raise ValueError(f"scorer {spec.name!r}: {spec.stage.__name__}.columns {spec.stage.columns} "
                         f"!= the registered columns {names}")
    declared = [c for c in spec.columns if isinstance(c, ScoreColumn)]
    missing = [n for n in names if score_columns.get(n) is None and n not in {c.name for c in declared}]
    if missing:
        raise ValueError(f"scorer {spec.name!r}: columns {missing} are declared nowhere (give ScoreColumns)")
    taken = {r.reason: r.owner for r in all_rules(load=False) if r.owner != spec.name}
    orders = {r.order: r.reason for r in all_rules(load=False) if r.owner != spec.name}
    n = len(spec.rules)
    if len({r.reason for r in spec.rules}) < n or len({r.order for r in spec.rules}) < n:
        raise ValueError(f"scorer {spec.name!r}: two of its rules share a reason or a position")
    for r in spec.rules:
        if r.reason in taken:
            raise ValueError(f"scorer {spec.name!r}: reason {r.reason!r} is already {taken[r.reason]!r}'s")
        if r.order in orders:
            raise ValueError(f"scorer {spec.name!r}: rule {r.reason!r} at position {r.order} collides with "
                             f"{orders[r.order]!r}; positions now: {decision_order(load=False)}")
    if declared:
        score_columns.register_columns(spec.name, declared, reserved=set(Clip.__dataclass_fields__))
    spec = _with_owner(spec)
    _SPECS[spec.name] = spec
    if spec.key is not None:
        config_check.register_checks(f"scores.{spec.key}.", spec.ranges, spec.choices)
    _CLASSES.clear()
    return spec


def unregister(name: str) -> None:
    """Remove a scorer (tests): its rules, config section and checks; its column leaves the row."""
    spec = _SPECS.pop(name, None)
    if spec is None:
        return
    if any(isinstance(c, ScoreColumn) for c in spec.columns):
        score_columns.unregister_columns(name)
    if spec.key is not None:
        config_check.unregister_checks(f"scores.{spec.key}.")
    _CLASSES.clear()


def register_core_rules(rules: list[Rule]) -> None:
    """The filter step's own rules (shape, dedup, extraction, captions): pipelines/decide.py."""
    _CORE[:] = [replace(r, owner="filter") for r in rules]


def _with_owner(spec: ScorerSpec) -> ScorerSpec:
    return replace(spec, rules=tuple(replace(r, owner=spec.name) for r in spec.rules))


PLUGINS_ENV = "VIDLOOM_SCORERS"
_plugins: set[str] = set()


def load_plugins() -> None:
    """Import the modules named in ``$VIDLOOM_SCORERS`` (comma-separated), once each: a scorer
    kept outside vidloom registers itself at import, before the config (its section) is read."""
    for name in (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",")):
        if name and name not in _plugins:
            _plugins.add(name)
            importlib.import_module(name)


def load_builtin() -> None:
    """Import every ``pipelines/stages/*_scorer.py`` once (each registers itself), and the plugins."""
    load_plugins()
    if _loaded[0]:
        return
    _loaded[0] = True
    for info in sorted(pkgutil.iter_modules(stages.__path__), key=lambda m: m.name):
        if info.name.endswith("_scorer"):
            importlib.import_module(f"pipelines.stages.{info.name}")


def specs(load: bool = True) -> list[ScorerSpec]:
    """Every registered scorer, in cost order (the score step runs them so)."""
    if load:
        load_builtin()
    return sorted(_SPECS.values(), key=lambda s: (s.cost, s.name))


def get(name: str) -> ScorerSpec:
    load_builtin()
    if name not in _SPECS:
        raise KeyError(f"no scorer {name!r}; registered: {', '.join(s.name for s in specs())}")
    return _SPECS[name]


def all_rules(load: bool = True) -> list[Rule]:
    """Every rule, the filter step's and the scorers', in decision order."""
    rules = list(_CORE) + [r for s in specs(load) for r in s.rules]
    return sorted(rules, key=lambda r: r.order)


def decision_order(load: bool = True) -> tuple[str, ...]:
    return tuple(r.reason for r in all_rules(load))


class _Gated(Mapping[str, str]):
    """expensive scorer -> the first rule that reads its scores (live view of the registry)."""

    def _map(self) -> dict[str, str]:
        return {s.name: s.gate for s in specs() if s.expensive and s.gate}

    def __getitem__(self, name: str) -> str:
        return self._map()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map())

    def __len__(self) -> int:
        return len(self._map())


GATED: Mapping[str, str] = _Gated()

_CLASSES: dict[tuple[str, ...], type] = {}


def score_config_class(base: type) -> type:
    """``base`` (pipelines.config.ScoreConfig) with a section for every registered scorer that
    brings its own config class; ``base`` itself when none does (the built-ins' are its fields)."""
    load_plugins()
    extra = [s for s in sorted(_SPECS.values(), key=lambda s: s.name) if s.config is not None and s.key]
    if not extra:
        return base
    clash = sorted({s.key for s in extra} & {f.name for f in fields(base)})  # type: ignore[arg-type]
    if clash:
        raise ValueError(f"scorer config section(s) {clash} are already sections of scores")
    ident = tuple(f"{s.key}:{s.config.__qualname__}" for s in extra)  # type: ignore[union-attr]
    if ident not in _CLASSES:
        _CLASSES[ident] = make_dataclass(
            base.__name__,
            [(s.key, s.config, field(default_factory=s.config)) for s in extra],  # type: ignore[misc]
            bases=(base,),
            namespace={"__module__": base.__module__, "__doc__": base.__doc__},
        )
    return _CLASSES[ident]


# --- helpers for writing rules ----------------------------------------------------------------
def above(r: Row, col: str, limit: float) -> bool:
    """Row form: measured and above ``limit``."""
    return r.get(col) is not None and r[col] > limit


def below(r: Row, col: str, limit: float) -> bool:
    return r.get(col) is not None and r[col] < limit


class OneRow(dict):  # type: ignore[type-arg]
    """A row as the one-row column table a mask reads (the row form of a mask-only rule)."""

    n = 1

    def __init__(self, row: Row) -> None:
        super().__init__()
        self.row = row

    def __missing__(self, key: str) -> np.ndarray:
        v = self.row.get(key)
        return np.asarray([np.nan if v is None else v], np.float64)

    def present(self, key: str) -> np.ndarray:
        return np.asarray([self.row.get(key) is not None])

    def sparse(self, key: str) -> tuple[np.ndarray, list[Any]]:
        v = self.row.get(key)
        return (np.asarray([0]), [v]) if v not in (None, "") else (np.zeros(0, np.int64), [])


def row_form(rule: Rule) -> Callable[[Row, Any, Any], bool]:
    """``rule.row``, or its mask evaluated on the one row."""
    if rule.row is not None:
        return rule.row
    return lambda r, f, s: bool(np.broadcast_to(rule.mask(OneRow(r), f, s), (1,))[0])


def threshold_value(rule: Rule, f: Any, section: Any) -> float:
    """The value of ``rule.threshold``'s key under the filters ``f`` and the scorer's ``section``."""
    assert rule.threshold is not None
    _, _, key = rule.threshold
    if key.startswith("filters."):
        return float(getattr(f, key.removeprefix("filters.")))
    return float(getattr(section, key.rsplit(".", 1)[-1]))
