"""Logging for the ``vidloom`` command: one ``--log-level`` for vidloom, Prefect and Ray.

Called once by ``vidloom.cli.main`` before Prefect or Ray are imported, because both read their
settings from the environment when they start:

- vidloom's loggers (``pipelines``, ``curation``, ``captioner``, ``flows``, ``training``,
  ``vidloom``) and the root logger get the level; without Prefect a stderr handler prints them.
- Prefect: ``PREFECT_LOGGING_ROOT_LEVEL`` (its console handler sits on the root logger), and
  vidloom's loggers join ``PREFECT_LOGGING_EXTRA_LOGGERS``, so what a step logs inside a task
  run (a stage's traceback among it, pipelines/runner.py) is stored with that task run too.
  At ``debug`` Prefect's own loggers go to DEBUG as well.
- Ray: its C++ core prints error-level lines on start-up that are not errors of the run (e.g.
  ``core_worker.cc: Actor ... has constructor arguments in the object store``). They are hushed
  (``RAY_BACKEND_LOG_LEVEL=fatal``) unless the level is ``debug``; Ray's Python loggers are kept
  at WARNING or above.

A variable the user has already set is left alone.
"""

from __future__ import annotations

import logging
import os
import sys

LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_LEVEL = "warning"  # vidloom's INFO lines are progress detail; Prefect's run lines stay on
VIDLOOM_LOGGERS = ("pipelines", "curation", "captioner", "flows", "training", "vidloom")
FORMAT = "%(asctime)s | %(levelname)-7s | %(name)s - %(message)s"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler until Prefect is imported. Prefect keeps a root handler it takes for the
    user's, and then its run lines lose their flow/task run names; it replaces a handler whose
    class name starts with '_' (prefect/logging/configuration.py), so this one gives way."""


def setup(level: str = DEFAULT_LEVEL) -> int:
    """Configure logging for this process (and the Prefect and Ray processes it starts).

    Args:
        level: one of :data:`LEVELS` (case-insensitive).

    Returns:
        The numeric level.
    """
    name = level.lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; choose from {', '.join(LEVELS)}")
    numeric = getattr(logging, name.upper())
    os.environ.setdefault("PREFECT_LOGGING_ROOT_LEVEL", name.upper())
    if name == "debug" or numeric >= logging.ERROR:  # else Prefect's run lines stay at INFO
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", name.upper())
    extra = [x for x in os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "").split(",") if x.strip()]
    os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join(dict.fromkeys([*extra, *VIDLOOM_LOGGERS]))
    if name != "debug":
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    root = logging.getLogger()
    if not root.handlers:
        handler = _StderrHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(numeric)
    for logger in VIDLOOM_LOGGERS:
        logging.getLogger(logger).setLevel(numeric)
    logging.getLogger("ray").setLevel(max(numeric, logging.WARNING))
    return numeric
