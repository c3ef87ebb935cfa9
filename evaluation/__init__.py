"""The evaluation loop: preference annotation (a web page and its DuckDB tables) and the checkpoint
evaluation harness with its prompt suites. See docs/architecture.md "Evaluation loop"."""
