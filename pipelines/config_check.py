"""Validation of curation config values, before any work starts (``pipelines/config.py`` calls it).

Types come from the dataclass annotations, so a field added to a config section is type-checked
with no change here: ``bool``, ``int``, ``float``, ``str``, ``X | None``, ``tuple[X, ...]``,
``dict[str, X]`` and ``Literal[...]``. A string (a ``--set`` value, or a quoted YAML scalar)
for a non-string field is read as a YAML scalar first, so ``--set runtime.num_cpus=1`` is the
int 1 and ``--set caption.reject_failed_checks=lang,numbers`` a tuple of two names. ``null``,
``~`` and an empty value are None for an optional field.

Every number must be >= 0 unless :data:`RANGES` says otherwise (no curation setting is
negative); :data:`RANGES` and :data:`CHOICES` tighten known fields, :func:`check_relations`
checks pairs such as ``clips.min_s <= clips.max_s`` once all layers are applied.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

import yaml

# Allowed values, by dotted key. A section defined in a stage's file declares its own on the class
# (``CHOICES``/``RANGES`` class attributes, by field name) and pipelines/config.py registers them
# here under the section's key (:func:`register_section`); these are the other sections'.
CHOICES: dict[str, tuple[str, ...]] = {
    "runtime.runner": ("ray", "sequential"),
    "runtime.keep_frames": ("keep", "after_score", "none"),  # pipelines.scratch.POLICIES
}
# Keys holding a torch device: 'cpu', 'cuda', 'cuda:N' or 'mps'.
DEVICE_KEYS = ("split.device", "scores.aesthetic.device")
_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")

# (low, high, low is exclusive): None means unbounded. Unlisted numbers: >= 0. The stages' sections
# bring their own (``RANGES`` on the class, :func:`register_section`), the scorers' sections
# (scores.<key>) theirs, in their files (pipelines/scorers.py ``ScorerSpec.ranges``).
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "filters.max_aspect": (1, None, False),
    "filters.max_black_frac": (0, 1, False),
    "filters.min_luma": (0, 255, False),
    "filters.dark_max_highlight": (0, 255, False),
    "filters.max_luma": (0, 255, False),
    "filters.max_clipped": (0, 1, False),
    "filters.max_artifacts": (0, 1, False),
    "filters.max_black_border": (0, 1, False),
    "filters.max_frozen": (0, 1, False),
    "filters.max_text_area": (0, 1, False),
    "filters.min_crop_area": (0, 1, False),
    "filters.max_crop_aspect_change": (1, None, False),
    "filters.text_crop_margin": (0, 1, False),
    "filters.min_aesthetic": (0, 10, False),
    "filters.phash_max_distance": (0, 64, False),
    "filters.semantic_dedup_min_cosine": (-1, 1, False),
    "shards.target_bytes": (1, None, False),
    "shards.multishot_max_shots": (2, None, False),
    "shards.multishot_min_shots": (2, None, False),
    "shards.multishot_max_s": (0, None, True),
    "runtime.num_cpus": (1, None, False),
    "runtime.window": (1, None, False),
    **{f"runtime.{key}.{name}": (1, None, False) for key in ("actors", "min_actors")
       for name in ("shot_split", "overlay_text", "aesthetic", "caption")},
}

# mappings whose keys are names vidloom knows: the model stages that run on actor pools
DICT_KEYS: dict[str, tuple[str, ...]] = {
    "runtime.actors": ("shot_split", "overlay_text", "aesthetic", "caption"),
    "runtime.min_actors": ("shot_split", "overlay_text", "aesthetic", "caption"),
}

# (smaller, larger): the first may not exceed the second.
RELATIONS: tuple[tuple[str, str], ...] = (
    ("clips.min_s", "clips.max_s"),
    ("shards.multishot_min_shots", "shards.multishot_max_shots"),
    ("filters.min_duration_s", "filters.max_duration_s"),
    ("filters.min_luma", "filters.max_luma"),
    ("filters.min_motion", "filters.max_motion"),
)

_NULLS = ("", "~", "null", "Null", "NULL", "none", "None")

# Ranges and choices of the config sections scorers register (pipelines/scorers.py), by prefix
# ('scores.<key>.'): kept apart from the tables above, which name the built-in fields only.
_SCORER_RANGES: dict[str, dict[str, tuple[float | None, float | None, bool]]] = {}
_SCORER_CHOICES: dict[str, dict[str, tuple[Any, ...]]] = {}


def register_section(prefix: str, section: type) -> None:
    """The ``RANGES`` and ``CHOICES`` a section class declares (by field name, in the stage's file),
    checked under ``prefix`` (the section's key in the tree, e.g. 'split.')."""
    RANGES.update({prefix + k: v for k, v in getattr(section, "RANGES", {}).items()})
    CHOICES.update({prefix + k: v for k, v in getattr(section, "CHOICES", {}).items()})


def register_checks(prefix: str, ranges: dict[str, Any], choices: dict[str, tuple[Any, ...]]) -> None:
    """A scorer's ranges and choices, keyed by field name under ``prefix`` ('scores.<key>.')."""
    _SCORER_RANGES[prefix] = dict(ranges)
    _SCORER_CHOICES[prefix] = dict(choices)


def unregister_checks(prefix: str) -> None:
    _SCORER_RANGES.pop(prefix, None)
    _SCORER_CHOICES.pop(prefix, None)


def _lookup(table: dict[str, Any], scorer_tables: dict[str, dict[str, Any]], path: str) -> Any:
    if path in table:
        return table[path]
    prefix, _, name = path.rpartition(".")
    return scorer_tables.get(prefix + ".", {}).get(name)


class ConfigError(ValueError):
    """A config key or value that is not valid; the message names the key and what is allowed."""


def unknown_key(path: str, known: list[str]) -> ConfigError:
    """The error for a key that is not a field, with the close matches and the known keys."""
    name = path.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    section = path.rsplit(".", 1)[0] if "." in path else "the top level"
    return ConfigError(f"unknown config key {path!r}{hint}; the keys of {section} are: {', '.join(known)}")


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a config dataclass (the module uses postponed annotations)."""
    return typing.get_type_hints(cls)


def coerce(path: str, hint: Any, value: Any) -> Any:
    """``value`` as the type ``hint`` of the field at dotted ``path``, checked against the
    tables above; raises :class:`ConfigError` naming the key, the value and what is allowed."""
    value = _typed(path, hint, value)
    _check_value(path, value)
    return value


def _typed(path: str, hint: Any, value: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip() in _NULLS)):
            return None
        if len(inner) == 1:
            return _typed(path, inner[0], value)
        return value  # a union of several types: not checked here
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path} must be one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string; got {value!r} ({type(value).__name__})")
        return value
    if isinstance(value, str):
        value = _scalar(path, hint, value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false; got {value!r}")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer; got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path} must be a number; got {value!r}")
        return float(value)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path} must be a list; got {value!r}")
        if args and args[-1] is not Ellipsis:  # tuple[float, float]: that many items, each its type
            if len(value) != len(args):
                raise ConfigError(f"{path} must be a list of {len(args)} items; got {value!r}")
            pairs = enumerate(zip(args, value, strict=True))
            return tuple(_typed(f"{path}[{i}]", t, v) for i, (t, v) in pairs)
        item = args[0] if args else Any
        if item is Any:
            return tuple(value)
        return tuple(_typed(f"{path}[{i}]", item, v) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping; got {value!r}")
        if path in DICT_KEYS and set(value) - set(DICT_KEYS[path]):
            bad = sorted(set(value) - set(DICT_KEYS[path]))
            raise ConfigError(
                f"{path}: unknown key(s) {', '.join(bad)}; choose from {', '.join(DICT_KEYS[path])}")
        item = args[1] if len(args) == 2 else Any
        if item is Any:
            return value
        typed = {k: _typed(f"{path}.{k}", item, v) for k, v in value.items()}
        for k, v in typed.items():
            _check_value(f"{path}.{k}", v)
        return typed
    return value  # a type this module does not know: taken as given


def _scalar(path: str, hint: Any, text: str) -> Any:
    """A string for a non-string field, read as YAML (``1`` -> 1, ``true`` -> True, ``[a, b]``)."""
    if typing.get_origin(hint) is tuple and not text.strip().startswith("["):
        return [t.strip() for t in text.split(",") if t.strip()]  # each item is typed by the caller
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: cannot read {text!r}: {e}") from None
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "2e-3" (no dot) as a string
        except ValueError:
            pass
    return value


def _check_value(path: str, value: Any) -> None:
    if value is None:
        return
    choices = _lookup(CHOICES, _SCORER_CHOICES, path)
    if choices is not None and value not in choices:
        raise ConfigError(f"{path} must be one of {', '.join(map(str, choices))}; got {value!r}")
    if path in DEVICE_KEYS and not _DEVICE.match(str(value)):
        raise ConfigError(f"{path} must be a device: cpu, cuda, cuda:N or mps; got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    low, high, exclusive = _lookup(RANGES, _SCORER_RANGES, path) or (0, None, False)
    too_low = low is not None and (value <= low if exclusive else value < low)
    if too_low or (high is not None and value > high):
        lo = "" if low is None else f"{'>' if exclusive else '>='} {low:g}"
        hi = "" if high is None else f"<= {high:g}"
        raise ConfigError(f"{path} must be {' and '.join(s for s in (lo, hi) if s)}; got {value!r}")


def check_relations(cfg: Any) -> None:
    """Pairs of settings that must be ordered (applied after every layer of the config)."""
    for small, large in RELATIONS:
        a, b = _get(cfg, small), _get(cfg, large)
        if a is not None and b is not None and a > b:
            raise ConfigError(f"{small} ({a!r}) must not exceed {large} ({b!r})")


def _get(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part, None)
    return cfg
