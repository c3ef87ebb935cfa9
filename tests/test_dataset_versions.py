"""Immutable dataset versions: real exports from a real DuckDB catalog of real mp4 clips.

Every export is a new ``DIR/<hash>/`` and ``DIR/latest`` moves atomically; no file of an earlier
version changes; an identical export is a no-op; only ``vidloom gc`` deletes; the training loader
pins the version it started on, also across a resume after ``latest`` moved.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from curation import schema
from curation.db import Catalog
from pipelines import dataset_versions as dv
from pipelines.config import tiny
from pipelines.export_step import export
from pipelines.runner import SequentialRunner
from samplegen.synthetic_shards import make_mp4
from training.data.loader import StreamingLoader

N_CLIPS = 10


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/catalog.duckdb`` with N_CLIPS kept 64x48 clips (files under root/clips) and one 48x64."""
    root = tmp_path_factory.mktemp("cat")
    (root / "clips" / "v").mkdir(parents=True)
    clips = []
    for i in range(N_CLIPS + 1):
        size, frames = ("48x64", 12) if i == N_CLIPS else ("64x48", 10 + i % 4)
        w, h = (int(v) for v in size.split("x"))
        cid = f"c{i:02d}"
        make_mp4(root / "clips" / "v" / f"{cid}.mp4", size, frames, i * 30)
        clips.append(schema.Clip(cid, "v", i, 0, frames, 0.0, frames / 25, w, h, 25.0,
                                 path=f"clips/v/{cid}.mp4", n_frames=frames))
    with Catalog(root / "catalog.duckdb") as cat:
        cat.upsert("clips", [schema.clip_row(c) for c in clips])
    return root


def do_export(root: Path, out: Path, ids: list[str]) -> dict[str, Any]:
    cfg = tiny()
    cfg.shards.target_bytes = 20_000  # several shards per bucket
    cfg.shards.with_first_frame = False
    with Catalog(root / "catalog.duckdb") as cat:
        return export(root, cfg, SequentialRunner(), cat, ids, out, f"ids {ids[0]}..{ids[-1]}")


def files_of(version: Path) -> dict[str, tuple[bytes, int, int]]:
    """relative path -> (bytes, mtime_ns, inode) of every file of a version."""
    return {p.relative_to(version).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino)
            for p in sorted(version.rglob("*")) if p.is_file()}


IDS_A = [f"c{i:02d}" for i in range(N_CLIPS)]
IDS_B = IDS_A[1:]  # one clip less: every shard of the bucket shifts (an in-place rewrite breaks readers)


