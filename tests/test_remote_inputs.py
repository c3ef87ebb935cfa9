"""Object-store and remote inputs (pipelines/remote.py, remote_inputs.py, remote_export.py).

A real S3-protocol server (moto in server mode, 127.0.0.1, a free port) holds the inputs, a
manifest and the exported shards; a small local HTTP server serves a good file with Range
support, a forbidden one (403) and one whose connection drops after a few kilobytes. The curate
run ingests all of them: the good ones are streamed (hash = the local file's sha256), every bad
one leaves a files/videos row with its error, and the run goes on to shots and clips. The shards
are exported to the bucket and a tiny training run reads them back from there.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.train_shards import make_mp4

pytestmark = pytest.mark.usefixtures("one_thread")

DROP_AFTER = 20_000  # bytes the dropping server sends before it closes the connection
BUCKET = "vidloom-in"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    """A moto S3 server on 127.0.0.1; the AWS env vars point s3fs at it. Yields the s3fs filesystem."""
    pytest.importorskip("moto")
    import s3fs
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    mp = pytest.MonkeyPatch()
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        mp.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "FSSPEC_S3_ENDPOINT_URL"):
        mp.delenv(k, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir(BUCKET)
    try:
        yield fs
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        mp.undo()
        server.stop()


class _Handler(BaseHTTPRequestHandler):
    root: Path
    served: dict[str, int]
    dropped: set[str]  # flaky/<name>: the first GET of each name drops, later ones are served

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, head_only: bool) -> None:
        kind, _, name = self.path.lstrip("/").partition("/")
        f = self.root / name
        if kind == "forbidden":
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if not f.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = f.read_bytes()
        start, end = 0, len(data) - 1
        rng = None if kind == "norange" else self.headers.get("Range")  # norange: always 200, whole
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start, end = int(a or 0), min(int(b) if b else len(data) - 1, len(data) - 1)
        body = data[start : end + 1]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if head_only:
            return
        flaky = kind == "flaky" and name not in self.dropped
        if flaky:
            self.dropped.add(name)
        if kind == "drop" or flaky:  # promise the whole body, send a few KB, hang up
            self.wfile.write(body[: max(0, DROP_AFTER - start)])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.served[name] = self.served.get(name, 0) + len(body)
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(head_only=True)

    def do_GET(self) -> None:  # noqa: N802
        self._send(head_only=False)


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict[str, int]]]:
    """(base URL, directory served, bytes served per name) of a local HTTP server."""
    root = tmp_path_factory.mktemp("http")
    handler = type("Handler", (_Handler,), {"root": root, "served": {}, "dropped": set()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, handler.served
    finally:
        server.shutdown()
        server.server_close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- units


def test_hashing_reader_hashes_in_one_pass_while_the_demuxer_seeks(tmp_path: Path) -> None:
    """The probe's reads (moov at the end: the demuxer seeks) feed the hash; ``finish`` then reads
    only the bytes the probe never reached, once, and the digest is the file's sha256."""
    import av

    from curation.schema import Video
    from pipelines.probe import fill_from_container as _fill
    from pipelines.remote import HashingReader

    path = tmp_path / "v.mp4"
    data = make_mp4(path, "320x180", 400, 30)  # more packets than the probe demuxes

    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, n: int | None = -1) -> bytes:
            out = super().read(n)
            Counting.read_bytes += len(out)
            return out

    reader = HashingReader(Counting(data), len(data))
    v = Video(video_id="", path="x", sha256="")
    with av.open(reader, mode="r") as container:  # type: ignore[arg-type]
        assert _fill(v, container) is None
    assert v.n_frames == 400
    hashed_by_probe, read_by_probe = reader.hashed, Counting.read_bytes
    assert 0 < hashed_by_probe < len(data)
    assert reader.finish() == hashlib.sha256(data).hexdigest()
    assert Counting.read_bytes - read_by_probe == len(data) - hashed_by_probe  # nothing read twice

    short = HashingReader(io.BytesIO(data[:1000]), len(data))
    with pytest.raises(OSError, match=f"dropped after 1000 of {len(data)} bytes"):
        short.finish()


def test_redact_cuts_signatures_and_describe_error_names_the_failure() -> None:
    from pipelines.remote import describe_error, redact

    msg = redact("ffmpeg: http://h:1/b/k.mp4?AWSAccessKeyId=A&Signature=S%2B&Expires=1: 404")
    assert "Signature" not in msg and "http://h:1/b/k.mp4?…" in msg
    assert describe_error(FileNotFoundError("b/k")).startswith("object not found")
    assert describe_error(PermissionError("b/k")).startswith("access denied")


