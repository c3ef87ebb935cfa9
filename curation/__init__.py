"""The data contract (schema) and the DuckDB catalog."""
