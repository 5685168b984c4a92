"""Writing model files: TorchScript (traced and frozen) and ONNX (FP32, FP16); INT8 ONNX is
:mod:`edge_opt.quant.ort`.

Each function writes exactly one file at the path it is given; the caller (``edge_opt.export.artifact``) stages that path
and only publishes it after validation. Measured facts that shaped this module (torch 2.14, onnxruntime 1.32):

* ONNX uses the TorchScript-based exporter (``dynamo=False``): 0.6 s against about 10 s for the dynamo exporter on
  MobileNetV2, and the dynamo exporter cannot export FX INT8 modules at all.
* FP16 ONNX is exported from the half-precision model, so its inputs and outputs are float16.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from edge_opt.errors import ExportError, first_line
from edge_opt.quant.fx import quantized_engine
from edge_opt.quiet import known_warnings_silenced

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_torchscript(module: nn.Module, example: torch.Tensor, path: Path, *, engine: str | None = None) -> None:
    """Trace ``module`` on ``example``, freeze it and save it; ``engine`` for INT8 modules.

    Freezing folds BatchNorm into convolutions; in FP16 that folding rounds the folded weights a second time and
    moved MobileNetV2's logits by 6% here, so half-precision modules are frozen without numeric rewrites.
    """
    optimize_numerics = example.dtype != torch.float16
    engine_ctx = quantized_engine(engine) if engine else contextlib.nullcontext()
    try:
        with engine_ctx, known_warnings_silenced(), torch.no_grad():
            traced = torch.jit.trace(module.eval(), (example,), check_trace=False)
            frozen = torch.jit.freeze(traced, optimize_numerics=optimize_numerics)
            torch.jit.save(frozen, str(path))
    except Exception as exc:
        raise ExportError(
            f"TorchScript export failed ({type(exc).__name__}: {first_line(exc)}); the model must be traceable "
            "(no data-dependent Python control flow), or export --format onnx only"
        ) from None


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    with known_warnings_silenced():
        return torch.jit.load(str(path), map_location="cpu").eval()


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path, *, opset: int) -> None:
    """Export with a dynamic batch axis; input ``input`` (NCHW), output ``logits``."""
    try:
        with known_warnings_silenced(), torch.no_grad():
            torch.onnx.export(
                module.eval(),
                (example,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
    except Exception as exc:
        raise ExportError(
            f"ONNX export failed ({type(exc).__name__}: {first_line(exc)}); try another export.opset in the config, "
            "or --format torchscript only"
        ) from None
