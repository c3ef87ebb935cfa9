"""``vidloom post METHOD``: every post-training method behind one command (training/post/methods.py).

``vidloom post sft --base runs/tiny --catalog out/demo/catalog.duckdb --where "status = 'kept'"
--out runs/tiny-sft --set steps=50`` exports the selected clips to ``runs/tiny-sft/data`` and
fine-tunes the base DiT on them; ``vidloom post rlhf --base runs/tiny --prompts prompts.txt --out
runs/rlhf --set post.rlhf.beta=0.2 --set post.rlhf_rounds.rounds=3`` runs ReFL rounds;
``vidloom post merge --base runs/a --base runs/b --set post.merge.weights=[0.7,0.3] --out merged.pt``
averages checkpoints. The options are the run's inputs (checkpoints, data, prompts, output); every
setting is a config key (``--preset``, ``--config FILE``, ``--set key=value``; docs/configuration.md,
``post.<method>.*``). Rerunning a command resumes.

The commands of the last release (``sft``, ``merge``, ``rlhf``, ``rlhf-compare``, ``distill cfg|tscd|
dmd|adv|report``, ``refine``, ``refine-sft``, ``refine-rlhf``, ``thin-decoder``) are aliases for one
more release (``alias``): each of their flags maps onto an input or a config key, and they print a
deprecation note on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vidloom.cli_common import add_selection_options, read_prompt_file

# --------------------------------------------------------------------------- summaries


def _print_sft(summary: dict[str, Any], cfg: Any, args: argparse.Namespace) -> None:
    run = summary["dit"]
    print(f"\nvidloom sft: done -> {summary['checkpoint']}")
    print(f"  base: {summary['base']} (step {summary['base_step']})")
    print(f"  data: {summary['data']}")
    print(f"  {run['steps']} steps in {run['out']}, data wait {100 * run['data_wait_share']:.1f}%")
    for row in run["eval"]:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("step", "stage", "when"))
        print(f"    step {row['step']:>6} {row['stage']:<11} {row['when']:<5} {metrics}")
    print(f"  log: {summary['out']}/log.jsonl")


def _print_rounds(result: dict[str, Any], cfg: Any, args: argparse.Namespace) -> None:
    held = f"heldout/{cfg.post.rlhf_rounds.heldout_reward}"
    for row in result["rounds"]:
        terms = ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                          if isinstance(v, float) and not k.endswith(("_var", "_change")) and k != held)
        print(f"round {row['round']} step {row['step']}: {terms}; {held} {row[held]:.4f} "
              f"({100 * row['heldout_change']:+.2f}% vs base)")
    print(f"vidloom rlhf: done -> {result['checkpoint']} (rounds: {result['out']}/rlhf_rounds.json)")


def _print_compare(result: dict[str, Any], cfg: Any, args: argparse.Namespace) -> None:
    from training.post.flow_dpo import format_table

    print(format_table(result["rows"]))
    if getattr(args, "json", False):
        print(json.dumps(result["rows"]))


def _print_distill(summary: dict[str, Any], cfg: Any, args: argparse.Namespace) -> None:
    print(json.dumps({k: summary[k] for k in ("kind", "steps", "out")}))
    for row in summary["eval"]:
        print(f"  step {row['step']:>6} {row['stage']:<11} {row['when']:<5} "
              f"eval_distill_loss {row.get('eval_distill_loss', float('nan')):.5f}")


def _print_evals(name: str) -> Callable[[dict[str, Any], Any, argparse.Namespace], None]:
    def show(summary: dict[str, Any], cfg: Any, args: argparse.Namespace) -> None:
        print(f"vidloom {name}: {summary['steps']} steps -> {summary['checkpoint']}")
        for row in summary["eval"]:
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("step", "stage", "when"))
            print(f"  step {row['step']:>6} {row['stage']:<11} {row['when']:<5} {metrics}")

    return show


def _print_refine_sft(result: dict[str, Any], cfg: Any, args: argparse.Namespace) -> None:
    evals = result["summary"].get("eval") or []
    tail = f" (eval_loss {evals[-1]['eval_loss']:.4f})" if evals and "eval_loss" in evals[-1] else ""
    print(f"vidloom refine-sft: done -> {result['checkpoint']}{tail}")


def _print_refine_rlhf(result: dict[str, Any], cfg: Any, args: argparse.Namespace) -> None:
    evals = result["summary"].get("eval") or []
    if evals and "eval/composite" in evals[0]:
        print(f"eval/composite {evals[0]['eval/composite']:.4f} -> {evals[-1]['eval/composite']:.4f}")
    print(f"vidloom refine-rlhf: done -> {result['checkpoint']}")


PRINTERS: dict[str, Callable[[dict[str, Any], Any, argparse.Namespace], None]] = {
    "sft": _print_sft, "merge": lambda s, c, a: print(json.dumps(s, ensure_ascii=False)),
    "rlhf": _print_rounds, "rlhf-compare": _print_compare,
    "cfg": _print_distill, "tscd": _print_distill, "dmd": _print_distill, "adv": _print_distill,
    "distill-report": lambda s, c, a: print(json.dumps(s, indent=1)),
    "refine": _print_evals("refine"), "thin-decoder": _print_evals("thin-decoder"),
    "refine-sft": _print_refine_sft, "refine-rlhf": _print_refine_rlhf,
}


# --------------------------------------------------------------------------- running


def run_method(name: str, inputs: Any, layers: list[Any], out: str | None, preset: str | None = None,
               config: str | None = None, device: str | None = None, quiet: bool = False,
               prefect: bool = False, args: argparse.Namespace | None = None) -> int:
    """Resolve the config (a bad key or value fails here, before any work), run, print the summary."""
    from training.post import methods

    cfg = methods.resolve(name, inputs, preset, config, layers)
    if prefect:
        from flows.post_flow import post_flow
        from training.config import to_dict

        summary = post_flow(name, to_dict(cfg), inputs=_plain_inputs(inputs), out=out, device=device)
    else:
        summary = methods.run(name, cfg, inputs, out, device=device, progress=not quiet)
    PRINTERS[name](summary, cfg, args or argparse.Namespace())
    return 0


def _plain_inputs(inputs: Any) -> dict[str, Any]:
    """The path and prompt inputs as flow parameters (in-memory rewards do not travel)."""
    return {k: (str(v) if hasattr(v, "__fspath__") else v) for k, v in vars(inputs).items()
            if k not in ("reward_models", "eval_rewards", "pairs") and v not in (None, (), [], "")}


def cmd_post(args: argparse.Namespace) -> int:
    from training.post.inputs import RunInputs

    bases = list(args.base or [])
    if args.method != "merge" and len(bases) != 1:
        raise ValueError(f"post {args.method} needs one --base checkpoint")
    _check_selection(args)
    inputs = RunInputs(bases[0] if bases else "", data=args.data, catalog=args.catalog, where=args.where,
                       init=args.init, generator=args.generator, prompts=read_prompt_file(args.prompts),
                       eval_prompts=read_prompt_file(args.heldout_prompts) or (),
                       checkpoints=bases if args.method == "merge" else ())
    return run_method(args.method, inputs, list(args.overrides), args.out, args.preset, args.config,
                      args.device, args.quiet, args.prefect, args)


def _check_selection(args: argparse.Namespace) -> None:
    if getattr(args, "catalog", None) is not None and getattr(args, "data", None) is not None:
        raise ValueError("give --data SHARDS or --catalog DB --where SQL")
    if getattr(args, "catalog", None) is not None and not args.where:
        raise ValueError("--catalog needs --where SQL (e.g. \"status = 'kept'\")")
    if getattr(args, "where", None) and getattr(args, "catalog", None) is None:
        raise ValueError("--where selects clips of a --catalog")


def add_post_command(sub: Any) -> None:
    from training.post.config import METHODS

    p = sub.add_parser("post", help="post-training: " + " | ".join(METHODS),
                       description="Post-train a checkpoint. Methods: " + "; ".join(
                           f"{name} ({text}; post.{', post.'.join(sections)})"
                           for name, (sections, text) in METHODS.items()))
    p.add_argument("method", choices=list(METHODS), metavar="METHOD", help=" | ".join(METHODS))
    p.add_argument("--base", action="append", required=True, metavar="CKPT",
                   help="checkpoint or run directory to start from (the teacher, refiner or VAE; "
                        "repeat for merge)")
    add_selection_options(p, "shards directory (training data, or whose captions are the prompts)")
    p.add_argument("--out", help="run directory (or a .pt / .json file for merge / distill-report)")
    p.add_argument("--preset", help="training preset whose post section starts the settings")
    p.add_argument("--config", help="YAML file with config keys (post.<method>.<key>, lr, stages, ...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config key, e.g. post.rlhf.beta=0.2 or steps=50 (repeatable)")
    p.add_argument("--init", help="student init checkpoint (distillation; default --base)")
    p.add_argument("--generator", help="thin-decoder: a 'dit' run whose sampled latents it also distils on")
    p.add_argument("--prompts", help="prompt file, one per line (RLHF, distill-report)")
    p.add_argument("--heldout-prompts", help="evaluation prompt file (RLHF)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--prefect", action="store_true", help="run as the vidloom-post Prefect flow")
    p.set_defaults(fn=cmd_post)


# --------------------------------------------------------------------------- aliases of the old commands


@dataclass
class Knob:
    """One flag of an old command: what it sets (a dotted config key, ``input:<RunInputs field>``, or
    ``steps``, applied after the ``--set`` items), and how argparse reads it."""

    flag: str
    key: str
    kw: dict[str, Any] = field(default_factory=dict)
    convert: Callable[[Any], Any] | None = None  # parsed value -> config value


def default_of(key: str) -> Any:
    """A ``post.*`` key's default (``PostConfig()``): the one place an old flag's default comes from."""
    from training.post.config import PostConfig

    node: Any = PostConfig()
    for part in key.split(".")[1:]:
        node = getattr(node, part)
    return node


def alias(sub: Any, name: str, method: str, help: str, knobs: list[Knob], flags_help: str = "") -> Any:
    """Register the old command ``name`` as an alias of ``vidloom post METHOD``."""
    p = sub.add_parser(name, help=f"{help} (deprecated: vidloom post {method})")
    for k in knobs:
        kw = dict(k.kw)
        if k.key.startswith("post.") and "default" not in kw and kw.get("action") != "store_true":
            value = default_of(k.key)
            kw["default"] = ",".join(map(str, value)) if k.convert is _ints and isinstance(value,
                                                                                           tuple) else value
        p.add_argument(k.flag, **kw)
    p.set_defaults(fn=lambda args: _run_alias(args, name, method, knobs), alias_knobs=knobs)
    return p


def _run_alias(args: argparse.Namespace, name: str, method: str, knobs: list[Knob]) -> int:
    from training.post.inputs import RunInputs

    print(f"vidloom {name}: deprecated; use `vidloom post {method} --base ... --set post.<key>=...` "
          "(removed in the next release)", file=sys.stderr)
    _check_selection(args)
    layer: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    steps = None
    for k in knobs:
        dest = k.kw.get("dest") or k.flag.lstrip("-").replace("-", "_")
        value = getattr(args, dest, None)
        if value is None or k.key in ("", "set", "device", "quiet", "json", "prefect", "out"):
            continue
        value = k.convert(value) if k.convert else value
        if k.key == "steps":
            steps = value
        elif k.key.startswith("input:"):
            inputs[k.key[6:]] = value
        else:
            node = layer
            parts = k.key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = list(value) if isinstance(value, tuple) else value
    if method == "merge":
        inputs["checkpoints"] = list(inputs.pop("checkpoints"))
    layers = [layer, *getattr(args, "overrides", [])] + ([f"steps={steps}"] if steps is not None else [])
    return run_method(method, RunInputs(**inputs), layers, getattr(args, "out", None),
                      device=getattr(args, "device", None), quiet=getattr(args, "quiet", False),
                      prefect=getattr(args, "prefect", False), args=args)


def _ints(text: str) -> list[int]:
    return [int(s) for s in str(text).split(",") if s.strip()]


def prompts_file(path: str) -> list[str]:
    return read_prompt_file(path) or []


def weights(text: str) -> list[float]:
    """``w1,w2,...`` -> floats."""
    try:
        return [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"weights {text!r} must look like 0.7,0.3") from None


def run_knobs(steps_help: str, set_help: str | None = None) -> list[Knob]:
    """``--steps``, ``--set``, ``--device``, ``--quiet``: what every old training command took."""
    return [Knob("--steps", "steps", {"type": int, "help": steps_help}),
            Knob("--set", "set", {"dest": "overrides", "action": "append", "default": [],
                                  "metavar": "KEY=VALUE", "help": set_help}),
            Knob("--device", "device", {"help": "torch device (default: cuda when available, else cpu)"}),
            Knob("--quiet", "quiet", {"action": "store_true", "help": "no progress bar"})]


def selection_knobs(data_help: str) -> list[Knob]:
    return [Knob("--data", "input:data", {"help": data_help}),
            Knob("--catalog", "input:catalog",
                 {"help": "catalog.duckdb whose --where selection is exported"}),
            Knob("--where", "input:where", {"help": "SQL predicate over the clips table (with --catalog)"})]


def add_commands(sub: Any) -> None:
    """The ``post`` command, and the ``sft`` and ``merge`` aliases."""
    add_post_command(sub)
    alias(sub, "sft", "sft", "fine-tune a trained DiT on shards or a catalog selection; resumes", [
        Knob("--base", "input:base", {"required": True, "help": "base DiT checkpoint or run directory"}),
        *selection_knobs("shards directory (pixels or `vidloom encode` latents)"),
        Knob("--out", "out", {"required": True, "help": "SFT run directory"}),
        *run_knobs("SFT optimizer steps (default: 10%% of the base's, >= 10)", "config override"),
        Knob("--init", "post.sft.init", {"choices": ["ema", "net"], "help": "EMA or raw base weights"}),
        Knob("--prefect", "prefect", {"action": "store_true",
                                      "help": "run as the vidloom-post Prefect flow"})])
    alias(sub, "merge", "merge", "average the weights of DiT checkpoints of one model", [
        Knob("ckpts", "input:checkpoints", {"nargs": "+", "metavar": "CKPT", "help": "checkpoints (>= 2)"}),
        Knob("--weights", "post.merge.weights", {"type": weights, "default": None,
                                                 "help": "one weight per checkpoint, e.g. 0.7,0.3"}),
        Knob("--out", "out", {"required": True, "help": "merged checkpoint file (.pt) or run directory"})])
