"""INT8 by PT2E post-training quantization: ``torch.export`` → ``prepare_pt2e`` → calibration → ``convert_pt2e``.

This is PyTorch's supported quantization path (``torchao.quantization.pt2e``), the one that leads to ExecuTorch;
FX INT8 (:func:`edge_opt.quant.fx.to_int8`) stays for TorchScript. Steps of :func:`to_int8_pt2e`:

1. ``torch.export.export`` of an eval-mode copy, with a dynamic batch axis (1..``max_batch``), then ``.module()``;
2. ``prepare_pt2e`` with the target's quantizer: XNNPACKQuantizer (symmetric int8, per-channel weights), the
   quantizer of the XNNPACK delegate that runs the result on arm64 and x86 alike; layers named in ``keep_float``
   get no quantization config, so they stay in float as ``--keep-float`` does for FX;
3. exactly ``calibration_batches`` forward passes over the same calibration batches FX INT8 uses;
4. ``convert_pt2e``: a graph of float operators between quantize / dequantize pairs, the reference semantics the
   lowered ``.pte`` is validated against.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from edge_opt import progress
from edge_opt.errors import QuantizeError
from edge_opt.quiet import known_warnings_silenced, quiet_import_loggers

#: PT2E quantizers this toolchain builds with, by config name (``quantization.pt2e_quantizer``).
QUANTIZERS = ("xnnpack",)


def export_program(model: nn.Module, example: torch.Tensor, max_batch: int) -> torch.export.ExportedProgram:
    """``torch.export`` with a dynamic batch axis of 1..``max_batch``.

    Raises:
        QuantizeError: the model cannot be exported (data-dependent Python control flow, unsupported operators),
            with the first line of torch's reason and what to do.
    """
    batch = torch.export.Dim("batch", min=1, max=max(2, max_batch))
    # An example batch of 2: torch.export specialises a dimension of size 1 instead of keeping it dynamic.
    x = example[:1].expand(2, *example.shape[1:]).contiguous()
    with contextlib.suppress(NotImplementedError):  # a PT2E graph module refuses .eval(); it has no train mode left
        model.eval()
    try:
        with known_warnings_silenced():
            program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
            # torch.export follows one side of a Python branch on the batch size and guards (or not) against the
            # other: a program that is wrong, or refuses, at batch 1 or 2 is not an export of this model.
            exported = program.module()
            with torch.no_grad():
                for size in (1, 2):
                    want, got = model(x[:size]), exported(x[:size])
                    if not torch.allclose(want.float(), got.float(), rtol=1e-3, atol=1e-3 * float(want.abs().max()) + 1e-6):
                        raise ValueError(f"the exported program's output differs from the model's at batch {size}")
            return program
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise QuantizeError(
            f"torch.export cannot export this model ({type(exc).__name__}: {first}); the ExecuTorch format needs a "
            "model without Python branches on tensor values or shapes (use torch.cond, or remove the branch), "
            "or leave executorch out of --format"
        ) from None


def quantizer_for(name: str, keep_float: Sequence[str] = (), *, per_channel: bool = True, qat: bool = False) -> Any:
    """The PT2E quantizer called ``name``, with ``keep_float`` modules left unquantized (``qat``: its QAT config)."""
    if name not in QUANTIZERS:
        raise QuantizeError(f"unknown PT2E quantizer {name!r}; expected one of {', '.join(QUANTIZERS)}")
    quiet_import_loggers()
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantizer import get_module_name_filter

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=qat))
    if keep_float:
        # XNNPACKQuantizer refuses set_module_name(name, None); a filter that skips the named modules' nodes does it.
        inside = [get_module_name_filter(name) for name in keep_float]
        quantizer = quantizer.set_filter_function(lambda node: not any(f(node) for f in inside))
    return quantizer


def to_int8_pt2e(
    model: nn.Module,
    calibration: Sequence[torch.Tensor],
    calibration_batches: int = 8,
    *,
    quantizer: str = "xnnpack",
    per_channel: bool = True,
    keep_float: Sequence[str] = (),
    max_batch: int = 64,
) -> torch.fx.GraphModule:
    """Post-training INT8 by PT2E, calibrated on real batches; ``model`` is not modified.

    Args:
        model: an FP32 model.
        calibration: input batches (NCHW float32); the first is also the export example.
        calibration_batches: how many batches to calibrate on.
        quantizer: a name in :data:`QUANTIZERS`.
        per_channel: per-channel weight scales (symmetric int8).
        keep_float: module names (as ``model.named_modules()`` has them) left in float.
        max_batch: the largest batch the exported graph accepts.

    Raises:
        QuantizeError: too few batches, an unknown module name, or a model torch.export cannot export.
    """
    quiet_import_loggers()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if calibration_batches < 1:
        raise QuantizeError(f"calibration_batches must be at least 1, got {calibration_batches}")
    if len(calibration) < calibration_batches:
        raise QuantizeError(
            f"asked for {calibration_batches} calibration batches but the data gave only {len(calibration)}; "
            "lower --calibration-batches or the batch size"
        )
    names = {n for n, _ in model.named_modules() if n}
    unknown = [n for n in keep_float if n not in names]
    if unknown:
        raise QuantizeError(
            f"--keep-float names no module of this model: {', '.join(unknown)}; "
            f"module names look like {', '.join(sorted(names)[:5])}, ..."
        )
    source = copy.deepcopy(model).float().eval()
    program = export_program(source, calibration[0], max(max_batch, max(len(b) for b in calibration)))
    with known_warnings_silenced():
        prepared = prepare_pt2e(program.module(), quantizer_for(quantizer, keep_float, per_channel=per_channel))
        with torch.no_grad():
            for x in progress.track(calibration[:calibration_batches], "calibrating (PT2E)", calibration_batches):
                prepared(x)
        return convert_pt2e(prepared)


def pt2e_record(
    quantizer: str, per_channel: bool, calibration_batches: int, batch_size: int, keep_float: Sequence[str]
) -> dict[str, Any]:
    """What the manifest says about a PT2E INT8 model."""
    from importlib.metadata import version

    return {
        "engine": "torchao.quantization.pt2e (prepare_pt2e / convert_pt2e)",
        "torchao": version("torchao"),
        "quantizer": {"xnnpack": "XNNPACKQuantizer"}[quantizer],
        "scheme": "int8 activations (per-tensor affine), int8 weights (symmetric)",
        "per_channel": per_channel,
        "calibration_batches": calibration_batches,
        "calibration_batch_size": batch_size,
        "modules_kept_float": list(keep_float),
    }
