"""Curation: the stage abstraction (``stage.py``) and the stages (``stages/``), the tasks they pass
along, the runners (sequential, Ray Data) and the crash-safe journal, the steps of a curation run
(``*_step.py``, ``curate.py``), the config tree that composes the stages' sections
(``config.py``), the scorer registry (``scorers.py``) and the pure algorithms the stages call
(decode, shot detection, scores, dedup, text crop, shard writing, dataset versions, remote
inputs). See docs/architecture.md "Layout"."""
