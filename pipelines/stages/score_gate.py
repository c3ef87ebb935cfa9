"""Cost-ordered scoring: a gate in front of an expensive scorer (OCR, aesthetic).

The score step runs the cheap scorers first (quality, compression, motion, hashes). A gate then
applies the filter rules that come *before* the expensive scorer's own rule in the decision order
(pipelines/decide.py), on the scores measured so far; a clip one of them rejects is dropped from the
expensive scorers' to-do list and ``clip.not_scored`` says which were skipped and why, e.g.
``'overlay_text,aesthetic: rejected before overlay_text (blurry)'``.

Only earlier rules are used, so the clip's decision and its reject reason are those every scorer
would have given: the first failing rule is one the gate saw, and an unmeasured score (None)
never rejects. Skipped scorers are not marked done: when a threshold changes, the score step runs
again (its key holds the filter settings), the gate re-decides and a clip that now passes gets
the scorers it missed. ``scores.score_all`` (``--score-all``) turns the gates off.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from curation import schema
from pipelines import scorers
from pipelines.config import FilterConfig
from pipelines.stage import Resources, Stage
from pipelines.tasks import ClipTask

# expensive scorer -> the first rule that reads its scores (the gate uses every rule before it but
# the scorer's ``gate_skips``: the aesthetic gate leaves out 'text', which reads the crop the
# filter step computes). Both come from the scorer registry (pipelines/scorers.py).
GATED = scorers.GATED


def gate_rules(scorer: str, f: FilterConfig, scores: Any = None) -> list[tuple[str, Any]]:
    """(reason, fails) of the rules a clip must pass before ``scorer`` runs on it."""
    from pipelines.decide import rules

    spec = scorers.get(scorer)
    out = []
    for name, fails in rules(f, scores=scores):
        if name == spec.gate:
            return out
        if name not in spec.gate_skips:
            out.append((name, fails))
    raise KeyError(f"rule {spec.gate!r} is not in the decision order")


@dataclass
class ScoreGate(Stage[ClipTask, ClipTask]):
    """Drop ``skip`` (expensive scorers, in run order) from a clip's to-do list when a rule
    before ``before``'s rule rejects it; record why in ``clip.not_scored``."""

    name: ClassVar[str] = "score_gate"
    resources: ClassVar[Resources] = Resources(cpus=0.25)  # a few comparisons per clip

    before: str = "overlay_text"
    skip: tuple[str, ...] = ("overlay_text",)
    filters: FilterConfig = field(default_factory=FilterConfig)
    scores: dict[str, Any] = field(default_factory=dict)  # key -> section of scorers with their own config

    def params(self) -> dict[str, Any]:
        out = {"before": self.before, "skip": list(self.skip), "filters": dataclasses.asdict(self.filters)}
        own = {s.key: dataclasses.asdict(s.section(self.scores))
               for s in scorers.specs() if s.config and s.rules}
        if own:  # only then: the built-in rules read the filters alone, and their gate keys stay as they were
            out["scores"] = own
        return out

    def process(self, task: ClipTask) -> ClipTask:
        skip = [n for n in self.skip if task.wants(n)]
        if not skip or task.todo is None:  # the score step always sets todo
            return task
        row = schema.clip_row(task.clip)
        checks = gate_rules(self.before, self.filters, self.scores)
        reason = next((name for name, fails in checks if fails(row)), None)
        if reason is not None:
            task.todo = tuple(n for n in task.todo if n not in skip)
            task.clip.not_scored = f"{','.join(skip)}: rejected before {self.before} ({reason})"
        return task
