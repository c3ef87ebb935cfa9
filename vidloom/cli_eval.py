"""`vidloom eval` commands (registered by vidloom/cli.py)."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any) -> None:
    """Register this module's commands on the top-level subparsers (none yet)."""
    del sub  # filled in by the eval work


def _unused(args: argparse.Namespace) -> int:
    return 0
