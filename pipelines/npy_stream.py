"""A ``.npy`` file written as a stream: equally shaped items appended one at a time, a chunk in
memory, the header (with the final count) written last. The decode pass (pipelines/decode.py)
writes its FrameSet arrays this way.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np

HEADER_BYTES = 128  # fixed .npy header size, so the shape can be written last
CHUNK_FRAMES = 256  # items buffered in memory before a write


class NpyWriter:
    """Appends equally shaped items to a ``.npy`` file, one chunk in memory at a time."""

    def __init__(
        self, path: str, item_shape: tuple[int, ...], dtype: Any, chunk: int = CHUNK_FRAMES,
        on_chunk: Callable[[np.ndarray], None] | None = None,
    ):
        self._on_chunk = on_chunk  # gets a copy of every chunk written, in order
        self._f = open(path, "wb")  # closed in close()
        self._f.write(b"\0" * HEADER_BYTES)  # the real header goes here once n is known
        self._buf = np.empty((chunk, *item_shape), dtype=dtype)
        self._used = 0
        self.n = 0

    def append(self, item: np.ndarray) -> None:
        self._buf[self._used] = item
        self._used += 1
        self.n += 1
        if self._used == len(self._buf):
            self._flush()

    def _flush(self) -> None:
        self._f.write(self._buf[: self._used].tobytes())
        if self._on_chunk is not None and self._used:
            self._on_chunk(self._buf[: self._used].copy())
        self._used = 0

    def close(self) -> None:
        self._flush()
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header,
            {
                "descr": np.lib.format.dtype_to_descr(self._buf.dtype),
                "fortran_order": False,
                "shape": (self.n, *self._buf.shape[1:]),
            },
        )
        if len(header.getvalue()) != HEADER_BYTES:  # only for absurd shapes
            raise ValueError(f".npy header for {self.n} items is not {HEADER_BYTES} bytes")
        self._f.seek(0)
        self._f.write(header.getvalue())
        self._f.close()
