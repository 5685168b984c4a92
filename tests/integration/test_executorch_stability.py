"""The ExecuTorch runtime stays up: the thread-pool rule of ``edge_agent.runtimes.executorch_program``, checked in fresh
processes (a crash is a return code here, a hang a timeout, never a dead or stuck test run).

Resetting XNNPACK's pool (``_unsafe_reset_threadpool``) after a program has loaded leaves the loaded method on a
freed pool: the process then died with SIGSEGV or hung on a futex, now and then. The runner therefore sizes the
pool only before the first load; these tests drive it the way that used to crash.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO
from edge_opt.formats.executorch import export_pte
from edge_test_models import tiny

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]

#: One scenario's wall-clock limit: importing torch and executorch takes seconds, the calls well under a second.
SCENARIO_TIMEOUT = 180


@pytest.fixture(scope="module")
def pte(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pte") / "model.pte"
    export_pte(tiny().eval(), torch.randn(1, 1, 28, 28), path, max_batch=1)
    return path


def _scenario(code: str, pte: Path) -> dict:
    """Run ``code`` in a fresh interpreter with ``PTE`` set; its last stdout line is JSON."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "agent"), os.environ.get("PYTHONPATH", "")])}
    prelude = (
        "import json, sys\nimport numpy as np\nfrom edge_agent.runtimes import executorch_program as er\n"
        f"PTE = {str(pte)!r}\nX = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", prelude + code], env=env, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the ExecuTorch scenario hung (no exit in {SCENARIO_TIMEOUT} s)")
    assert proc.returncode == 0, f"the ExecuTorch scenario died (return code {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_asking_for_other_threads_after_a_load_keeps_the_pool_and_the_process(pte: Path) -> None:
    # setup / execute: load, then ask for a different pool size (what used to reset the pool under the method),
    # churn the allocator, and call the method many times
    got = _scenario(
        "p = er.load(PTE)\n"
        "first = p.call(X).copy()\n"
        "before = er.thread_count()\n"
        "after = er.set_threads(before + 1)\n"
        "junk = [bytearray(np.random.default_rng(i).bytes(1 << 16)) for i in range(200)]\n"
        "bad = sum(int(not np.array_equal(p.call(X), first)) for _ in range(3000))\n"
        "print(json.dumps({'before': before, 'after': after, 'now': er.thread_count(), 'bad': bad}))\n",
        pte,
    )
    # assert: the pool was left alone and every call gave the first call's output
    assert got["after"] == got["before"] == got["now"]
    assert got["bad"] == 0


def test_the_pool_is_sized_before_the_first_load_only(pte: Path) -> None:
    got = _scenario(
        "a = er.load(PTE, threads=1)\n"
        "b = er.load(open(PTE, 'rb').read(), threads=2)\n"  # a second program: the pool stays as the first one set it
        "same = all(np.array_equal(a.call(X), b.call(X)) for _ in range(500))\n"
        "print(json.dumps({'a': a.threads, 'b': b.threads, 'now': er.thread_count(), 'same': same}))\n",
        pte,
    )
    assert got == {"a": 1, "b": 1, "now": 1, "same": True}


def test_many_programs_loaded_and_dropped_in_one_process(pte: Path) -> None:
    # Loads and drops in a loop, with calls from the survivors in between: the pattern of a long validation run.
    got = _scenario(
        "ref = er.load(PTE).call(X).copy()\n"
        "keep, bad = [], 0\n"
        "for i in range(60):\n"
        "    p = er.load(open(PTE, 'rb').read() if i % 2 else PTE)\n"
        "    keep = (keep + [p])[-5:]\n"
        "    bad += sum(int(not np.array_equal(q.call(X), ref)) for q in keep for _ in range(20))\n"
        "print(json.dumps({'bad': bad}))\n",
        pte,
    )
    assert got == {"bad": 0}


def test_refused_program_leaves_the_runtime_usable(pte: Path) -> None:
    got = _scenario(
        "ok = er.load(PTE)\n"
        "refused = 0\n"
        "for blob in (b'', b'ET12' * 64, bytes(8) + b'ET12' + bytes(300), open(PTE, 'rb').read()[:200]):\n"
        "    try:\n"
        "        er.load(blob)\n"
        "    except er.ExecutorchLoadError:\n"
        "        refused += 1\n"
        "print(json.dumps({'refused': refused, 'shape': list(ok.call(X).shape)}))\n",
        pte,
    )
    assert got == {"refused": 4, "shape": [1, 10]}
