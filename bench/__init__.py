"""Benchmarks behind ``vidloom bench`` and the scripts beside them; every figure the docs quote is
stored by one of them under ``bench/results/`` (``bench/record.py``). See bench/README.md."""
