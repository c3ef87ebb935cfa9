"""The ``vidloom`` command line: curate, export, query, report, caption-server, deploy, bench, samples,
the training commands train, encode, generate (``vidloom/cli_train.py``) and post-training,
``vidloom post METHOD`` (``vidloom/cli_post.py``; the old sft, rlhf, distill, refine, ... commands are
its aliases for one release).

Flags are few; everything else is configuration (``--config FILE`` and
``--set section.key=value``, see pipelines/config.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from curation.tables import print_table


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="default", help="config preset: default | tiny")
    p.add_argument("--config", help="YAML file with config overrides")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--ray-address", help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    p.add_argument("--runner", choices=["ray", "sequential"], help="executor for the stages")
    p.add_argument("--quiet", action="store_true", help="no progress bars (CI logs)")


def _load(args: argparse.Namespace) -> Any:
    from pipelines.config import load_config

    cfg = load_config(args.preset, args.config, args.overrides)
    if args.ray_address:
        cfg.runtime.ray_address = args.ray_address
    if args.runner:
        cfg.runtime.runner = args.runner
    if args.quiet:
        cfg.runtime.quiet = True
    return cfg


def cmd_curate(args: argparse.Namespace) -> int:
    """Exit 0 when at least one input video was processed (failures are listed), 1 when none
    could be (or no input was found: then nothing starts), 2 for a bad config (vidloom/cli_curate.py)."""
    from pipelines.config import to_dict
    from vidloom.cli_curate import input_files, print_summary, read_outcome

    cfg = _load(args)  # a bad key or value fails here, before Prefect or Ray start
    if getattr(args, "score_all", False):
        cfg.scores.score_all = True
    from pipelines.remote import is_url

    sources = [s if is_url(s) else os.path.abspath(s) for s in args.sources]  # URLs stay URLs
    files = [] if args.rescore else input_files(sources, cfg)
    if not args.rescore and not files:
        print(f"vidloom curate: error: no input video found in {' '.join(args.sources)} "
              f"(files, directories or globs; extensions {' '.join(cfg.ingest.extensions)})", file=sys.stderr)
        return 1
    if args.no_prefect:
        from pipelines.curate import run_curate

        counts = run_curate(sources, args.out, cfg, rescore=args.rescore)
    else:
        from flows.curate_flow import curate_flow

        counts = curate_flow(sources=sources, out=os.path.abspath(args.out), config=to_dict(cfg),
                             rescore=args.rescore,
                             report=os.path.abspath(args.report) if args.report else None)
    db = os.path.join(args.out, "catalog.duckdb")
    outcome = None if args.rescore else read_outcome(db, files)
    print_summary(args.out, counts, outcome)
    if args.report and args.no_prefect:  # the flow writes its report itself (its 'report' task)
        write_report(db, args.report, cfg)
    elif args.report:
        print(f"  report      {os.path.abspath(args.report)}")
    if outcome is not None and outcome.nothing_processed:
        print(f"vidloom curate: error: none of the {len(files)} input files could be processed",
              file=sys.stderr)
        return 1
    return 0


def _catalog_config(db: str, args: argparse.Namespace) -> Any:
    """The config a catalog was curated with (``config.yaml`` beside it), then CLI overrides."""
    from pipelines.export_selection import catalog_config

    return catalog_config(db, args.preset, args.overrides)


def cmd_export(args: argparse.Namespace) -> int:
    from pipelines.export_selection import export_selection, selected_clip_ids

    if not os.path.exists(args.db):
        raise FileNotFoundError(f"no catalog at {args.db}")
    balance_sets = [o for o in args.overrides if o.startswith("balance.")]
    args.overrides = [o for o in args.overrides if not o.startswith("balance.")]
    cfg = _catalog_config(args.db, args)
    cfg.runtime.runner = args.runner or "sequential"
    try:
        ids = selected_clip_ids(args.db, args.where)
    except ValueError as e:  # bad SQL, or anything but one predicate over clips
        print(f"vidloom export: {e}", file=sys.stderr)
        return 2
    if args.balance is not None or balance_sets or args.balance_mode:
        from pipelines.balance_export import balanced_export

        return balanced_export(args, cfg, ids, balance_sets)
    if args.multi_shot:
        return _export_multishot(args, cfg, ids)
    counts = export_selection(args.db, cfg, ids, args.out, args.where)
    print(f"vidloom export: {counts['selected']} clips selected, {counts['samples']} samples in "
          f"{counts['shards']} shards under {args.out} (dataset {counts['dataset'][:16]})")
    if counts["unavailable"]:
        print(f"  {counts['unavailable']} selected clips could not be cut (see clips.extract_error)")
    return 0


def _export_multishot(args: argparse.Namespace, cfg: Any, ids: list[str]) -> int:
    """``export --multi-shot``: samples of consecutive shots joined at hard cuts (pipelines/multishot.py)."""
    from pathlib import Path

    from curation.db import Catalog
    from pipelines.multishot import export_multishot
    from pipelines.remote import is_url

    if is_url(args.out):
        print("vidloom export: --multi-shot writes to a local directory only", file=sys.stderr)
        return 2
    with Catalog(args.db) as cat:
        counts = export_multishot(Path(args.db).resolve().parent, cfg, cat, ids, Path(args.out), args.where)
    print(f"vidloom export: {counts['selected']} clips selected, {counts['samples']} multi-shot samples "
          f"({counts['shots']} shots) in {counts['shards']} shards under {args.out} "
          f"(dataset {counts['dataset'][:16]})")
    if counts["breaks"]:
        print("  runs ended at: " + ", ".join(f"{k} {v}" for k, v in counts["breaks"].items()))
    if counts["unavailable"]:
        print(f"  {counts['unavailable']} samples could not be cut (see multi_shot.errors in the manifest)")
    return 0


def write_report(db: str, out: str, cfg: Any) -> None:
    from pipelines.curate import write_report as build

    build(db, out, cfg)
    print(f"  report      {os.path.abspath(out)}")


def cmd_report(args: argparse.Namespace) -> int:
    if not os.path.exists(args.db):
        raise FileNotFoundError(f"no catalog at {args.db}")
    print("vidloom report:")
    write_report(args.db, args.out, _catalog_config(args.db, args))
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    """One read-only statement in the SQL sandbox (curation/sandbox.py), printed or written to --out."""
    import duckdb

    from curation.sandbox import UnsafeSQL, run_query, write_query

    try:
        if args.out:
            n = write_query(args.db, args.sql, args.out)
            print(f"vidloom query: {n} row{'s' if n != 1 else ''} written to {args.out}")
            return 0
        cols, rows = run_query(args.db, args.sql)
    except (duckdb.Error, UnsafeSQL) as e:  # bad SQL, a write, or a file access refused
        print(f"vidloom query: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([dict(zip(cols, r, strict=True)) for r in rows], default=str, ensure_ascii=False))
    else:
        print_table(cols, rows)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """Serve the watch deployment from this process, or (``--pool``) register it with a work pool."""
    from flows.curate_flow import deploy_to_pool, serve_watch
    from pipelines.config import to_dict
    from pipelines.remote import is_url

    watch = args.watch if is_url(args.watch) else os.path.abspath(args.watch)  # a bucket prefix too
    out, cfg = os.path.abspath(args.out), to_dict(_load(args))
    what = (f"'vidloom-curate/{args.name}': {args.watch} -> {args.out} on cron '{args.cron}', one run at a "
            f"time (a run due while one is going: {args.overlap})")
    if args.pool:
        dep_id = deploy_to_pool(watch, out, args.cron, args.pool, cfg, args.name, args.overlap)
        print(f"registered deployment {what} with work pool {args.pool!r} (id {dep_id}); "
              f"runs start once a worker is up: prefect worker start --pool {args.pool}")
        return 0
    print(f"serving deployment {what}")
    serve_watch(watch, out, args.cron, cfg, args.name, args.overlap)
    return 0


DEFAULT_LOG_LEVEL = "warning"  # vidloom/logs.py: Prefect's run lines still print


class _VersionAction(argparse.Action):
    """``--version``: the package version and git commit, computed only when asked for."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from vidloom.version import version_string

        print(version_string())
        parser.exit()


