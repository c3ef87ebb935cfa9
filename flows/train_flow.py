"""The training flow: ``vidloom train`` (VAE unless given, then the DiT) as a Prefect flow.

Prefect holds the parameters, run history and schedules; the training itself is
``training.loop.run.train`` in the flow's process (one process; multi-GPU runs use ``torchrun
-m vidloom.cli train``). Training resumes from the newest checkpoints of ``out``, so a rerun of
the flow, a Prefect retry after a crash or the next scheduled run goes on where the last one
stopped; a finished run is not retrained.

Steps: a rerun may ask for more DiT ``steps`` than the run directory was started with: the flow
then updates ``out/config.yaml`` (``training.loop.run.extend_steps``: the only change accepted; any
other config change is refused) and training continues from the last checkpoint to the new total. The schedule
follows the new total (stage bounds and cosine decay are fractions of ``steps``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from training.config import TrainConfig, load_train_config, to_dict
from training.loop.run import extend_steps


def _config(preset: str, config_file: str | None, steps: int | None, vae_steps: int | None,
            overrides: list[str]) -> TrainConfig:
    items = list(overrides)
    if steps is not None:
        items.append(f"steps={steps}")
    if vae_steps is not None:
        items.append(f"vae_steps={vae_steps}")
    return load_train_config(preset, config_file, items)


@task(name="prepare-run")
def prepare_task(data: str, out: str, preset: str, config_file: str | None, steps: int | None,
                 vae_steps: int | None, overrides: list[str]) -> dict[str, Any]:
    """Resolve the config (preset, file, overrides) and accept a longer schedule on a rerun."""
    if not (Path(data) / "manifest.json").is_file():
        raise FileNotFoundError(f"{data} has no manifest.json: pass a shards directory")
    cfg = _config(preset, config_file, steps, vae_steps, overrides)
    if extend_steps(out, cfg):
        get_run_logger().info("%s: extending the DiT run to %d steps", out, cfg.steps)
    return to_dict(cfg)


@task(name="train", retries=1, retry_delay_seconds=10)
def train_task(config: dict[str, Any], data: str, out: str, vae: str | None,
               device: str | None) -> dict[str, Any]:
    """``training.loop.run.train``: VAE (unless ``vae``), then DiT; resumes, so a retry goes on."""
    from training.config import from_dict
    from training.loop.run import train

    return train(from_dict(config), data, out, vae=vae, progress=False, device=device)


@flow(name="vidloom-train", log_prints=True)
def train_flow(data: str, out: str, preset: str = "tiny", steps: int | None = None,
               vae: str | None = None, overrides: list[str] | None = None, vae_steps: int | None = None,
               config_file: str | None = None, device: str | None = None) -> dict[str, Any]:
    """Train (or resume) the VAE unless ``vae`` is given, then the DiT, on ``data`` into ``out``.

    Args:
        data: shards directory (pixels from ``vidloom curate``/``export``, or ``vidloom encode`` latents).
        out: run directory (config.yaml, checkpoints, log.jsonl, vae/).
        preset: tiny | small | b1.
        steps: DiT optimizer steps (a larger value on a rerun extends the run).
        vae: a trained VAE checkpoint or run directory (skips VAE training).
        overrides: ``key=value`` / ``section.key=value`` config overrides.
        vae_steps: VAE optimizer steps.
        config_file: YAML file with config overrides (applied before ``overrides``).
        device: torch device (default: cuda when available, else cpu).

    Returns ``training.loop.run.train``'s summary: ``out``, ``checkpoint``, ``dit`` (and ``vae``) with
    the steps done and the eval history.
    """
    data, out = str(Path(data).resolve()), str(Path(out).resolve())
    config = prepare_task(data, out, preset, config_file, steps, vae_steps, list(overrides or []))
    summary = train_task(config, data, out, vae, device)
    get_run_logger().info("trained %s -> %s", out, summary.get("checkpoint"))
    return summary


def training_deployment(data: str, out: str, cron: str, preset: str = "tiny", steps: int | None = None,
                        vae: str | None = None, overrides: list[str] | None = None,
                        name: str = "train") -> Any:
    """A deployment of the flow that trains ``data`` into ``out`` on ``cron``.

    Each scheduled run resumes from the run directory's newest checkpoints; once ``steps`` are
    done a run only reports. Raise ``steps`` on the deployment to train on.
    """
    params: dict[str, Any] = {"data": data, "out": out, "preset": preset, "overrides": list(overrides or [])}
    if steps is not None:
        params["steps"] = steps
    if vae is not None:
        params["vae"] = vae
    return train_flow.to_deployment(name=name, cron=cron, parameters=params)


def serve_training(data: str, out: str, cron: str, preset: str = "tiny", steps: int | None = None,
                   vae: str | None = None, overrides: list[str] | None = None, name: str = "train") -> None:
    """Register the training deployment with the Prefect API and serve its scheduled runs."""
    from prefect import serve

    serve(training_deployment(data, out, cron, preset, steps, vae, overrides, name))
