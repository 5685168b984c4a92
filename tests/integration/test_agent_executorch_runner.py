"""The device-side ExecuTorch runner on a real ``.pte`` lowered to XNNPACK here, and its refusal of garbage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from edge_agent.executorch_runner import ExecutorchLoadError, executorch_available, load

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]



def test_runs_a_pte_like_the_model_it_came_from(tiny_pte: tuple[Path, torch.nn.Module]) -> None:
    # setup
    path, model = tiny_pte
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28), dtype=np.float32)
    # execute
    program = load(path.read_bytes())
    out = np.concatenate([program.call(x[i : i + 1]) for i in range(len(x))])
    # assert
    assert executorch_available()
    assert program.declared_shape == [1, 1, 28, 28] and program.dtype == "float32" and program.version == "1.5.1"
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert out.shape == (3, 10)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def test_garbage_is_refused_with_a_reason(tmp_path: Path) -> None:
    bad = tmp_path / "model.pte"
    bad.write_bytes(b"not a program" * 100)
    with pytest.raises(ExecutorchLoadError, match="cannot load the program"):
        load(str(bad))
    with pytest.raises(ExecutorchLoadError, match="cannot load the program"):
        load(b"\0\0\0\0ET12" + b"\xff" * 200)
