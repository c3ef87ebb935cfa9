"""``vidloom --version``: the installed package version and, in a git checkout, the commit."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path


def package_version() -> str:
    try:
        return metadata.version("vidloom")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def git_commit() -> str | None:
    """The short commit of the source tree vidloom runs from (``+dirty`` with local changes);
    None outside a git checkout or without git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=here, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=here, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty else sha or None


def version_string() -> str:
    """``vidloom 0.1.0 (git 0123456789ab)``, or ``vidloom 0.1.0`` outside a checkout."""
    commit = git_commit()
    return f"vidloom {package_version()}" + (f" (git {commit})" if commit else "")
