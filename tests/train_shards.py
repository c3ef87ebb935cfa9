"""Tiny real WebDataset shards for the training tests (see ``samplegen/synthetic_shards.py``)."""

from samplegen.synthetic_shards import make_mp4, write_test_shards

__all__ = ["make_mp4", "write_test_shards"]
