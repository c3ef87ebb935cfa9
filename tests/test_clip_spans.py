import pytest

from pipelines.clip_spans import clip_spans


def test_short_shot_is_one_trimmed_span() -> None:
    assert clip_spans(100, 160, 25.0, min_s=1, max_s=4, stride_s=4, trim_start_frames=2,
                      trim_end_frames=3) == [(102, 157)]


def test_long_shot_is_windowed_and_tail_kept_for_the_filter() -> None:
    spans = clip_spans(0, 250, 25.0, min_s=2, max_s=4, stride_s=4)
    assert spans == [(0, 100), (100, 200), (200, 250)]
    assert all(b - a <= 100 for a, b in spans)


def test_overlapping_stride() -> None:
    spans = clip_spans(0, 150, 25.0, min_s=1, max_s=4, stride_s=2)
    assert spans == [(0, 100), (50, 150)]


def test_tiny_shot_survives_as_span() -> None:
    # a 3-frame shot is shorter than its trims: it keeps its frames so the filter can record it
    assert clip_spans(10, 13, 30.0, min_s=1, max_s=4, stride_s=4, trim_start_frames=2,
                      trim_end_frames=2) == [(10, 13)]


def test_invalid_params_raise() -> None:
    with pytest.raises(ValueError):
        clip_spans(0, 10, 0.0, 1, 4, 4)
    with pytest.raises(ValueError):
        clip_spans(0, 10, 25.0, 5, 4, 4)


def test_keyframe_alignment_makes_whole_gop_spans() -> None:
    import numpy as np

    from pipelines.clip_spans import align_to_keyframes

    kf = np.array([0, 50, 100, 150, 250])
    # a shot 50..250 trimmed to 52..248 and windowed at 100 frames
    spans = clip_spans(50, 250, 25.0, min_s=1, max_s=4, stride_s=4, trim_start_frames=2, trim_end_frames=2)
    assert spans == [(52, 152), (152, 248)]
    assert align_to_keyframes(spans, kf, 50, 250, 300, max_shift=5) == [(50, 150), (150, 250)]
    # too far from any keyframe: left alone; never leaves the shot
    assert align_to_keyframes([(70, 130)], kf, 50, 250, 300, max_shift=5) == [(70, 130)]
    assert align_to_keyframes([(52, 98)], kf, 52, 98, 300, max_shift=5) == [(52, 98)]
    # the end of the stream is a valid end
    assert align_to_keyframes([(252, 298)], kf, 250, 300, 300, max_shift=3) == [(250, 300)]
    assert align_to_keyframes(spans, kf, 50, 250, 300, max_shift=0) == spans
