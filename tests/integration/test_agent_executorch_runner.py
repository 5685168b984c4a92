"""The device-side ExecuTorch runner on a real ``.pte`` lowered to XNNPACK here, and its refusal of garbage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from edge_agent.runtimes.executorch_program import ExecutorchLoadError, executorch_available, load

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


def _plan_sizes_by_executorch(data: bytes) -> int:
    """ExecuTorch's own deserializer of a .pte: the independent reading."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(data)
    program = getattr(program, "program", program)
    return sum(sum(plan.non_const_buffer_sizes[1:]) for plan in program.execution_plan)


def test_the_memory_plan_is_read_before_loading_and_a_huge_one_is_refused(tiny_pte: tuple[Path, torch.nn.Module]) -> None:
    # A program's planned working memory is allocated when its method loads, sized by the file: it is read from the
    # FlatBuffer first, and a program planning more than the worker may use never reaches the runtime.
    import struct

    from edge_agent.runtimes.executorch_program import planned_memory_bytes

    data = tiny_pte[0].read_bytes()
    planned = planned_memory_bytes(data)
    assert planned == _plan_sizes_by_executorch(data) > 0
    packed = struct.pack("<q", planned)
    assert data.count(packed) == 1
    huge = data.replace(packed, struct.pack("<q", 1 << 40))
    assert planned_memory_bytes(huge) == 1 << 40
    with pytest.raises(ExecutorchLoadError, match=r"plans 1048576 MiB of working memory"):
        load(huge, max_planned_bytes=8 << 30)
    with pytest.raises(ExecutorchLoadError, match=r"outside the file|runs past the file"):
        planned_memory_bytes(data[:64])


def test_the_forward_input_is_read_from_the_flatbuffer_as_the_runtime_reads_it(tiny_pte: tuple[Path, torch.nn.Module]) -> None:
    # The host reads a user's .pte without the ExecuTorch runtime (edge-agent bench model.pte): its reading of the
    # forward method's input must be the runtime's, and a damaged file must be a refusal, never a crash.
    from edge_agent.runtimes.executorch_program import program_input

    data = tiny_pte[0].read_bytes()
    program = load(data)
    assert program_input(data) == (program.declared_shape, program.dtype) == ([1, 1, 28, 28], "float32")
    rng = np.random.default_rng(0)
    cuts = [*range(0, 200, 7), *rng.integers(0, len(data), 40).tolist()]
    damaged = []
    for _ in range(200):
        copy = bytearray(data)
        for pos in rng.integers(0, min(len(data), 4096), 4):
            copy[pos] = int(rng.integers(0, 256))
        damaged.append(bytes(copy))
    refused = 0
    for variant in [data[:cut] for cut in cuts] + damaged:
        try:
            shape, dtype = program_input(variant)
        except ExecutorchLoadError:  # the only way it may fail: never IndexError, struct.error, a hang
            refused += 1
            continue
        assert dtype in ("float32", "float16") and len(shape) >= 2 and all(d >= 1 for d in shape)
    assert refused > len(cuts) // 2
    with pytest.raises(ExecutorchLoadError):
        program_input(data[:64])
