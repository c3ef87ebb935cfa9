"""Object-store and remote inputs and outputs, through fsspec.

A source or output that names a URL (``s3://bucket/key``, ``gs://…``, ``http(s)://…``, any
protocol fsspec knows except ``file``) is read and written here; local paths keep their own code.

- Credentials and endpoints are fsspec's and the storage SDK's own: the standard AWS variables
  (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
  ``AWS_ENDPOINT_URL`` for S3-compatible stores), ``GOOGLE_APPLICATION_CREDENTIALS`` for gcsfs,
  and fsspec's configuration (``FSSPEC_S3_ENDPOINT_URL``, ``FSSPEC_S3_ANON``, or JSON files in
  ``~/.config/fsspec/``) for any other storage option.
- Inputs stream: PyAV reads a seekable fsspec file object (ranged reads), never a local copy.
  ``HashingReader`` hashes the bytes as the probe reads them and reads the rest in order at the
  end, so the content hash (the video's identity) costs one sequential pass and no disk.
- Clip extraction runs ffmpeg, which cannot read an fsspec file object: it is given an http(s)
  URL it reads with Range requests, the input's own for http(s) and a signed URL (``fs.sign``)
  for S3/GCS. A protocol that can neither be signed nor served over http is an extraction error.
- ``RemoteDir`` is the part of ``pathlib.Path`` that the shard loader uses (``/``, ``name``,
  ``parent``, ``read_text``, ``open``, ``is_file``, ``exists``, ``resolve``) over an fsspec URL.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import os
import re
from collections.abc import Iterable
from typing import Any, BinaryIO

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SIGNED_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")
SIGN_EXPIRY_S = 6 * 3600
LATEST = "latest"  # in a bucket: a small object holding the current version's hash (no symlinks)


def is_url(path: Any) -> bool:
    """Whether ``path`` is a remote URL (any fsspec protocol but ``file``) or a ``RemoteDir``."""
    if isinstance(path, RemoteDir):
        return True
    m = _SCHEME.match(str(path)) if isinstance(path, str) else None
    return bool(m) and m.group(1).lower() not in ("file", "local")


def url_to_fs(url: str) -> tuple[Any, str]:
    """(filesystem, path inside it) for ``url``."""
    from fsspec.core import url_to_fs as _url_to_fs

    return _url_to_fs(url)


def redact(text: str) -> str:
    """``text`` with the query strings of http(s) URLs (signatures, tokens) cut off."""
    return _SIGNED_QUERY.sub(r"\1?…", text)


def describe_error(exc: BaseException) -> str:
    """A short, readable reason for a failed remote access (no credentials in it)."""
    name = type(exc).__name__
    msg = redact(str(exc)).strip() or name
    if isinstance(exc, FileNotFoundError):
        return f"object not found: {msg}"
    if isinstance(exc, PermissionError):
        return f"access denied: {msg}"
    code = getattr(exc, "status", None) or getattr(exc, "code", None)
    if code in (401, 403):
        return f"access denied ({code}): {msg}"
    if code == 404:
        return f"object not found (404): {msg}"
    return f"cannot read ({name}): {msg}"


# --- discovery ---------------------------------------------------------------
def discover_url(src: str, exts: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Expand one URL source: a prefix is listed recursively (files with a video extension), a glob
    is matched, anything else is one input. Returns (urls, {url: error}) where a listing that failed
    becomes an error entry for ``src`` itself, so that it still gets a catalog row."""
    if src.lower().startswith(("http://", "https://")):
        return [src], {}
    try:
        fs, path = url_to_fs(src)
        fs.invalidate_cache()  # a long-lived process (a deployment) must see objects added since
        if _glob.has_magic(path):
            found = [p for p in fs.glob(path) if p.lower().endswith(exts) and not fs.isdir(p)]
        elif fs.isdir(path):
            found = [p for p in fs.find(path) if p.lower().endswith(exts)]
        else:
            return [src], {}  # one object (or a missing one: its probe records why)
    except Exception as exc:  # noqa: BLE001 - any listing failure is recorded, not raised
        return [src], {src: f"cannot list {src}: {describe_error(exc)}"}
    return sorted(fs.unstrip_protocol(p) for p in found), {}


