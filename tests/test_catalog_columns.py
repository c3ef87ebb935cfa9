"""pipelines/catalog_columns.py ``fixed_width`` and ``parse_phash_column`` say what
pipelines/dedup_bands.py ``fixed_bytes`` and ``parse_phashes`` say, for every row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.catalog_columns import fixed_width, parse_phash_column
from pipelines.dedup_bands import fixed_bytes, parse_phashes

HEX48 = "0123456789abcdef" * 3
CASES = [
    ["ab", None, "", "abc", HEX48, "zz" * 8, HEX48.upper(), HEX48[:16]],
    [None, None],
    ["", ""],
    ["é", "a"],  # multi-byte: fixed_bytes's own path
    [str(i) for i in range(20)],  # many distinct lengths
    ["x" * i for i in range(12)],
    [HEX48, HEX48, None, HEX48[:16], HEX48, HEX48, "", HEX48, HEX48[:47] + "g"],
]


def _random_hashes(n: int, seed: int, short: float = 1.0) -> list[str | None]:
    """Full, one-, two-keyframe and null phashes; ``short`` scales the share that is not full (few:
    runs of full rows copied as blocks; many: the per-length gather)."""
    rng = np.random.default_rng(seed)
    out: list[str | None] = []
    for _ in range(n):
        r = rng.random() / short
        full = "".join(rng.choice(list("0123456789abcdef"), 48))
        out.append(None if r < 0.05 else full[:16] if r < 0.15 else full[:32] if r < 0.2 else full)
    return out


@pytest.mark.parametrize("values", [*CASES, _random_hashes(3000, 0), _random_hashes(3000, 1, 0.1)])
@pytest.mark.parametrize("typ", [pa.string(), pa.large_string()])
def test_fixed_width_and_parse_match_the_reference(values: list[str | None], typ: pa.DataType) -> None:
    a = pa.array(values, typ)
    for arr in (a, a.slice(1), pa.chunked_array([a.slice(0, 1), a.slice(1)])):
        got, want = fixed_width(arr), fixed_bytes(arr)
        assert got.dtype == want.dtype
        assert got.tolist() == want.tolist()
        for k in (1, 3):
            (h, valid), (h_ref, valid_ref) = parse_phash_column(got, k), parse_phashes(want, k)
            assert np.array_equal(valid, valid_ref)
            assert np.array_equal(h, h_ref)


def test_fixed_width_of_equal_length_strings_is_a_view() -> None:
    a = pa.array([HEX48] * 5)
    got = fixed_width(a)
    assert got.dtype == np.dtype("S48") and not got.flags.owndata
    assert got.tolist() == [HEX48.encode()] * 5