def test_manifest_rows_carry_metadata_and_resolve_relative_entries(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.remote_inputs import discover_sources

    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a b.mp4").write_bytes(b"x")
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"url": "clips/a b.mp4", "license": "cc-by", "views": 3}) + "\n"
        + json.dumps({"url": "s3://b/k.mp4", "license": None}) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"path": ["s3://b/p.mp4"], "caption": ["街景"]}), tmp_path / "m.parquet")
    (tmp_path / "bad.csv").write_text("name,size\nx,1\n", encoding="utf-8")
    got = discover_sources([str(tmp_path / n) for n in ("m.jsonl", "m.parquet", "bad.csv")], (".mp4",))
    local = str(tmp_path / "clips" / "a b.mp4")
    assert set(got.paths) == {local, "s3://b/k.mp4", "s3://b/p.mp4", str(tmp_path / "bad.csv")}
    assert got.meta[local] == {"license": "cc-by", "views": 3, "manifest": str(tmp_path / "m.jsonl")}
    assert got.meta["s3://b/p.mp4"]["caption"] == "街景"
    assert "license" not in got.meta["s3://b/k.mp4"]  # a null is no metadata
    assert got.errors[str(tmp_path / "bad.csv")].startswith("bad manifest: no URL column")


# --------------------------------------------------------------------------- end to end


