"""Post-training flows: SFT of a trained DiT (``training.post.sft.sft``) and checkpoint merging
(``training.post.merge.merge_checkpoints``) as Prefect flows.

``sft_flow`` runs in the flow's process like ``vidloom-train`` (flows/train_flow.py): when given a
catalog and a SQL selection it first exports the selected clips to ``out/data`` (a task of its
own), then fine-tunes. The SFT resumes from the newest checkpoint of ``out``, so a rerun, a Prefect
retry after a crash or a scheduled run goes on where the last one stopped. ``merge_flow`` writes one
merged "dit" checkpoint (for generation or as an SFT base, not for resuming).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task


@task(name="export-selection")
def export_task(catalog: str, where: str, out: str) -> dict[str, Any]:
    """Export the catalog's clips matching ``where`` as shards to ``out/data``
    (``training.post.sft.prepare_selection``: a complete export of the same selection is kept)."""
    from training.post.sft import prepare_selection

    counts = prepare_selection(catalog, where, out)
    return {k: counts[k] for k in ("reused", "shards", "samples", "dataset")}


@task(name="sft", retries=1, retry_delay_seconds=10)
def sft_task(base: str, out: str, data: str | None, catalog: str | None, where: str | None,
             steps: int | None, overrides: list[str], init: str, device: str | None) -> dict[str, Any]:
    """``training.post.sft.sft``; resumes, so a retry goes on."""
    from training.post.sft import sft

    return sft(base, data=data, catalog=catalog, where=where, out=out, steps=steps, overrides=overrides,
               init=init, progress=False, device=device)  # type: ignore[arg-type]


@flow(name="vidloom-sft", log_prints=True)
def sft_flow(base: str, out: str, data: str | None = None, catalog: str | None = None,
             where: str | None = None, steps: int | None = None, overrides: list[str] | None = None,
             init: str = "ema", device: str | None = None) -> dict[str, Any]:
    """Fine-tune the DiT of ``base`` on ``data`` or on the ``catalog`` clips matching ``where``.

    Args:
        base: a "dit" checkpoint or run directory (its newest checkpoint).
        out: SFT run directory (config.yaml, sft.json, checkpoints, log.jsonl, data/).
        data: a shards directory (pixels or latents); or else
        catalog, where: a ``catalog.duckdb`` (or its directory) and a SQL predicate over ``clips``.
        steps: SFT optimizer steps (default: 10 % of the base's; a larger value on a rerun extends).
        overrides: ``key=value`` config overrides over the SFT preset.
        init: start from the base's "ema" weights (default) or its raw "net" weights.
        device: torch device (default: cuda when available, else cpu).

    Returns ``training.post.sft.sft``'s summary (``checkpoint``, ``dit`` with the eval history, ...).
    """
    if (data is None) == (catalog is None) or (catalog is not None and not where):
        raise ValueError("give either data, or catalog and where")
    base, out = str(Path(base).resolve()), str(Path(out).resolve())
    if catalog is not None:
        catalog = str(Path(catalog).resolve())
        exported = export_task(catalog, where, out)
        get_run_logger().info("selection %r: %s samples in %s shards", where, exported["samples"],
                              exported["shards"])
    else:
        data = str(Path(data).resolve())  # type: ignore[arg-type]
    summary = sft_task(base, out, data, catalog, where, steps, list(overrides or []), init, device)
    get_run_logger().info("fine-tuned %s -> %s", base, summary.get("checkpoint"))
    return summary


@flow(name="vidloom-merge", log_prints=True)
def merge_flow(checkpoints: list[str], out: str, weights: list[float] | None = None) -> str:
    """Average the weights of ``checkpoints`` (files or run directories) into ``out``; returns its path.

    Args:
        checkpoints: two or more "dit" checkpoints of one model (same config model sections and VAE).
        out: the merged file (``*.pt``) or a run directory.
        weights: one weight per checkpoint, normalised to sum 1 (default: uniform).
    """
    from training.post.merge import merge_checkpoints

    path = merge_checkpoints([str(Path(c).resolve()) for c in checkpoints], weights, out=out)
    get_run_logger().info("merged %d checkpoints -> %s", len(checkpoints), path)
    return str(path)
