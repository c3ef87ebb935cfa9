"""Shared test setup: an offline, quiet environment, one local Ray cluster, generated videos.

The environment variables are set when this module is imported, before any test module
imports prefect, ray or transformers (their settings are read at import or init time).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parent

_ENV = {
    "HF_HUB_OFFLINE": "1",  # no weights can be downloaded here; fail fast instead of retrying
    "TRANSFORMERS_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",  # test clusters write no token to ~/.ray
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # see flows/__init__.py
}
for _key, _value in _ENV.items():
    os.environ.setdefault(_key, _value)
if "PREFECT_HOME" not in os.environ:  # the ephemeral Prefect server's SQLite lives here
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="vidloom-test-prefect-")
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _stop_prefect_server_in_session() -> Iterator[None]:
    """Stop Prefect's ephemeral server (if a test started one) while pytest's output is open.

    Prefect otherwise stops it at exit and logs through a console bound to pytest's captured
    stdout, closed by then, which prints a "--- Logging error ---" traceback.
    """
    yield
    server = sys.modules.get("prefect.server.api.server")
    if server is not None:
        server.SubprocessASGIServer().stop()  # the default (ephemeral) instance; no-op if none


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """One local 2-CPU Ray cluster for the whole session; a ``RayRunner`` joins it.

    Test modules that define stages must be importable by the workers under the name
    pytest gave them (``tests/`` is on the driver's ``sys.path`` only): the local
    cluster's workers inherit the driver's environment, so ``PYTHONPATH`` carries it.
    """
    ray = pytest.importorskip("ray")
    env = pytest.MonkeyPatch()
    env.setenv("RAY_USAGE_STATS_ENABLED", "0")
    env.setenv("RAY_AUTH_MODE", "disabled")
    env.delenv("RAY_ADDRESS", raising=False)  # always a local test cluster
    env.setenv("PYTHONPATH", str(TESTS_DIR), prepend=os.pathsep)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        env.undo()


@pytest.fixture(scope="session")
def demo_samples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """The demo videos (samplegen.samples): ``(directory, samples.json manifest)``."""
    from samplegen.samples import generate_demo_samples

    directory = tmp_path_factory.mktemp("demo")
    return directory, generate_demo_samples(directory)


@pytest.fixture()
def demo_inputs(demo_samples: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path) -> Any:
    """``demo_inputs(names)``: a fresh ``tmp_path/in`` holding copies of those demo videos."""

    def copy(names: tuple[str, ...]) -> Path:
        src, _ = demo_samples
        inputs = tmp_path / "in"
        inputs.mkdir(exist_ok=True)
        for name in names:
            shutil.copy(src / name, inputs / name)
        return inputs

    return copy


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Inputs that ingest must survive: ``(directory, {relative name: what it is})``."""
    from samplegen.samples import generate_bad_inputs

    directory = tmp_path_factory.mktemp("bad")
    return directory, generate_bad_inputs(directory)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module of tiny models: they run many small ops, which extra threads
    only slow down on a loaded 2-core machine (use with ``pytest.mark.usefixtures("one_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
