"""Captioner prompts: plain UTF-8 text files under ``captioner/prompts/``, one per name.

File convention: the lines starting with ``#`` at the top of a file are its header (what the
prompt is for, what output it expects); they are not sent. The prompt text is the rest of the
file, stripped. ``Prompt.sha256`` is the sha256 of the whole file's bytes, header included, and
is stored as ``Caption.prompt_sha``: any edit to a prompt file shows up in the catalog.

Placeholders are ``{field}`` for the names in ``FIELDS`` only. ``render`` replaces just those,
so a prompt may contain other braces (JSON examples, ``{}``) without escaping them, unlike
``str.format``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"

PROMPT_NAMES: tuple[str, ...] = (
    "dense_en", "dense_zh", "translate_zh", "short_en", "short_zh", "structured",
)  # fmt: skip
"""The packaged prompts: dense captions asked directly in each language, the en -> zh
translation/refinement by a text LLM, the short motion-only captions for image-to-video, and
the structured request (the description fields with both captions of each kind, as JSON:
captioner/caption_schema.py)."""

FIELDS: tuple[str, ...] = ("caption",)
"""The placeholder names ``render`` fills; ``caption`` is the English text to translate."""

_NAME = re.compile(r"[a-z0-9_]+")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(FIELDS) + r")\}")


@dataclass(frozen=True)
class Prompt:
    """A loaded prompt.

    Attributes:
        name: the file's stem, e.g. 'dense_en'.
        text: the prompt as sent (header lines removed, stripped).
        sha256: hex sha256 of the file's bytes.
    """

    name: str
    text: str
    sha256: str

    @property
    def fields(self) -> frozenset[str]:
        """The placeholders this prompt needs."""
        return frozenset(_PLACEHOLDER.findall(self.text))


def prompt_text(raw: str) -> str:
    """The prompt text of a file's contents: the leading ``#`` header lines dropped, stripped."""
    lines = raw.splitlines()
    start = 0
    while start < len(lines) and lines[start].startswith("#"):
        start += 1
    return "\n".join(lines[start:]).strip()


def load_prompt(name: str, directory: str | Path | None = None) -> Prompt:
    """Load prompt ``name`` (``<name>.txt``).

    Args:
        name: file stem; lowercase letters, digits and underscores.
        directory: a user prompt directory (from the config). It is searched first; names it
            does not hold come from the packaged prompts. The sha256 tells the two apart.

    Raises:
        ValueError: the name is not a plain file stem.
        FileNotFoundError: no such prompt in ``directory`` nor among the packaged ones.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"prompt name must match [a-z0-9_]+, got {name!r}")
    dirs = ([Path(directory)] if directory is not None else []) + [PROMPT_DIR]
    for d in dirs:
        path = d / f"{name}.txt"
        if path.is_file():
            data = path.read_bytes()
            return Prompt(name, prompt_text(data.decode("utf-8")), hashlib.sha256(data).hexdigest())
    raise FileNotFoundError(f"no prompt {name!r} in {', '.join(str(d) for d in dirs)}")


def render(prompt: Prompt, **fields: str) -> str:
    """The prompt text with its placeholders filled.

    Each placeholder is replaced once, in one pass, so a value that itself contains
    ``{caption}`` is inserted verbatim.

    Raises:
        ValueError: a field is not in ``FIELDS``.
        KeyError: the prompt needs a field that was not given.
    """
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown prompt fields {sorted(unknown)}; known: {list(FIELDS)}")
    missing = prompt.fields - set(fields)
    if missing:
        raise KeyError(f"prompt {prompt.name!r} needs fields {sorted(missing)}")
    return _PLACEHOLDER.sub(lambda m: str(fields[m.group(1)]), prompt.text)
