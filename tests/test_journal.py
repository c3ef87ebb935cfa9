"""The step journal: atomic Parquet parts, idempotent commits into a real DuckDB file, resume."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from curation.db import TABLE_COLUMNS, Catalog
from curation.schema import Caption, Clip, ClipScores, Video, row, short_hash
from pipelines.journal import TMP_PREFIX, StageKey, StepJournal, arrow_schema, done_rows, run_step
from pipelines.runner import RayRunner, Runner, SequentialRunner
from pipelines.stage import Stage

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


@dataclass(slots=True)
class Item:
    path: str
    size: int
    video: Video | None = None
    error: str | None = None


@dataclass
class Probe(Stage[Item, Item]):
    """Makes a Video of an item; a negative size fails, size 0 is dropped. Logs every call."""

    name: ClassVar[str] = "probe"
    calls_file: str = ""

    def process(self, task: Item) -> Item | None:
        with open(self.calls_file, "a") as f:
            f.write(task.path + "\n")
        if task.size < 0:
            raise ValueError(f"cannot read {task.path}")
        if task.size == 0:
            return None
        vid = short_hash(task.path)
        # duration_s/fps/codec stay None in every row: all-None Parquet columns must still insert.
        task.video = Video(vid, task.path, vid * 4, n_frames=task.size, width=64, height=48,
                           size_bytes=task.size)
        return task


def to_tables(task: Item) -> dict[str, list[dict[str, Any]]]:
    if task.error:
        vid = short_hash(task.path)
        return {"videos": [{"video_id": vid, "path": task.path, "sha256": "", "status": "error",
                            "error": task.error}]}
    assert task.video is not None
    return {"videos": [row(task.video)]}


KEY: StageKey = ("probe", 1, "p0")
ITEMS = [Item(f"/v/{i}.mp4", i + 1) for i in range(6)] + [Item("/v/bad.mp4", -1), Item("/v/empty.mp4", 0)]


class Killed(BaseException):
    """Stands in for SIGKILL of the driver in the middle of a step."""


def step(tmp: Path, runner: Runner, catalog: Catalog, kill_after: int | None = None,
         calls_name: str = "calls.txt", **kw: Any) -> dict[str, int]:
    tmp.mkdir(parents=True, exist_ok=True)
    calls = tmp / calls_name
    seen: list[str] = []

    def tables(task: Item) -> dict[str, list[dict[str, Any]]]:
        if kill_after is not None and len(seen) == kill_after:
            raise Killed
        seen.append(task.path)
        return to_tables(task)

    items = [Item(i.path, i.size) for i in ITEMS]
    return run_step(catalog, StepJournal(tmp / "work", "probe"), runner, [Probe(str(calls))], items,
                    item_id=lambda t: t.path, to_tables=tables, stage_key=KEY, **kw)


def n_calls(tmp: Path, calls_name: str = "calls.txt") -> int:
    f = tmp / calls_name
    return len(f.read_text().splitlines()) if f.exists() else 0


def snapshot(catalog: Catalog) -> dict[str, list[tuple[Any, ...]]]:
    return {t: sorted(catalog.query(f"SELECT {', '.join(cols)} FROM {t}")[1], key=repr)
            for t, cols in TABLE_COLUMNS.items()}


@pytest.fixture(scope="module")
def ray_runner(ray_cluster: object) -> RayRunner:
    return RayRunner()  # joins the session's local cluster (tests/conftest.py)


@pytest.fixture(params=["sequential", "ray"])
def runner(request: pytest.FixtureRequest) -> Runner:
    if request.param == "ray":
        return request.getfixturevalue("ray_runner")
    return SequentialRunner()


def test_arrow_schema_types_every_catalog_column() -> None:
    for table, cols in TABLE_COLUMNS.items():
        assert tuple(arrow_schema(table).names) == cols


def test_part_is_atomic_and_temp_dirs_are_ignored(tmp_path: Path) -> None:
    journal = StepJournal(tmp_path, "ingest")
    journal.write_part("a", {"stage_done": done_rows(("s", 1, "h"), ["a"])})
    leftover = journal.dir / f"{TMP_PREFIX}b-1234"  # a writer killed before its rename
    leftover.mkdir()
    (leftover / "videos.parquet").write_bytes(b"PAR1 truncated")
    assert [p.name for p in journal.pending_parts()] == ["a"]
    assert not leftover.exists()
    journal.write_part("a", {"stage_done": done_rows(("s", 1, "h"), ["a2"])})
    assert [p.name for p in journal.dir.iterdir()] == ["a"]  # same id replaces, never duplicates
    with Catalog(tmp_path / "catalog.duckdb") as cat:
        assert journal.commit(cat) == 1
        assert cat.done_items("s", 1, "h") == {"a2"}
    assert journal.pending_parts() == []


def test_none_only_columns_and_json_round_trip(tmp_path: Path) -> None:
    bare = Video("v0", "/x.mp4", "s" * 64, status="error", error="moov atom not found")
    clip = Clip("c0", "v0", 0, 0, 10, 0.0, 0.4, 64, 48, 25.0)  # every score None
    scored = Clip("c1", "v0", 0, 10, 20, 0.4, 0.8, 64, 48, 25.0, scores=ClipScores(blur=0.5, ocr_text="hi"))
    journal = StepJournal(tmp_path, "s")
    journal.write_part("p0", {"videos": [row(bare)], "clips": [row(clip)]})
    journal.write_part("p1", {"clips": [row(scored)],
                              "captions": [row(Caption("c1", "en", "t")) | {"checks": {"ok": True}}]})
    with Catalog(tmp_path / "catalog.duckdb") as cat:
        journal.commit(cat)
        assert cat.videos() == [bare]
        assert cat.clips() == [clip, scored]
        assert cat.query("SELECT checks FROM captions")[1] == [('{"ok": true}',)]


def test_commit_is_idempotent(tmp_path: Path) -> None:
    rows = {"videos": [row(Video(f"v{i}", f"/{i}.mp4", "s")) for i in range(3)]}
    journal = StepJournal(tmp_path, "s")
    with Catalog(tmp_path / "catalog.duckdb") as cat:
        journal.write_part("p", rows)
        journal.commit(cat)
        first = snapshot(cat)
        journal.write_part("p", rows)  # killed after the transaction, before the parts were deleted
        journal.commit(cat)
        assert snapshot(cat) == first
        assert len(first["videos"]) == 3


def test_run_step_records_errors_and_drops_and_skips_done(tmp_path: Path, runner: Runner) -> None:
    with Catalog(tmp_path / "catalog.duckdb") as cat:
        counts = step(tmp_path, runner, cat)
        assert counts | {"recovered": 0} == {"recovered": 0, "skipped": 0, "submitted": 8, "written": 7,
                                             "errors": 1, "dropped": 1, "parts": 8}
        assert n_calls(tmp_path) == 8
        assert cat.query("SELECT status, error FROM videos WHERE path = '/v/bad.mp4'")[1] == [
            ("error", "probe: ValueError: cannot read /v/bad.mp4")]
        assert cat.done_items(*KEY) == {i.path for i in ITEMS}
        again = step(tmp_path, runner, cat)
        assert n_calls(tmp_path) == 8  # nothing recomputed
        assert again["skipped"] == 8 and again["written"] == 0


def test_retry_errors_leaves_failed_items_undone(tmp_path: Path) -> None:
    with Catalog(tmp_path / "catalog.duckdb") as cat:
        step(tmp_path, SequentialRunner(), cat, retry_errors=True)
        assert "/v/bad.mp4" not in cat.done_items(*KEY)
        step(tmp_path, SequentialRunner(), cat, retry_errors=True)
        assert n_calls(tmp_path) == 8 + 1  # only the failed item ran again
        assert cat.query("SELECT count(*) FROM videos")[1] == [(7,)]


@pytest.mark.parametrize("batch_parts", [1, 3])
def test_run_step_resumes_after_kill(tmp_path: Path, runner: Runner, batch_parts: int) -> None:
    with Catalog(tmp_path / "clean.duckdb") as clean:
        step(tmp_path / "clean", runner, clean, batch_parts=batch_parts)
        expected = snapshot(clean)
    with Catalog(tmp_path / "crash.duckdb") as cat:
        with pytest.raises(Killed):
            step(tmp_path / "crash", runner, cat, kill_after=3, batch_parts=batch_parts)
        parts = StepJournal(tmp_path / "crash" / "work", "probe").pending_parts()
        assert len(parts) == 3 // batch_parts and cat.done_items(*KEY) == set()  # written, not committed
        # A fresh call log: Ray workers of the killed run may still finish a task in flight.
        counts = step(tmp_path / "crash", runner, cat, batch_parts=batch_parts, calls_name="rerun.txt")
        assert counts["recovered"] == len(parts)
        assert counts["skipped"] == 3
        assert n_calls(tmp_path / "crash", "rerun.txt") == len(ITEMS) - 3
        assert snapshot(cat) == expected


def test_second_output_for_one_item_is_refused(tmp_path: Path) -> None:
    @dataclass
    class Twice(Stage[Item, Item]):
        name: ClassVar[str] = "twice"

        def process(self, task: Item) -> list[Item]:
            return [task, Item(task.path, task.size)]

    with Catalog(tmp_path / "catalog.duckdb") as cat, pytest.raises(ValueError, match="exactly one task"):
        run_step(cat, StepJournal(tmp_path, "twice"), SequentialRunner(), [Twice()], [Item("/a", 1)],
                 item_id=lambda t: t.path, to_tables=lambda t: {}, stage_key=("twice", 1, "h"))
