"""The decode pass's per-frame conversions (pipelines/decode.py): FFmpeg filter graphs that
downscale a decoded frame (area) into display orientation as rgb24, and the coded luma plane the
edge profiles are measured on."""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import av.filter
    from av.video.frame import VideoFrame

# 8-bit pixel formats whose first plane is the luma (PyAV names); others are converted
_LUMA_FIRST = frozenset({
    "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv410p", "yuv411p",
    "yuvj411p", "yuv440p", "yuvj440p", "yuva420p", "nv12", "nv21", "nv16", "gray",
})


def rotation_filters(rotation: int) -> list[tuple[str, str | None]]:
    """Filters that turn a coded frame into display orientation.

    Args:
        rotation: counter-clockwise degrees of the display matrix (PyAV's
            ``VideoFrame.rotation``), a multiple of 90.
    """
    filters: dict[int, list[tuple[str, str | None]]] = {
        90: [("transpose", "cclock")],
        180: [("hflip", None), ("vflip", None)],
        270: [("transpose", "clock")],
    }
    return filters.get(rotation % 360, [])


class Scaler:
    """One filter graph: buffer -> scale (area) -> [rotate] -> rgb24 -> sink, for one input geometry."""

    def __init__(self, frame: VideoFrame, size: tuple[int, int], rotation: int) -> None:
        import av.filter

        w, h = size if rotation % 180 == 0 else size[::-1]  # scale first, rotate the small frame
        self.key = (frame.width, frame.height, frame.format.name)
        self.graph = av.filter.Graph()  # must outlive its contexts: keep the reference
        # One thread: the graph runs in the decode loop's thread. By default (0: one per core)
        # every pull hands the frame's slices to the graph's pool and waits for them, on cores
        # the decoder's threads and the split's model already fill. Same pixels. Measured on 2
        # cores, the dev set + its 5-min 720p file: decode_video 19.3 -> 17.4 s, decode_only_fps
        # 17.3 -> 15.7 s; the dev set's streamed split (decode_and_detect) 16.2 -> 14.7 s.
        self.graph.threads = 1
        src = self.graph.add_buffer(
            width=frame.width,
            height=frame.height,
            format=frame.format,
            time_base=frame.time_base or Fraction(1, 90000),
        )
        chain = [("scale", f"{w}:{h}:flags=area"), *rotation_filters(rotation), ("format", "rgb24")]
        nodes: list[av.filter.FilterContext] = [src, *(self.graph.add(n, a) for n, a in chain)]
        self._sink = self.graph.add("buffersink")
        self.graph.link_nodes(*nodes, self._sink)
        self.graph.configure()
        self._src = src

    def scale(self, frame: VideoFrame) -> VideoFrame:
        self._src.push(frame)
        return self._sink.pull()  # type: ignore[return-value]

    def __call__(self, frame: VideoFrame) -> np.ndarray:
        return self.scale(frame).to_ndarray()


def coded_luma(frame: VideoFrame) -> np.ndarray:
    """uint8 [H, W] luma of a decoded frame at its coded size and orientation (a view of the
    frame's first plane for 8-bit YUV, else a conversion to gray)."""
    if frame.format.name not in _LUMA_FIRST:
        frame = frame.reformat(format="gray")
    plane = frame.planes[0]
    rows = np.frombuffer(plane, np.uint8, count=plane.line_size * plane.height)
    return rows.reshape(plane.height, plane.line_size)[:, : plane.width]
