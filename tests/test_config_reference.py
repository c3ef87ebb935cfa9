"""docs/configuration.md is what ``vidloom.config_reference`` renders from the config classes now."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vidloom import config_reference

ROOT = Path(__file__).resolve().parent.parent


def test_the_configuration_reference_is_current() -> None:
    stored = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert stored == config_reference.render(), (
        "docs/configuration.md is stale: python -m vidloom.config_reference --out docs/configuration.md")


def test_every_key_has_a_type_a_default_and_a_meaning() -> None:
    from pipelines.config import default
    from training.config import tiny

    for cfg in (default(), tiny()):
        rows = list(config_reference.rows(cfg))
        assert len(rows) > 50
        missing = [key for key, typ, value, meaning in rows if not (typ and value and meaning)]
        assert not missing, f"keys without a meaning (comment the field): {missing}"


def test_meanings_come_from_comments_and_docstrings() -> None:
    @dataclasses.dataclass
    class Section:
        """A section.

        Attributes:
            b: from the docstring,
                continued.
        """

        a: int = 1  # inline
        b: str = "x"
        # above
        c: float = 2.0

    docs = config_reference.field_docs(Section)
    assert docs == {"a": "inline", "b": "from the docstring, continued.", "c": "above"}
    assert [r[0] for r in config_reference.rows(Section())] == ["a", "b", "c"]
