"""Generators of synthetic inputs: the demo and bad-input videos and the shot-detection suite behind
``vidloom samples``, transition videos with exact ground truth, and tiny real WebDataset shards
for tests and benchmarks. Real footage for accuracy work is the dev set (bench/devset/)."""
