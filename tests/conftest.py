"""Shared fixtures: the real Fashion-MNIST copy, a session-wide checkpoint cache, and the CLI as a subprocess.

In CI (``CI=true``) a missing dataset is a failure, never a skip.
"""

from __future__ import annotations

import faulthandler
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_DEFAULT_DATA = REPO.parent / "shared" / "datasets"


def _data_root() -> Path:
    return Path(os.environ.get("EDGE_OPT_DATA_DIR", _DEFAULT_DATA))


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if not (root / "FashionMNIST" / "raw").is_dir():
        message = f"Fashion-MNIST not found under {root}; set EDGE_OPT_DATA_DIR"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained checkpoints: $EDGE_OPT_CACHE_DIR when set (CI shares it with the main job), else a session dir."""
    env = os.environ.get("EDGE_OPT_CACHE_DIR")
    return Path(env) if env else tmp_path_factory.mktemp("edge-opt-cache")


@pytest.fixture(scope="session")
def cli_env(data_root: Path, cache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["EDGE_OPT_DATA_DIR"] = str(data_root)
    env["EDGE_OPT_CACHE_DIR"] = str(cache_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), env.get("PYTHONPATH", "")]))
    return env


def run_cli(
    args: list[str], env: dict[str, str], *, module: str = "edge_opt.cli.export", timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run a console script's module in a fresh interpreter, as a user's shell would."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def parse_json_result(stdout: str) -> dict:
    return json.loads(stdout)


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL server of this run (``.ci/run`` starts one); a failure in CI, a skip elsewhere."""
    url = os.environ.get("EDGE_FLEET_TEST_POSTGRES", "")
    if not url:
        message = "EDGE_FLEET_TEST_POSTGRES is not set: run scripts/postgres_for_tests.sh DIR and export its output"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def agent(token_file: Path, tmp_path: Path):
    """A real agent in this process on 127.0.0.1 (port 0) with its own store: yields ``(port, store)``."""
    from edge_agent.config import AgentConfig
    from edge_agent.service.server import run_server

    store = tmp_path / "store"
    with run_server(AgentConfig(listen="127.0.0.1:0", store=store, token_file=token_file)) as (_server, port):
        yield port, store


@pytest.fixture(scope="module")
def tiny_pte(tmp_path_factory: pytest.TempPathFactory):
    """A small CNN lowered to an XNNPACK ``.pte`` (batch up to 8) and the model it came from: ``(path, model)``."""
    import torch
    from edge_opt.formats.executorch import export_pte
    from edge_test_models import tiny

    torch.manual_seed(0)
    model = tiny().eval()
    path = tmp_path_factory.mktemp("pte") / "model.pte"
    export_pte(model, torch.randn(1, 1, 28, 28), path, max_batch=8)
    return path, model


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """A token file holding the test token (``agent_helpers.TOKEN``), for agents started as subprocesses."""
    from agent_helpers import TOKEN

    path = tmp_path / "token"
    path.write_text(TOKEN)
    return path


#: The longest one ExecuTorch test may take before the run is ended with every thread's traceback.
HANG_LIMIT_SECONDS = 600


@pytest.fixture
def hang_guard():
    """A test that hangs (a native runtime stuck on a futex) ends the pytest process with tracebacks, never waits."""
    faulthandler.dump_traceback_later(HANG_LIMIT_SECONDS, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
