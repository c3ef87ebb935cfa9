"""Benchmarks behind ``vidloom bench``, the scripts beside them and the dev-set tooling
(``bench/devset/``); every figure the docs quote is stored by one of them under ``bench/results/``
(``bench/record.py``). See bench/README.md."""
