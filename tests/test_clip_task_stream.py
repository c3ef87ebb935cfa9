"""Clip tasks stream out of the catalog a page at a time (pipelines/score_step.iter_clip_tasks), so
the driver's memory does not grow with the number of clips; the stream is the same set of tasks as
the list, and a step may commit between pages."""

from __future__ import annotations

import itertools
from pathlib import Path

from curation import schema
from curation.db import Catalog
from pipelines.score_step import clip_tasks_from_catalog, iter_clip_tasks

SPLIT = "s1"


def catalog(path: Path, n: int) -> Catalog:
    cat = Catalog(path)
    videos = [schema.Video(f"v{i}", f"/videos/{i}.mp4", f"sha{i}", width=640 + i, height=360)
              for i in range(3)]
    cat.upsert_objects("videos", videos)
    clips = [schema.Clip(f"c{k:05d}", f"v{k % 3}", 0, k, k + 25, k / 25, k / 25 + 1, 320, 180, 25.0,
                         n_frames=25, split_hash=SPLIT) for k in range(n)]
    clips.append(schema.Clip("other", "v0", 0, 0, 25, 0.0, 1.0, 320, 180, 25.0, n_frames=25, split_hash="s2"))
    cat.upsert_objects("clips", clips)
    return cat


def test_the_stream_reads_one_page_at_a_time_and_yields_every_clip_once(tmp_path: Path) -> None:
    with catalog(tmp_path / "catalog.duckdb", 250) as cat:
        frames = tmp_path / "frames"
        stream = iter_clip_tasks(cat, frames, SPLIT, page=64, source_size=True)
        first = list(itertools.islice(stream, 64))
        assert [t.clip.clip_id for t in first] == [f"c{k:05d}" for k in range(64)]
        # the first page is all that has been read: a clip added now, after it, still comes
        cat.upsert_objects("clips", [schema.Clip("c00063z", "v0", 0, 0, 25, 0.0, 1.0, 320, 180, 25.0,
                                                 n_frames=25, split_hash=SPLIT)])
        rest = list(stream)
        assert rest[0].clip.clip_id == "c00063z"
        ids = [t.clip.clip_id for t in first + rest]
        assert ids == sorted(ids) and len(ids) == len(set(ids)) == 251  # the other split's clip: none
        listed = clip_tasks_from_catalog(cat, frames, SPLIT, source_size=True)
        assert [(t.clip.clip_id, t.src_path, t.frames_dir, t.clip.width) for t in listed] == \
            [(t.clip.clip_id, t.src_path, t.frames_dir, t.clip.width) for t in first + rest]
        assert first[1].src_path == "/videos/1.mp4" and first[1].clip.width == 641  # the source's size
        assert first[1].frames_dir == str(frames / "v1")


def test_a_filter_with_parameters_and_rows_written_between_pages(tmp_path: Path) -> None:
    with catalog(tmp_path / "catalog.duckdb", 100) as cat:
        wanted = [f"c{k:05d}" for k in range(0, 100, 7)]
        stream = iter_clip_tasks(cat, tmp_path, SPLIT, "c.clip_id IN (SELECT unnest(?))", [wanted], page=4)
        got = [next(stream).clip.clip_id for _ in range(4)]
        # a step commits what it has done between two pages: the next page still follows on
        cat.update_columns("clips", [{"clip_id": c, "status": "kept"} for c in got])
        got += [t.clip.clip_id for t in stream]
        assert got == wanted
