"""`vidloom annotate` (serve | make-tasks | report) and `vidloom reward-train` (registered by vidloom/cli.py).

- ``annotate make-tasks --index DIR/index.jsonl [--index ...] --db DB [--per-task 2..4] [--videos DIR]``:
  labelling tasks from ``generate --prompts`` (or ``eval``) indexes (evaluation/annotate_tasks.py).
- ``annotate serve --db DB --videos DIR [--host 127.0.0.1 --port 8090] [--labeller NAME]``: the
  labelling page (evaluation/annotate_app.py) under uvicorn.
- ``annotate report --db DB [--out report.html]``: labels per labeller, Krippendorff's alpha per rubric
  dimension, best/worst consistency (evaluation/annotate_report.py).
- ``reward-train --db DB --videos DIR --out HEAD.pt [--kind text|motion] [--steps N]``: a learned reward
  head from the labels (evaluation/annotate_reward.py, training/post/reward_labels.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _make_tasks(args: argparse.Namespace) -> int:
    from evaluation.annotate_tasks import default_videos_dir, make_tasks

    try:
        res = make_tasks(args.index, args.db, args.per_task, args.videos)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from evaluation.preferences import read_tasks

    root = args.videos or default_videos_dir(args.index)
    print(f"{args.db}: {res.added} new tasks, {len(read_tasks(args.db))} in all; "
          f"serve them with: vidloom annotate serve --db {args.db} --videos {root}")
    for p in res.missing_files:
        print(f"warning: video file missing: {p} (its task can still be labelled or skipped)",
              file=sys.stderr)
    for p in res.lone:
        print(f"warning: only one video for prompt {p!r}: no task", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from evaluation.annotate_app import create_app

    try:
        app = create_app(args.db, args.videos, args.labeller)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from urllib.parse import urlencode

    who = "?" + urlencode({"labeller": args.labeller or "YOUR_NAME"})
    print(f"annotation page: http://{args.host}:{args.port}/{who}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _report(args: argparse.Namespace) -> int:
    from evaluation.annotate_report import write_report

    write_report(args.db, args.out)
    if args.out:
        print(f"\nwrote {args.out}")
    return 0


def _reward_train(args: argparse.Namespace) -> int:
    from evaluation.annotate_reward import reward_train

    try:
        res = reward_train(args.db, args.videos, args.out, kind=args.kind, steps=args.steps,
                           frames=args.frames, size=args.size, lr=args.lr, batch_size=args.batch_size,
                           seed=args.seed,
                           holdout=args.holdout, text_encoder=args.text_encoder)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    acc = res["train_accuracy"]
    print(f"{res['kind']} head {res['dimensions']} <- rubric {res['mapping']}: "
          f"{res['train_pairs']} training pairs from {res['labels']} labels "
          f"({res['dropped_missing']} pairs dropped for missing videos)")
    print(f"loss {res['fit']['loss_first']:.4f} -> {res['fit']['loss_mean_last10']:.4f}; "
          f"train accuracy {acc['all']:.3f} "
          + json.dumps({k: round(v, 3) for k, v in acc.items() if k != "all"}))
    if res["val_accuracy"] is not None:
        print(f"held-out accuracy {res['val_accuracy']['all']:.3f} over {res['val_pairs']} pairs")
    print(f"saved {res['out']}")
    return 0


def add_commands(sub: Any) -> None:
    """Register ``annotate`` (serve | make-tasks | report) and ``reward-train``."""
    p = sub.add_parser("annotate", help="preference-annotation page: make-tasks, serve, report")
    asub = p.add_subparsers(dest="annotate_cmd", required=True)

    m = asub.add_parser("make-tasks", help="labelling tasks from generate --prompts / eval indexes")
    m.add_argument("--index", action="append", required=True, metavar="DIR/index.jsonl",
                   help="a batch-generation index (repeat for several seeds or checkpoints)")
    m.add_argument("--db", required=True, help="DuckDB file (created if missing)")
    m.add_argument("--per-task", type=int, default=4, choices=[2, 3, 4], help="videos per task (default 4)")
    m.add_argument("--videos", help="directory the video paths are relative to (default: the deepest "
                                    "directory holding every index); give the same to serve")
    m.set_defaults(fn=_make_tasks)

    s = asub.add_parser("serve", help="serve the labelling page")
    s.add_argument("--db", required=True)
    s.add_argument("--videos", required=True, help="directory holding the videos (nothing outside is served)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8090)
    s.add_argument("--labeller", help="default labeller name (else ?labeller= or the page's name field)")
    s.set_defaults(fn=_serve)

    r = asub.add_parser("report", help="labels per labeller, Krippendorff's alpha, best/worst consistency")
    r.add_argument("--db", required=True)
    r.add_argument("--out", help="also write the report as HTML here")
    r.set_defaults(fn=_report)

    t = sub.add_parser("reward-train", help="train a reward head from the annotation page's labels")
    t.add_argument("--db", required=True, help="DuckDB file with annotation_tasks and preferences")
    t.add_argument("--videos", required=True, help="the directory given to annotate serve")
    t.add_argument("--out", required=True, help="head file to write (models.rewards.learned.save_head)")
    t.add_argument("--kind", choices=["text", "motion"], default="motion",
                   help="text: TextAlignmentHead <- alignment; motion: MotionHead <- motion, structure")
    t.add_argument("--steps", type=int, default=200)
    t.add_argument("--frames", type=int, default=8, help="frames per video (default 8)")
    t.add_argument("--size", type=int, default=32, help="videos resized to SIZE x SIZE (default 32)")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--holdout", type=int, default=5, help="hold out every N-th task for accuracy (0: none)")
    t.add_argument("--text-encoder", choices=["auto", "minilm", "byte"], default="auto",
                   help="prompt encoder of the text head")
    t.set_defaults(fn=_reward_train)