def test_curate_from_a_bucket_export_to_a_bucket_and_train_from_it(
        s3: Any, http: tuple[str, Path, dict[str, int]], tmp_path: Path) -> None:
    from curation.db import Catalog
    from pipelines.dataset_versions import pinned
    from training.config import load_train_config
    from training.data import ShardDataset
    from training.loop.run import train
    from vidloom.cli import main

    base_url, http_root, served = http
    src = tmp_path / "src"
    src.mkdir()
    local = {}
    for i, name in enumerate(["v0.mp4", "sub/v1 街景.mp4"]):
        p = src / name
        p.parent.mkdir(exist_ok=True)
        make_mp4(p, "320x180", 50, 90 * i)
        s3.put_file(str(p), f"{BUCKET}/in/{name}")
        local[f"s3://{BUCKET}/in/{name}"] = p
    listed = f"s3://{BUCKET}/listed.mp4"  # named by the manifest only, with metadata
    make_mp4(src / "listed.mp4", "320x180", 40, 200)
    s3.put_file(str(src / "listed.mp4"), listed.removeprefix("s3://"))
    local[listed] = src / "listed.mp4"
    s3.pipe_file(f"{BUCKET}/manifest.csv", (
        f"url,license,source\n{listed},cc-by,camera-7\ns3://{BUCKET}/gone.mp4,cc0,lost\n").encode())
    make_mp4(http_root / "web.mp4", "320x180", 40, 300)
    local[f"{base_url}/ok/web.mp4"] = http_root / "web.mp4"
    local[f"{base_url}/flaky/big.mp4"] = http_root / "big.mp4"  # dropped once, then read whole
    make_mp4(http_root / "big.mp4", "640x360", 120, 10)
    padded = (http_root / "big.mp4").read_bytes()  # + a 5 MiB mp4 'free' box: past the read-ahead block
    (http_root / "padded.mp4").write_bytes(padded + (8 + (5 << 20)).to_bytes(4, "big") + b"free"
                                           + bytes(5 << 20))
    assert (http_root / "big.mp4").stat().st_size > 3 * DROP_AFTER
    bad = {
        f"s3://{BUCKET}/gone.mp4": "object not found",
        f"{base_url}/forbidden/web.mp4": "access denied",
        f"{base_url}/drop/big.mp4": "read failed at byte",
        "nosuchproto://host/x.mp4": "Protocol not known",
        f"{base_url}/norange/padded.mp4": "doesn't appear to support range requests",
    }

    out = tmp_path / "out"
    sources = [f"s3://{BUCKET}/in/", f"s3://{BUCKET}/manifest.csv", f"{base_url}/ok/web.mp4",
               f"{base_url}/flaky/big.mp4",
               *[u for u in bad if "gone" not in u]]
    assert main(["curate", *sources, "--out", str(out), "--preset", "tiny", "--no-prefect",
                 "--runner", "sequential", "--quiet"]) == 0

    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        videos = {r["path"]: r for r in cat.dicts("SELECT * FROM videos")}
        files = {r["path"]: r for r in cat.dicts("SELECT * FROM files")}
        shots = dict(cat.query("SELECT video_id, count(*) FROM shots GROUP BY 1")[1])
        n_clips = cat.query("SELECT count(*) FROM clips")[1][0][0]
        license_ = cat.query("SELECT source_meta->>'license' FROM videos WHERE path = ?", [listed])[1]
    assert license_ == [("cc-by",)]  # queryable as JSON
    for url, p in local.items():
        v = videos[url]
        assert v["status"] == "ok", (url, v["error"])
        assert v["sha256"] == _sha(p) and v["size_bytes"] == p.stat().st_size  # identity = content
        assert files[url]["status"] == "ok" and shots.get(v["video_id"], 0) >= 1
    assert json.loads(videos[listed]["source_meta"]) == {
        "license": "cc-by", "source": "camera-7", "manifest": f"s3://{BUCKET}/manifest.csv"}
    assert json.loads(videos[f"s3://{BUCKET}/gone.mp4"]["source_meta"])["source"] == "lost"
    for url, reason in bad.items():
        assert videos[url]["status"] == "error" and reason in videos[url]["error"], videos[url]["error"]
        assert files[url]["status"] == "error" and reason in files[url]["error"]
    drop_error = videos[f"{base_url}/drop/big.mp4"]["error"]
    assert f"received {DROP_AFTER} of" in drop_error and drop_error.endswith("(3 attempts)")
    assert n_clips >= len(local)  # the run went on past the bad inputs
    assert not any(p.suffix == ".mp4" and p.stat().st_size in {q.stat().st_size for q in local.values()}
                   for p in (out / ".work").rglob("*") if p.is_file())  # no local copy of a source

    shards = f"s3://{BUCKET}/shards"
    assert main(["export", str(out / "catalog.duckdb"), "--where", "TRUE", "--out", shards]) == 0
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:  # cut by ffmpeg streaming the sources
        assert cat.query("SELECT clip_id, extract_error FROM clips WHERE extract_error IS NOT NULL")[1] == []
    dataset = s3.cat_file(f"{BUCKET}/shards/latest").decode().strip()
    manifest = json.loads(s3.cat_file(f"{BUCKET}/shards/{dataset}/manifest.json"))
    assert manifest["n_samples"] == n_clips and manifest["dataset_hash"] == dataset
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        rows = cat.dicts("SELECT shard, export_root, sha256 FROM shards WHERE export_root LIKE 's3:%'")
        clip_ids = {r[0] for r in cat.query("SELECT clip_id FROM clips")[1]}
    assert rows and all(r["export_root"] == shards and r["shard"].startswith(f"{shards}/{dataset}/")
                        for r in rows)
    for r in rows:  # the bucket holds exactly the bytes the catalog describes
        assert hashlib.sha256(s3.cat_file(r["shard"])).hexdigest() == r["sha256"]
    stage = out / ".work" / "export-stage"
    assert not stage.exists() or not any(stage.iterdir())  # the local staging copy is gone
    objects = {p: s3.info(p)["LastModified"] for p in s3.find(f"{BUCKET}/shards/{dataset}")}
    time.sleep(1.1)  # LastModified counts whole seconds
    assert main(["export", str(out / "catalog.duckdb"), "--where", "TRUE", "--out", shards]) == 0
    s3.invalidate_cache()
    again = {p: s3.info(p)["LastModified"] for p in s3.find(f"{BUCKET}/shards/{dataset}")}
    assert again == objects  # the version already in the bucket is not uploaded again

    ds = ShardDataset(shards, n_frames=5, fps=8.0, size=(32, 64))
    assert ds.dataset == dataset and len(ds) == n_clips
    assert pinned(shards, dataset) == ds.root  # a resume finds its version in the bucket
    with pytest.raises(FileNotFoundError, match="is gone"):
        pinned(shards, "0" * 64)
    sample = ds.get(0)
    assert sample["key"] in clip_ids and tuple(sample["video"].shape) == (3, 5, 32, 64)

    overrides = ["num_workers=0", "eval_samples=1", "warmup_steps=1", "ckpt_every=100", "log_every=1",
                 "vae_stage={name: vae, n_frames: 5, size: [32, 64], global_batch: 2}",
                 "stages=[{name: video, fraction: 1.0, n_frames: 5, size: [32, 64], global_batch: 2}]",
                 "vae_steps=1", "steps=2"]
    summary = train(load_train_config("tiny", None, overrides), shards, tmp_path / "run", progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if line]
    assert [r["step"] for r in log] == [1, 2]
    assert {k for r in log for k in r["keys"]} <= clip_ids
    assert Path(summary["checkpoint"]).exists()
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")


def test_s3_access_denied_is_an_error_row_and_a_failed_listing_too(s3: Any, tmp_path: Path) -> None:
    """With IAM checks on in the moto server, the test's keys are unknown: the probe and the prefix
    listing both end in an 'access denied' row instead of an exception."""
    from moto.core.authorization import enable_iam_authentication

    from pipelines.remote_inputs import discover_sources
    from pipelines.stages.ingest import probe_video

    make_mp4(tmp_path / "p.mp4", "320x180", 20, 0)
    s3.put_file(str(tmp_path / "p.mp4"), f"{BUCKET}/private/p.mp4")
    s3.invalidate_cache()
    with enable_iam_authentication():
        v = probe_video(f"s3://{BUCKET}/private/p.mp4")
        listed = discover_sources([f"s3://{BUCKET}/private/"], (".mp4",))
    assert v.status == "error" and v.error.startswith("access denied"), v.error
    assert v.video_id and v.path == f"s3://{BUCKET}/private/p.mp4"
    assert listed.paths == [f"s3://{BUCKET}/private/"]
    assert "access denied" in listed.errors[f"s3://{BUCKET}/private/"]