def test_versions_are_immutable_latest_switches_and_identical_export_is_a_noop(
        catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    a = do_export(catalog, out, IDS_A)
    ver_a = out / a["dataset"]
    assert a["new_version"] and Path(a["version"]) == ver_a and (ver_a / "manifest.json").is_file()
    assert os.readlink(out / "latest") == a["dataset"]  # relative link
    before = files_of(ver_a)
    assert len([k for k in before if k.endswith(".tar")]) > 2

    b = do_export(catalog, out, IDS_B + [f"c{N_CLIPS:02d}"])  # another selection: a new version
    assert b["new_version"] and b["dataset"] != a["dataset"]
    assert os.readlink(out / "latest") == b["dataset"] and dv.resolve(out) == (out / b["dataset"]).resolve()
    assert files_of(ver_a) == before  # bytes, mtimes and inodes of A untouched
    with Catalog(catalog / "catalog.duckdb", read_only=True) as cat:  # the catalog describes latest
        rows = cat.dicts("SELECT * FROM shards WHERE export_root = ?", [str(out.resolve())])
    assert {r["dataset"] for r in rows} == {b["dataset"]}
    assert all(Path(r["path"]).is_relative_to((out / b["dataset"]).resolve()) for r in rows)
    assert sum(r["n_samples"] for r in rows) == len(IDS_B) + 1 == b["samples"]

    again = do_export(catalog, out, IDS_A)  # the first selection again: nothing written, latest back
    assert again["dataset"] == a["dataset"] and not again["new_version"]
    assert os.readlink(out / "latest") == a["dataset"]
    assert files_of(ver_a) == before
    with Catalog(catalog / "catalog.duckdb", read_only=True) as cat:
        rows = cat.dicts("SELECT dataset, path FROM shards WHERE export_root = ?", [str(out.resolve())])
    assert {r["dataset"] for r in rows} == {a["dataset"]} and all(Path(r["path"]).is_file() for r in rows)
    assert sorted(p.name for p in out.iterdir()) == sorted([a["dataset"], b["dataset"], "latest"])


def test_equal_shards_are_hard_linked_from_the_previous_version(catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    a = do_export(catalog, out, IDS_A)
    b = do_export(catalog, out, IDS_A + [f"c{N_CLIPS:02d}"])  # A plus a clip in another bucket
    fa, fb = files_of(out / a["dataset"]), files_of(out / b["dataset"])
    shared = [k for k in fa if k.endswith(".tar")]
    assert shared and all(fb[k][2] == fa[k][2] for k in shared)  # same inode, not rewritten
    assert len(fb) == len(fa) + 1  # and the new bucket's shard
    assert dv.gc(out, keep=1) == [out / a["dataset"]]  # A goes; B's links to the same bytes stay
    assert files_of(out / b["dataset"]) == fb


def test_gc_keeps_latest_and_the_newest(catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    a = do_export(catalog, out, IDS_A)
    b = do_export(catalog, out, IDS_B)
    do_export(catalog, out, IDS_A)  # latest back at A: A is the newest version now
    dead = out / f"{dv.STAGING_PREFIX}{dv._host()}-999999999-dead"  # a killed export's staging directory
    dead.mkdir()
    other = out / f"{dv.STAGING_PREFIX}otherhost-12-beef"  # another host's export, maybe still going
    other.mkdir()
    res = subprocess.run([str(Path(os.sys.executable).parent / "vidloom"), "gc", str(out), "--dry-run"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert b["dataset"] in res.stdout and (out / b["dataset"]).is_dir() and dead.is_dir()
    with pytest.raises(ValueError):
        dv.gc(out, keep=0)
    removed = dv.gc(out, keep=1)
    assert sorted(removed) == sorted([out / b["dataset"], dead]) and other.is_dir()
    assert [v.dataset for v in dv.versions(out)] == [a["dataset"]] and dv.resolve(out).name == a["dataset"]
    assert dv.gc(out, keep=1) == []  # the version latest points at is never collected


def read_all(loader: StreamingLoader, stop_after: int | None = None) -> list[tuple[str, torch.Tensor]]:
    got = []
    for micro in loader.global_batches():
        got += [(k, v) for mb in micro for k, v in zip(mb["key"], mb["video"], strict=True)]
        if stop_after is not None and len(got) >= stop_after:
            break
    return got


def make_loader(path: Path, workers: int = 0) -> StreamingLoader:
    return StreamingLoader(path, seed=3, global_batch=2, n_canonical=3, n_frames=4, fps=12.5,
                           num_workers=workers)


def same(x: list[tuple[str, torch.Tensor]], y: list[tuple[str, torch.Tensor]]) -> bool:
    if [k for k, _ in x] != [k for k, _ in y]:
        return False
    return all(torch.equal(a, b) for (_, a), (_, b) in zip(x, y, strict=True))


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_mid_epoch_reads_its_version_while_another_is_exported(
        catalog: Path, tmp_path: Path, workers: int) -> None:
    out = tmp_path / "shards"
    a = do_export(catalog, out, IDS_A)
    reference = read_all(make_loader(out / a["dataset"]))  # an uninterrupted epoch on A
    assert len(reference) == N_CLIPS

    loader = make_loader(out / "latest", workers)
    batches = loader.global_batches()
    got = [(k, v) for micro in [next(batches), next(batches)] for mb in micro
           for k, v in zip(mb["key"], mb["video"], strict=True)]
    b = do_export(catalog, out, IDS_B)  # B lands in the same DIR mid-epoch
    assert dv.resolve(out).name == b["dataset"] != a["dataset"]
    for micro in batches:
        got += [(k, v) for mb in micro for k, v in zip(mb["key"], mb["video"], strict=True)]
    assert same(got, reference)
    assert loader.state_dict()["dataset"] == a["dataset"]


def test_resume_reads_the_pinned_version_after_latest_moved(catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    a = do_export(catalog, out, IDS_A)
    reference = read_all(make_loader(out))
    first = make_loader(out)
    head = read_all(first, stop_after=4)
    state = first.state_dict()
    assert state["dataset"] == a["dataset"] and state["samples_seen"] == 4
    b = do_export(catalog, out, IDS_B)

    resumed = make_loader(out)  # resolves to B now...
    assert resumed.dataset.dataset == b["dataset"]
    resumed.load_state_dict(state)  # ...and the state takes it back to A
    assert resumed.dataset.root == (out / a["dataset"]).resolve()
    assert same(head + read_all(resumed), reference)

    dv.gc(out, keep=1)  # A is not latest: collected
    with pytest.raises(FileNotFoundError, match="gc"):
        make_loader(out).load_state_dict(state)


def test_an_export_into_a_version_is_refused(catalog: Path, tmp_path: Path) -> None:
    a = do_export(catalog, tmp_path / "shards", IDS_A)
    with pytest.raises(ValueError, match="immutable"):
        do_export(catalog, tmp_path / "shards" / "latest", IDS_B)
    assert dv.resolve(tmp_path / "shards").name == a["dataset"]


RANKS_SCRIPT = """
import os, sys, torch.distributed as tdist
from training.data.loader import StreamingLoader
tdist.init_process_group("gloo")
rank = tdist.get_rank()
path = sys.argv[1 + rank]  # as if latest had moved between the ranks' starts
loader = StreamingLoader(path, seed=3, global_batch=2, n_canonical=3, n_frames=4, fps=12.5, rank=rank,
                         world_size=2)
os.write(1, f"PINNED {rank} {loader.dataset.dataset}\\n".encode())  # one write: the ranks share stdout
tdist.destroy_process_group()
"""


def test_every_rank_pins_rank_zeros_version(catalog: Path, tmp_path: Path) -> None:
    """Two real gloo ranks started on different versions (an export landed between them) read one."""
    out = tmp_path / "shards"
    a, b = do_export(catalog, out, IDS_A), do_export(catalog, out, IDS_B)
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    res = subprocess.run([*run, str(script), str(out / a["dataset"]), str(out / b["dataset"])],
                         capture_output=True, text=True, timeout=180, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    pinned = sorted(line.split()[1:] for line in res.stdout.splitlines() if line.startswith("PINNED"))
    assert pinned == [["0", a["dataset"]], ["1", a["dataset"]]]
