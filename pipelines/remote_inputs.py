"""The ingest step's sources beyond local files: URLs and manifest files, and the remote probe.

``discover_sources`` expands a mixed list of sources into ``Inputs``:

- a local file, directory or glob: as ``pipelines.probe.discover_inputs``;
- a URL (``s3://``, ``gs://``, ``http(s)://``, ...): a prefix is listed recursively, a glob is
  matched, anything else is one input (pipelines/remote.py);
- a manifest, a local or remote file ending ``.csv``, ``.jsonl``/``.ndjson`` or ``.parquet``: one
  input per row. Its URL column is the first of ``url``, ``uri``, ``path``, ``video``, ``source``;
  a relative entry is relative to the manifest's own location. Every other column is metadata,
  stored as the JSON object ``videos.source_meta`` (values as the manifest typed them).

Nothing is lost: a manifest that cannot be read, or a listing that fails, is an input with its
error, so it gets a ``files``/``videos`` row like any bad file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any

from curation.schema import ID_LEN, Video
from pipelines.probe import av_message, check_bounds, discover_inputs, error_video, fill_from_container
from pipelines.remote import HashingReader, describe_error, discover_url, is_url, url_to_fs

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")
URL_COLUMNS = ("url", "uri", "path", "video", "source")


@dataclass
class Inputs:
    """The inputs of one ingest: paths/URLs in order, manifest metadata and pre-known errors."""

    paths: list[str] = field(default_factory=list)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set, repr=False)

    def add(self, path: str, meta: dict[str, Any] | None = None, error: str | None = None) -> None:
        if path not in self._seen:
            self._seen.add(path)
            self.paths.append(path)
        if meta:
            self.meta.setdefault(path, {}).update(meta)
        if error:
            self.errors[path] = error


def is_manifest(src: str) -> bool:
    return str(src).lower().endswith(MANIFEST_SUFFIXES)


def discover_sources(sources: list[str], extensions: Any) -> Inputs:
    """Expand ``sources`` (local paths, globs, URLs, manifests) into sorted, unique ``Inputs``."""
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    out = Inputs()
    local = [s for s in sources if not is_url(s) and not is_manifest(s)]
    for p in discover_inputs(local, exts):
        out.add(p)
    for src in sources:
        if is_manifest(src):
            _add_manifest(out, src)
        elif is_url(src):
            urls, errors = discover_url(src, exts)
            for u in urls:
                out.add(u, error=errors.get(u))
    out.paths.sort()
    return out


def _add_manifest(out: Inputs, src: str) -> None:
    location = src if is_url(src) else os.path.abspath(src)
    try:
        rows = read_manifest_rows(location)
    except Exception as exc:  # noqa: BLE001 - a bad manifest is a row with its error, not a crash
        out.add(location, error=f"bad manifest: {describe_error(exc) if is_url(src) else exc}")
        return
    base = location.rsplit("/", 1)[0] if is_url(location) else os.path.dirname(location)
    for i, (entry, meta) in enumerate(rows):
        if not entry:
            out.add(f"{location}#row{i + 1}", error=f"manifest row {i + 1} has no URL")
            continue
        if not is_url(entry) and not os.path.isabs(entry):
            entry = f"{base}/{entry}" if is_url(base) else os.path.abspath(os.path.join(base, entry))
        out.add(entry, meta={**meta, "manifest": location})


def read_manifest_rows(location: str) -> list[tuple[str | None, dict[str, Any]]]:
    """(url, metadata) per row of a CSV, JSONL or Parquet manifest (local path or URL).

    Raises:
        ValueError: if the manifest has no URL column. I/O errors propagate.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    if is_url(location):
        fs, path = url_to_fs(location)
        data = fs.cat_file(path)  # a manifest is small: read whole
    else:
        with open(location, "rb") as f:
            data = f.read()
    low = location.lower()
    if low.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
    elif low.endswith(".csv"):
        table = pcsv.read_csv(io.BytesIO(data))
    else:
        table = pjson.read_json(io.BytesIO(data))
    assert isinstance(table, pa.Table)
    col = next((c for c in URL_COLUMNS if c in table.column_names), None)
    if col is None:
        raise ValueError(f"no URL column (one of {', '.join(URL_COLUMNS)}) in {table.column_names}")
    rows = []
    for r in table.to_pylist():
        url = r.pop(col)
        meta = {k: v for k, v in r.items() if v is not None}
        entry = str(url).strip() if url not in (None, "") else None
        rows.append((entry, json.loads(json.dumps(meta, default=str))))  # JSON-safe values
    return rows


