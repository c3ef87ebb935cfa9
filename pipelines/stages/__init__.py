"""The curation stages, one per module: each subclasses its config section, defined in the same file
(the stage is its configuration, pipelines/stage.py); a ``*_scorer.py`` module also registers its
scorer's columns and reject rules (pipelines/scorers.py)."""