def _log_level_arg(p: argparse.ArgumentParser, default: Any) -> None:
    from vidloom.logs import LEVELS

    p.add_argument("--log-level", type=str.lower, choices=LEVELS, default=default,
                   help=f"debug | info | warning | error | critical (default {DEFAULT_LOG_LEVEL}; "
                   "debug also shows Ray's start-up lines)")


def add_global_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", action=_VersionAction, help="print the version (and git commit) and exit")
    _log_level_arg(p, None)


def add_log_level(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``--log-level`` on every command and subcommand too (``vidloom curate ... --log-level info``);
    not on the pass-through commands, whose flags belong to the program they run."""
    for parser in set(sub.choices.values()):
        if parser.get_default("passthrough") or "--log-level" in parser._option_string_actions:
            continue
        _log_level_arg(parser, argparse.SUPPRESS)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                add_log_level(action)


def passthrough_args(argv: list[str], cmd: str) -> list[str]:
    """Every argument after the command's name (the global flags before it stay vidloom's)."""
    return argv[argv.index(cmd) + 1:]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vidloom", description="Curate raw video into training shards.")
    add_global_flags(p)
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("curate", help="ingest, split, extract and shard videos (a Prefect flow over Ray)")
    c.add_argument("sources", nargs="+", help="files, directories, globs, URLs (s3://, gs://, http(s)://) "
                   "or manifests (.csv/.jsonl/.parquet with a url column)")
    c.add_argument("--out", required=True, help="output root (catalog, clips, shards)")
    c.add_argument("--no-prefect", action="store_true", help="run the steps directly, without a flow run")
    c.add_argument("--rescore", action="store_true",
                   help="only re-decide kept/rejected from stored scores (no decode; then `vidloom export`)")
    c.add_argument("--report", metavar="HTML", help="write the HTML curation report here (a flow run writes "
                   "<out>/report.html by default)")
    c.add_argument("--score-all", action="store_true", help="every scorer on every clip (scores.score_all): "
                   "by default OCR and aesthetic skip clips a cheaper score already rejects (not_scored)")
    _config_args(c)
    c.set_defaults(fn=cmd_curate)

    e = sub.add_parser("export", help="write WebDataset shards for the clips a SQL predicate selects")
    e.add_argument("db", help="catalog.duckdb")
    e.add_argument("--where", default="status = 'kept'", help="SQL predicate over the clips table")
    e.add_argument("--out", required=True, help="export directory: a new version OUT/<dataset_hash>/ "
                   "(manifest.json + <bucket>/NNNNNN.tar), then OUT/latest points at it; "
                   "or a URL (s3://bucket/prefix, any fsspec URL): uploaded there")
    e.add_argument("--preset", default="default", help="config preset under the catalog's config.yaml")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    e.add_argument("--runner", choices=["ray", "sequential"], help="executor for cutting missing clips")
    e.add_argument("--multi-shot", action="store_true",
                   help="samples of consecutive selected shots of one video joined at hard cuts, each "
                   "shot's captions with its frame span (limits: shards.multishot_max_shots, "
                   "shards.multishot_max_s, shards.multishot_min_shots)")
    e.add_argument("--balance", nargs="?", const="", metavar="FILE.yaml",
                   help="balance the selection over content class, duration, resolution, fps, language "
                   "and motion (targets: the defaults, then FILE.yaml, then --set balance.*; "
                   "docs/data-engineers.md 'Balanced exports')")
    e.add_argument("--balance-mode", choices=["subset", "weights"],
                   help="subset: draw the balanced subset (default); weights: export the selection with "
                   "per-sample sampling weights the loader draws by")
    e.set_defaults(fn=cmd_export)

    r = sub.add_parser("report", help="write the self-contained HTML curation report")
    r.add_argument("db", help="catalog.duckdb")
    r.add_argument("--out", required=True, help="report.html")
    r.add_argument("--preset", default="default")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    r.set_defaults(fn=cmd_report)

    q = sub.add_parser("query", help="run read-only SQL on a catalog")
    q.add_argument("db")
    q.add_argument("sql")
    q.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    q.add_argument("--out", metavar="FILE", help="write the result to FILE (.parquet, .csv or .jsonl)")
    q.set_defaults(fn=cmd_query)

    d = sub.add_parser("deploy", help="serve (or --pool: register) a scheduled deployment that curates a "
                       "watched directory")
    d.add_argument("watch")
    d.add_argument("--out", required=True)
    d.add_argument("--cron", default="*/15 * * * *")
    d.add_argument("--name", default="watch")
    d.add_argument("--pool", metavar="NAME", help="register with this Prefect work pool (a worker runs it) "
                   "instead of serving from this process")
    d.add_argument("--overlap", choices=["skip", "wait"], default="skip",
                   help="a run due while the last still runs: skip it (cancelled) or wait for the last one")
    _config_args(d)
    d.set_defaults(fn=cmd_deploy)

    from vidloom.cli_tools import add_commands as add_tool_commands

    add_tool_commands(sub)  # bench, caption-server, samples

    from vidloom.cli_train import add_commands

    add_commands(sub)  # train, encode, generate
    from vidloom.cli_infer import add_commands as add_infer_commands

    add_infer_commands(sub)  # refine, thin-decoder (aliases of post)
    from vidloom.cli_post import add_commands as add_post_commands

    add_post_commands(sub)  # post METHOD; sft, merge (aliases)
    from vidloom.cli_rlhf import add_commands as add_rlhf_commands

    add_rlhf_commands(sub)  # rlhf, rlhf-compare (aliases of post)
    from vidloom.cli_refine_post import add_commands as add_refine_post_commands

    add_refine_post_commands(sub)  # refine-sft, refine-rlhf (aliases of post)
    from vidloom.cli_distill import add_commands as add_distill_commands

    add_distill_commands(sub)  # distill cfg | tscd | dmd | adv | report (aliases of post)
    from vidloom.cli_data import add_commands as add_data_commands

    add_data_commands(sub)  # gc (dataset versions)
    from vidloom.cli_annotate import add_commands as add_annotate_commands

    add_annotate_commands(sub)  # annotate serve | make-tasks | report, reward-train
    from vidloom.cli_eval import add_commands as add_eval_commands

    add_eval_commands(sub)  # eval
    from vidloom.cli_rewrite import add_commands as add_rewrite_commands

    add_rewrite_commands(sub)  # rewrite
    add_log_level(sub)  # after every command is registered
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse, set up logging (before Prefect or Ray are imported), run one command.

    A command that hands its flags to another program (``caption-server``, whose unknown flags
    are vLLM's) receives every argument after its name; for the others an unknown flag is an
    error, as with ``parse_args``.
    """
    from vidloom.logs import setup as setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not getattr(args, "passthrough", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.rest = passthrough_args(argv, args.cmd)
    setup_logging(getattr(args, "log_level", None) or DEFAULT_LOG_LEVEL)
    try:
        return int(args.fn(args))
    except (FileNotFoundError, ValueError) as e:  # ConfigError is a ValueError
        print(f"vidloom: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
