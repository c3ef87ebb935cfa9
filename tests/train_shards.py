"""Tiny real WebDataset shards for the training tests (see ``vidloom/synthetic_shards.py``)."""

from vidloom.synthetic_shards import make_mp4, write_test_shards

__all__ = ["make_mp4", "write_test_shards"]
