"""The data contract and the catalog: the schema dataclasses (no torch), the DuckDB catalog (the
only writer), the score columns the scorers register, sandboxed read-only user SQL, dataset
balancing and the HTML report. Tables and columns: docs/catalog.md; see docs/architecture.md
"Catalog"."""
