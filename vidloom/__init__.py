"""vidloom's command line (``vidloom``: curate, export, train, post-train, generate, serve, bench)
and the generated configuration reference; the work is done by the packages it calls (curation,
pipelines, captioner, models, training, evaluation, flows)."""