READ_ATTEMPTS = 3  # a probe whose connection failed is tried again from the start, this many times in all
RETRY_WAIT_S = 0.5  # times the attempt number


def probe_remote(url: str, max_duration_s: float, max_pixels: int) -> Video:
    """Stream, hash and probe one remote object. Never raises: problems become an error ``Video``.

    The probe reads through a ``HashingReader``: the demuxer's reads from the start feed the hash,
    then the rest of the object is read in order (one pass, no local copy). A read that fails in
    transport (a dropped connection, a short body) makes the whole probe start again, up to
    ``READ_ATTEMPTS`` times; then it is an error row, as is a missing or forbidden object.
    """
    import time

    for attempt in range(1, READ_ATTEMPTS + 1):
        video, transient = _probe_once(url, max_duration_s, max_pixels)
        if not transient:
            return video
        if attempt < READ_ATTEMPTS:
            time.sleep(RETRY_WAIT_S * attempt)
    video.error = f"{video.error} ({READ_ATTEMPTS} attempts)"
    return video


def _probe_once(url: str, max_duration_s: float, max_pixels: int) -> tuple[Video, bool]:
    """One probe: (the Video, whether it failed in transport and is worth trying again)."""
    import av

    def error_row(reason: str) -> Video:
        sha = hashlib.sha256(f"path:{url}".encode()).hexdigest()
        return Video(video_id=sha[:ID_LEN], path=url, sha256=sha, status="error", error=reason)

    try:
        fs, path = url_to_fs(url)
        info = fs.info(path)
        if info.get("type") == "directory":
            return error_row("a prefix with no video files under it, not an object"), False
        size = info.get("size")
        f = fs.open(path, "rb", block_size=4 << 20, cache_type="readahead")
    except Exception as exc:  # noqa: BLE001 - botocore/aiohttp/gcsfs errors vary
        if isinstance(exc, FileNotFoundError) and url.lower().startswith(("http://", "https://")):
            return error_row(http_failure(url) or describe_error(exc)), False  # fsspec: 404 for any status
        return error_row(describe_error(exc)), False
    video = Video(video_id="", path=url, sha256="", size_bytes=int(size or 0))
    with f:
        reader = HashingReader(f, size)
        error = None
        if size == 0:
            error = "empty file"
        else:
            try:
                with av.open(reader, mode="r") as container:  # type: ignore[arg-type]
                    error = fill_from_container(video, container)
            except av.FFmpegError as e:
                error = f"cannot open: {av_message(e)}"
            except Exception as e:  # noqa: BLE001 - PyAV re-raises the reader's own errors
                error = f"cannot open: {describe_error(e)}"
        try:
            sha = reader.finish()
        except OSError as exc:
            return error_row(str(exc)), reader.transport_error is not None
        if reader.transport_error is not None:  # the demuxer gave up on a failed read: not the data's fault
            return error_row(f"read failed: {reader.transport_error}"), True
    video.sha256, video.video_id = sha, sha[:ID_LEN]
    video.size_bytes = reader.hashed
    if error is None:
        error = check_bounds(video, max_duration_s, max_pixels)
    return (video if error is None else error_video(video, error)), False

def http_failure(url: str, timeout_s: float = 20.0) -> str | None:
    """Why an http(s) URL fails, from its status (fsspec's http ``info`` reports every failure as
    not found): 'access denied (403)', 'object not found (404)', 'HTTP 500: ...'; None if it answers."""
    import urllib.error
    import urllib.request

    from pipelines.remote import redact

    req = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s):  # noqa: S310 - the user's own input URL
            return None
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            return f"access denied ({e.code}): {redact(url)}"
        if e.code == 404:
            return f"object not found (404): {redact(url)}"
        return f"HTTP {e.code} {e.reason}: {redact(url)}"
    except (urllib.error.URLError, OSError) as e:
        return f"cannot reach {redact(url)}: {getattr(e, 'reason', e)}"
