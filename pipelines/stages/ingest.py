"""Ingest: find the input files, hash them and probe them with PyAV (pipelines/probe.py; URLs
through pipelines/remote_inputs.py, streamed, no local copy).

Every input gets a ``Video`` row (docs/architecture.md "Every input gets a row"): a file that
cannot be used becomes ``status='error'`` with a readable ``error``; ``Probe``
never raises for a bad file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from curation.schema import Video
from pipelines.probe import (  # noqa: F401  (discover_inputs, is_vfr: re-exported)
    MAX_DURATION_S,
    MAX_PIXELS,
    VIDEO_EXTENSIONS,
    discover_inputs,
    is_vfr,
    probe_local,
)
from pipelines.remote import is_url
from pipelines.remote_inputs import probe_remote
from pipelines.stage import Resources, Stage, unhashed
from pipelines.tasks import VideoTask


@dataclass
class IngestConfig:
    # file extensions ingest picks up from directories and globs
    extensions: tuple[str, ...] = unhashed(VIDEO_EXTENSIONS)
    max_duration_s: float = MAX_DURATION_S  # longer files are recorded as 'absurd' errors
    max_pixels: int = MAX_PIXELS  # larger frames (width x height) are recorded as 'absurd' errors

    # (low, high, low exclusive) by field, checked at load (pipelines/config_check.py; others: >= 0)
    RANGES: ClassVar[dict[str, tuple[float | None, float | None, bool]]] = {
        "max_duration_s": (0, None, True), "max_pixels": (0, None, True)}


def probe_video(path: str, max_duration_s: float = MAX_DURATION_S, max_pixels: int = MAX_PIXELS) -> Video:
    """Hash and probe one file or URL. Never raises: problems become an error ``Video``."""
    if is_url(path):  # streamed and hashed through fsspec, no local copy
        return probe_remote(path, max_duration_s, max_pixels)
    return probe_local(path, max_duration_s, max_pixels)


@dataclass
class Probe(IngestConfig, Stage[VideoTask, VideoTask]):
    """Hash and probe each input file into ``task.video`` (status 'ok' or 'error'); ``extensions``
    is read by the discovery before it (pipelines/curate.py)."""

    name: ClassVar[str] = "probe"
    # Hashing is disk-bound and probing demuxes ~200 packets: one core is plenty.
    resources: ClassVar[Resources] = Resources(cpus=1.0)

    def process(self, task: VideoTask) -> VideoTask:
        if task.error:  # known bad before probing (a manifest that cannot be read, a failed listing)
            return task
        task.video = probe_video(task.path, self.max_duration_s, self.max_pixels)
        return task
