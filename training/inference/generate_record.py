"""What a generation records beside its video: the rewritten prompt and the JSON summary.

``rewrite_prompt`` runs the prompt rewriter (captioner/rewrite.py) when asked and returns the
prompt to generate from with its record (original, rewritten, source, checks, failure);
``write_summary`` writes ``generate_to_file``'s summary next to the mp4, atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def rewrite_prompt(prompt: str, rewrite: Any) -> tuple[str, dict[str, Any] | None]:
    """(the prompt to generate from, the rewrite record or None). ``rewrite``: None/False (none),
    True (the template, captioner/rewrite.py), a dict of ``rewrite()`` keyword arguments (lang,
    endpoint, model, ...), or a ``RewriteResult`` already made."""
    if rewrite is None or rewrite is False:
        return prompt, None
    from captioner.rewrite import RewriteResult
    from captioner.rewrite import rewrite as do_rewrite

    result = rewrite if isinstance(rewrite, RewriteResult) else do_rewrite(
        prompt, **({} if rewrite is True else dict(rewrite)))
    return result.prompt, result.to_dict()


def write_summary(summary: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a generation summary as UTF-8 JSON atomically (``<path>.part`` then rename)."""
    import json

    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