def item_id(url: str) -> str:
    """The ingest step's identity of a remote input: URL, size and version tag (ETag/mtime), so a
    changed object is probed again. An unreachable one is ``url|missing``."""
    try:
        fs, path = url_to_fs(url)
        info = fs.info(path)
    except Exception:  # noqa: BLE001
        return f"{url}|missing"
    tag = next((str(info[k]) for k in ("ETag", "etag", "md5Hash", "LastModified", "mtime", "updated")
                if info.get(k)), "")
    return f"{url}|{info.get('size')}|{tag}"


# --- streaming reads ---------------------------------------------------------
class HashingReader:
    """A seekable read-only file over ``raw`` that sha256-hashes the object's bytes in order.

    Bytes read at the end of the hashed prefix extend the hash; reads elsewhere (a demuxer's
    seeks) do not. ``finish`` reads what is left in 1 MiB chunks and checks the total against
    ``size``: a connection that dropped mid-object is an ``OSError`` naming the bytes received.
    ``transport_error`` records the first failed read of ``raw`` (the demuxer only sees it as a
    failed read), so a caller can tell a dropped connection from bad data and try again.
    """

    CHUNK = 1 << 20

    def __init__(self, raw: BinaryIO, size: int | None) -> None:
        self.raw, self.size = raw, size
        self.hash = hashlib.sha256()
        self.hashed = 0  # bytes [0, hashed) are in the hash
        self.transport_error: str | None = None

    def read(self, n: int = -1) -> bytes:
        pos = self.raw.tell()
        try:
            data = self.raw.read(n)
        except ValueError:  # fsspec's "no range requests" and other misuse: trying again cannot help
            raise
        except Exception as exc:
            self.transport_error = self.transport_error or describe_error(exc)
            raise
        if pos <= self.hashed < pos + len(data):
            self.hash.update(data[self.hashed - pos :])
            self.hashed = pos + len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def finish(self) -> str:
        """The hex sha256 of the whole object (reads the unhashed rest in order)."""
        self.raw.seek(self.hashed)
        try:
            while self.read(self.CHUNK):
                if self.size is not None and self.hashed >= self.size:
                    break
        except Exception as exc:  # noqa: BLE001 - aiohttp/botocore errors are not OSErrors
            raise OSError(f"read failed at byte {self.hashed} of {self.size}: {describe_error(exc)}") from exc
        if self.size is not None and self.hashed != self.size:
            self.transport_error = self.transport_error or "short read"
            raise OSError(f"connection dropped after {self.hashed} of {self.size} bytes")
        return self.hash.hexdigest()


def open_input(url: str, block_size: int = 4 << 20) -> BinaryIO:
    """A seekable binary file object over a remote input (ranged reads, read-ahead cache)."""
    fs, path = url_to_fs(url)
    return fs.open(path, "rb", block_size=block_size, cache_type="readahead")


def av_open(path: str) -> Any:
    """``av.open`` of a local path, or of a streamed fsspec file for a URL (the container holds the
    file object; fsspec closes it when it is collected)."""
    import av

    if not is_url(path):
        return av.open(path)
    f = open_input(path)
    try:
        return av.open(f, mode="r")
    except BaseException:
        f.close()
        raise


