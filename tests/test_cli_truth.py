"""The CLI tells the truth: --help everywhere, --version, flags passed through to vLLM, exit codes
that say whether anything was curated, one --log-level, worker tracebacks that reach the log."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import socket
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pipelines.stage import Stage
from vidloom.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and subcommand path of the parser (``('distill', 'cfg')``...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _commands(sub, (*prefix, name))


def _delegated(parser: argparse.ArgumentParser) -> list[tuple[str, ...]]:
    """Commands whose subcommands another parser handles: each benchmark, caption-server convert."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    what = next(a for a in sub.choices["bench"]._actions if a.dest == "what")
    return [("bench", w) for w in what.choices] + [("caption-server", "convert")]


COMMANDS = sorted(set(_commands(build_parser())) | set(_delegated(build_parser())))


def test_the_command_list_is_complete() -> None:
    names = {c[0] for c in COMMANDS}
    assert {"curate", "export", "query", "caption-server", "train", "distill", "bench"} <= names
    assert ("distill", "cfg") in COMMANDS


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_help_works_on_every_command(cmd: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("usage:"), out[:200]
    assert f"vidloom {' '.join(cmd)}" in out.split("\n\n")[0]


def test_version_names_the_package_and_commit(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code in (0, None)
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"vidloom {version('vidloom')}")
    sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if sha.returncode == 0:
        assert f"(git {sha.stdout.strip()}" in out


def test_log_level_is_global_and_on_each_command() -> None:
    parser = build_parser()
    assert parser.parse_args(["--log-level", "debug", "query", "db", "sql"]).log_level == "debug"
    assert parser.parse_args(["query", "db", "sql", "--log-level", "ERROR"]).log_level == "error"
    args = parser.parse_args(["distill", "report", "--teacher", "t", "--log-level", "info"])
    assert args.log_level == "info"
    assert parser.parse_args(["gc", "d"]).log_level is None  # unset: vidloom/logs.py's default
    with pytest.raises(SystemExit):
        parser.parse_args(["query", "db", "sql", "--log-level", "loud"])


def test_log_level_sets_vidloom_loggers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PREFECT_LOGGING_ROOT_LEVEL", "RAY_BACKEND_LOG_LEVEL", "PREFECT_LOGGING_EXTRA_LOGGERS"):
        monkeypatch.delenv(var, raising=False)
    before = {n: logging.getLogger(n).level for n in ("", "pipelines", "ray")}
    try:
        assert main(["query", str(tmp_path / "none.duckdb"), "SELECT 1", "--log-level", "info"]) == 2
        assert logging.getLogger("pipelines.runner").getEffectiveLevel() == logging.INFO
        assert logging.getLogger("ray").level == logging.WARNING  # Ray's INFO start-up lines stay hushed
        assert os.environ["RAY_BACKEND_LOG_LEVEL"] == "fatal"
        assert "pipelines" in os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"].split(",")
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


# --- caption-server ---------------------------------------------------------------------------


def test_caption_server_help_is_vidloom_help_and_names_vllms(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["caption-server", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vidloom caption-server")
    assert "--vllm-help" in out and "--model" in out and "passed to it unchanged" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_readme_caption_server_command_asks_for_the_gpu_extra(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["caption-server", "--model", "X", "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert "install the gpu extra" in err and "unrecognized arguments" not in err


STUB_SERVER = '''
import http.server, json, os, sys
with open(os.environ["STUB_ARGV"], "w") as f:
    json.dump(sys.argv[1:], f)
port = int(sys.argv[sys.argv.index("--port") + 1])

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": "stub"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.path == "/v1/models":
            self.server.done = True
    def log_message(self, *a):
        pass

s = http.server.HTTPServer(("127.0.0.1", port), H)
s.done = False
while not s.done:
    s.handle_request()
'''


def test_unknown_caption_server_flags_go_to_vllm(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in ``vllm`` package (an HTTP server that records its argv) on another interpreter."""
    pkg = tmp_path / "stub" / "vllm" / "entrypoints" / "openai"
    pkg.mkdir(parents=True)
    for d in (pkg, pkg.parent, pkg.parent.parent):
        (d / "__init__.py").write_text("")
    (pkg / "api_server.py").write_text(STUB_SERVER)
    python = tmp_path / "python-with-vllm"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={tmp_path / 'stub'} exec {sys.executable} \"$@\"\n")
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("STUB_ARGV", str(tmp_path / "argv.json"))
    port = _free_port()
    rc = main(["caption-server", "--model", "some/model", "--port", str(port), "--python", str(python),
               "--tensor-parallel-size", "2", "--enforce-eager", "--startup-timeout", "60",
               "--log-file", str(tmp_path / "server.log")])
    assert rc == 0, capsys.readouterr().err
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[argv.index("--model") + 1] == "some/model" and argv[argv.index("--port") + 1] == str(port)
    assert argv[-3:] == ["--tensor-parallel-size", "2", "--enforce-eager"]
    assert f"ready at http://127.0.0.1:{port}/v1 serving stub" in capsys.readouterr().out


# --- curate exit status -----------------------------------------------------------------------


def _testsrc(path: Path, seconds: float = 3.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=duration={seconds}:size=192x108:rate=25", "-pix_fmt", "yuv420p", str(path)],
                   check=True, timeout=60)
    return path


def _junk(path: Path) -> Path:
    """Bytes that no FFmpeg demuxer takes. Not random bytes: now and then those probe as MPEG audio
    (a frame sync is 11 set bits), and the file then fails as 'no video stream', not 'cannot open'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"vidloom test input: this file is not a video.\n" * 90)
    return path


def _curate(src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "vidloom.cli", "curate", str(src), "--out", str(out), "--preset", "tiny",
           "--quiet", *extra]
    env = {**os.environ, "PREFECT_HOME": str(out.parent / "prefect")}
    env.pop("RAY_BACKEND_LOG_LEVEL", None)  # vidloom's own default, not the test runner's
    return subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=ROOT)


def test_curate_without_inputs_exits_1_and_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a video")
    proc = _curate(tmp_path / "empty", tmp_path / "out")
    assert proc.returncode == 1
    assert "no input video found" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_curate_where_every_video_fails_exits_1(tmp_path: Path) -> None:
    _junk(tmp_path / "in" / "a.mp4")
    _junk(tmp_path / "in" / "b.mov")
    proc = _curate(tmp_path / "in", tmp_path / "out", "--no-prefect", "--runner", "sequential")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "none of the 2 input files could be processed" in proc.stderr
    assert f"failed    {tmp_path / 'in' / 'a.mp4'}: cannot open" in proc.stdout


def test_curate_with_a_partial_failure_exits_0_and_lists_it(tmp_path: Path) -> None:
    _testsrc(tmp_path / "in" / "good.mp4")
    _junk(tmp_path / "in" / "bad.mp4")
    proc = _curate(tmp_path / "in", tmp_path / "out", "--no-prefect", "--runner", "sequential")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "inputs      2 files: 1 processed, 1 failed" in proc.stdout
    assert f"failed    {tmp_path / 'in' / 'bad.mp4'}: cannot open" in proc.stdout
    assert "good.mp4" not in proc.stdout.split("inputs")[1]


@pytest.mark.slow
def test_curate_on_prefect_and_ray_hushes_ray_start_up_errors(tmp_path: Path) -> None:
    """The default path. Ray's core worker prints 'E ... core_worker.cc' lines when actor pools start;
    they are not errors of the run, and only ``--log-level debug`` shows them."""
    _testsrc(tmp_path / "in" / "good.mp4")
    _junk(tmp_path / "in" / "bad.mp4")
    proc = _curate(tmp_path / "in", tmp_path / "out", "--runner", "ray")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 processed, 1 failed" in proc.stdout
    assert "| INFO    | Task run '" in proc.stderr  # Prefect's run lines, in Prefect's format, still print
    assert not re.search(r"^\[[^]]* E \d+ \d+\] \w+\.cc:\d+", proc.stderr, re.M), proc.stderr


# --- worker tracebacks ------------------------------------------------------------------------


@dataclass(slots=True)
class Item:
    value: int
    error: str | None = None


@dataclass
class Explode(Stage[Item, Item]):
    name: ClassVar[str] = "explode"

    def process(self, task: Item) -> Item:
        if task.value % 2:
            deep_failure(task.value)
        return task


@dataclass
class PlusOne(Stage[Item, Item]):
    name: ClassVar[str] = "plus_one"

    def process(self, task: Item) -> Item:
        task.value += 1
        return task


def deep_failure(value: int) -> None:
    raise RuntimeError(f"odd value {value}")


def test_a_ray_workers_traceback_reaches_the_driver_log(ray_cluster: Any, caplog: pytest.LogCaptureFixture,
                                                        ) -> None:
    """The error happens in a Ray worker (whose logs are not forwarded) two stages before the end."""
    from pipelines.runner import RayRunner

    with caplog.at_level(logging.WARNING, logger="pipelines.runner"):
        out = list(RayRunner().run([Explode(), PlusOne(), PlusOne()], [Item(i) for i in range(4)],
                                   progress=False))
    assert sorted((t.value, t.error) for t in out) == [(1, "explode: RuntimeError: odd value 1"), (2, None),
                                                       (3, "explode: RuntimeError: odd value 3"), (4, None)]
    records = [r.getMessage() for r in caplog.records if "(in a Ray worker)" in r.getMessage()]
    assert len(records) == 2, [r.getMessage() for r in caplog.records]
    for text in records:
        assert "Traceback (most recent call last)" in text and "in deep_failure" in text
        assert "explode failed on Item(value=" in text


PREFECT_SCRIPT = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, {tests!r})
    from vidloom.logs import setup
    setup("warning")  # what vidloom.cli.main does before Prefect is imported
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId
    from prefect.context import get_run_context
    from pipelines.runner import RayRunner, SequentialRunner
    from test_cli_truth import Explode, Item

    @task(name="explode-step")
    def step():
        list(SequentialRunner().run([Explode()], [Item(1)], progress=False))
        ray_runner = RayRunner(num_cpus=1)
        list(ray_runner.run([Explode()], [Item(3)], progress=False))
        ray_runner.shutdown()
        return str(get_run_context().task_run.id)

    @flow
    def f():
        return step()

    run_id = f()
    import asyncio, time
    async def logs():
        async with get_client() as c:
            for _ in range(40):
                found = await c.read_logs(LogFilter(task_run_id=LogFilterTaskRunId(any_=[run_id])))
                if sum("Traceback" in l.message for l in found) >= 2:
                    return [l.message for l in found]
                time.sleep(0.5)
            return [l.message for l in found]
    print("LOGS" + json.dumps(asyncio.run(logs())))
''')


@pytest.mark.slow
def test_a_stage_traceback_reaches_the_prefect_task_run(tmp_path: Path) -> None:
    """In the driver (sequential runner) and in a Ray worker: both end up in the task run's logs."""
    script = tmp_path / "flow.py"
    script.write_text(PREFECT_SCRIPT.format(tests=str(ROOT / "tests")))
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])  # Ray's workers import this module
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": path}
    env.pop("PREFECT_LOGGING_EXTRA_LOGGERS", None)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = json.loads(proc.stdout.split("LOGS", 1)[1])
    assert any("explode failed on Item(value=1" in m and "in deep_failure" in m for m in logs), logs
    assert any("(in a Ray worker) explode failed on Item(value=3" in m and "in deep_failure" in m
               for m in logs), logs
