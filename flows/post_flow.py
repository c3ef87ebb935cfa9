"""Post-training as one Prefect flow: ``post_flow(method, config, inputs, out)``, the shape of
``curate_flow`` (a config dict in, the run's summary out), for every method of
``training/post/methods.py`` (sft, merge, rlhf, rlhf-compare, cfg, tscd, dmd, adv, distill-report,
refine, refine-sft, refine-rlhf, thin-decoder).

``config`` is a nested mapping of config keys (``{"post": {"rlhf": {"beta": 0.2}}, "lr": 1e-4}``), or
the whole resolved tree ``vidloom post --prefect`` sends; ``overrides`` adds ``key=value`` strings
after it. The flow resolves the config first (a bad key or value fails before any task starts),
then runs one task in the flow's process like ``vidloom-train``: when given a catalog and a SQL
selection (SFT) it first exports the selected clips to ``out/data`` (a task of its own). Runs resume
from the newest checkpoint of ``out``, so a rerun, a Prefect retry after a crash or a scheduled run
goes on where the last one stopped.

``sft_flow`` and ``merge_flow`` (and ``flows/posttrain_flow.py``'s ``rlhf_flow``, ``distill_flow``,
``refine_flow``) are the flows of the last release, kept as thin wrappers of ``post_flow``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

PATHS = ("base", "data", "catalog", "init", "generator")


@task(name="export-selection")
def export_task(catalog: str, where: str, out: str) -> dict[str, Any]:
    """Export the catalog's clips matching ``where`` as shards to ``out/data``
    (``training.post.sft.prepare_selection``: a complete export of the same selection is kept)."""
    from training.post.sft import prepare_selection

    counts = prepare_selection(catalog, where, out)
    return {k: counts[k] for k in ("reused", "shards", "samples", "dataset")}


@task(name="post", retries=1, retry_delay_seconds=10)
def post_task(method: str, config: dict[str, Any], inputs: dict[str, Any], out: str | None,
              device: str | None) -> dict[str, Any]:
    """``training.post.methods.run`` with the resolved ``config``; resumes, so a retry goes on."""
    from training.config import from_dict
    from training.post import methods
    from training.post.inputs import RunInputs

    return methods.run(method, from_dict(config), RunInputs(**inputs), out, device=device, progress=False)


@flow(name="vidloom-post", log_prints=True)
def post_flow(method: str, config: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None,
              out: str | None = None, device: str | None = None,
              overrides: list[str] | None = None) -> dict[str, Any]:
    """Run post-training method ``method``.

    Args:
        method: a ``training.post.methods.METHODS`` name.
        config: config keys as a nested mapping, over the method's starting config.
        inputs: ``training.post.inputs.RunInputs`` fields: ``base`` (the checkpoint to start from),
            ``data`` or ``catalog`` + ``where``, ``init``, ``generator``, ``prompts``,
            ``eval_prompts``, ``checkpoints`` (merge).
        out: the run directory (a ``.pt`` file for merge, a ``.json`` file for distill-report).
        device: torch device (default: cuda when available, else cpu).
        overrides: ``key=value`` strings applied after ``config``.

    Returns the method's summary (``checkpoint``, the eval history, ...).
    """
    from training.config import to_dict
    from training.post import methods
    from training.post.inputs import RunInputs

    plain = {k: str(Path(v).resolve()) if k in PATHS and v else v for k, v in (inputs or {}).items()}
    if plain.get("checkpoints"):
        plain["checkpoints"] = [str(Path(c).resolve()) for c in plain["checkpoints"]]
    out = str(Path(out).resolve()) if out else None
    cfg = methods.resolve(method, RunInputs(**plain), overrides=[config or {}, *(overrides or [])])
    if plain.get("catalog") and out is not None:
        exported = export_task(plain["catalog"], plain.get("where") or "", out)
        get_run_logger().info("selection %r: %s samples in %s shards", plain.get("where"),
                              exported["samples"],
                              exported["shards"])
    summary = post_task(method, to_dict(cfg), plain, out, device)
    get_run_logger().info("%s %s -> %s", method, plain.get("base") or plain.get("checkpoints"),
                          summary.get("checkpoint") or summary.get("out"))
    return summary


@flow(name="vidloom-sft", log_prints=True)
def sft_flow(base: str, out: str, data: str | None = None, catalog: str | None = None,
             where: str | None = None, steps: int | None = None, overrides: list[str] | None = None,
             init: str = "ema", device: str | None = None) -> dict[str, Any]:
    """``post_flow("sft", ...)``: fine-tune the DiT of ``base`` on ``data`` or on the ``catalog`` clips
    matching ``where`` (``steps``: SFT optimizer steps, default 10 % of the base's; ``init``: the
    base's "ema" or raw "net" weights). Returns ``training.post.sft.sft``'s summary."""
    if (data is None) == (catalog is None) or (catalog is not None and not where):
        raise ValueError("give either data, or catalog and where")
    items = [*(overrides or []), *([f"steps={steps}"] if steps is not None else [])]
    return post_flow("sft", {"post": {"sft": {"init": init}}}, {"base": base, "data": data,
                                                                "catalog": catalog,
                                                               "where": where}, out, device, items)


@flow(name="vidloom-merge", log_prints=True)
def merge_flow(checkpoints: list[str], out: str, weights: list[float] | None = None) -> str:
    """``post_flow("merge", ...)``: average the weights of ``checkpoints`` (files or run directories)
    into ``out`` (a ``*.pt`` file or a run directory) with ``weights`` (normalised; default uniform);
    returns the merged file's path."""
    config = {"post": {"merge": {"weights": list(weights or [])}}}
    return str(post_flow("merge", config, {"checkpoints": list(checkpoints)}, out)["out"])