def ffmpeg_input(url: str) -> str:
    """An input ffmpeg (and PyAV by name) can stream from: the URL itself for http(s), a signed
    https URL (``SIGN_EXPIRY_S``) for object stores that sign (S3, GCS).

    Raises:
        ValueError: for a protocol fsspec cannot sign into an http(s) URL.
    """
    if url.lower().startswith(("http://", "https://")):
        return url
    fs, path = url_to_fs(url)
    try:
        signed = fs.sign(path, expiration=SIGN_EXPIRY_S)
    except Exception as exc:  # noqa: BLE001 - NotImplementedError, anonymous access, ...
        raise ValueError(f"ffmpeg cannot stream {url}: signing a URL failed ({describe_error(exc)})") from exc
    if not str(signed).lower().startswith(("http://", "https://")):
        raise ValueError(f"ffmpeg cannot stream {url}: {fs.protocol} gave no http(s) URL")
    return str(signed)


# --- directories (shard exports and the loader) ----------------------------
class RemoteDir:
    """A directory-like fsspec URL with the ``pathlib.Path`` methods the shard loader uses."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.path = url_to_fs(self.url)

    def __truediv__(self, part: str) -> RemoteDir:
        return RemoteDir(f"{self.url}/{str(part).lstrip('/')}")

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemoteDir({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteDir) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def name(self) -> str:
        return self.url.rpartition("/")[2]

    @property
    def parent(self) -> RemoteDir:
        return RemoteDir(self.url.rpartition("/")[0])

    def exists(self) -> bool:
        return bool(self.fs.exists(self.path))

    def is_file(self) -> bool:
        return bool(self.fs.isfile(self.path))

    def is_dir(self) -> bool:
        return bool(self.fs.isdir(self.path))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.fs.cat_file(self.path).decode(encoding)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.fs.pipe_file(self.path, text.encode(encoding))

    def open(self, mode: str = "rb", block_size: int = 1 << 20) -> BinaryIO:
        if mode != "rb":
            raise ValueError("RemoteDir.open reads only ('rb')")
        return self.fs.open(self.path, "rb", block_size=block_size, cache_type="readahead")

    def resolve(self) -> RemoteDir:
        return self


def as_path(path: Any) -> Any:
    """``path`` as a ``RemoteDir`` when it is a URL, else a ``pathlib.Path``."""
    from pathlib import Path

    if isinstance(path, RemoteDir):
        return path
    return RemoteDir(path) if is_url(path) else Path(path)


def resolve_url(url: Any, manifest: str = "manifest.json") -> RemoteDir:
    """The version directory a remote export names: ``URL`` with a ``latest`` object gives
    ``URL/<hash>``; ``URL/<hash>`` (or any URL holding a manifest) gives itself.

    Raises:
        FileNotFoundError: if ``url`` holds neither ``latest`` nor the manifest.
    """
    d = url if isinstance(url, RemoteDir) else RemoteDir(url)
    if (d / manifest).is_file():
        return d
    latest = d / LATEST
    if latest.is_file():
        version = d / latest.read_text().strip()
        if (version / manifest).is_file():
            return version
        raise FileNotFoundError(f"{d}/latest names {version.name}, which has no {manifest}")
    raise FileNotFoundError(f"{d} has no {manifest} and no {LATEST} object: pass a shards URL "
                            "written by `vidloom export --out URL`")


def upload_version(local_version: str | os.PathLike[str], url: str, dataset: str) -> RemoteDir:
    """Copy a finished local version directory to ``URL/<dataset>/`` (skipped when that version is
    already there, manifest included), then point ``URL/latest`` at it: the manifest goes last, so
    a reader never finds a manifest whose shards are not all there."""
    root = RemoteDir(url)
    target = root / dataset
    manifest = "manifest.json"
    if not (target / manifest).is_file():
        base = os.fspath(local_version)
        files = sorted(_walk_files(base))
        for rel in [f for f in files if f != manifest] + [f for f in files if f == manifest]:
            target.fs.put_file(os.path.join(base, rel), (target / rel).path)
    (root / LATEST).write_text(dataset)
    return target


def _walk_files(base: str) -> Iterable[str]:
    for dirpath, _dirs, names in os.walk(base):
        for n in names:
            yield os.path.relpath(os.path.join(dirpath, n), base).replace(os.sep, "/")
