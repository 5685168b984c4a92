"""Which layers does INT8 hurt? A per-layer report, and the path from "this layer" to "keep it in float".

* ONNX Runtime INT8: ``onnxruntime.quantization.qdq_loss_debug`` runs the FP32 and the QDQ model on the same
  calibration inputs, captures every intermediate activation of both, and gives the signal-to-quantization-noise
  ratio (SQNR, dB; higher is better) of each quantized activation against its float twin. The lowest are the most
  damaged; their producing nodes are what ``nodes_to_exclude`` keeps in float.
* FX INT8: for every conv / linear module, the model is quantized with that one module left in float
  (qconfig None) and its logits are compared with FP32's. The layers whose float copy buys back the most SQNR are
  the most sensitive; ``quantization.keep_float`` takes their module names.

Module names also select ONNX nodes: the exporter names nodes after the module scopes they came from (for example
``/features/features.0/Conv`` for ``features.0``); :func:`onnx_nodes_for_modules` does that mapping.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_opt.options import FxObserver
from edge_opt.quant.fx import quantized_engine, to_int8
from edge_opt.quant.ort import BatchReader
from edge_opt.quiet import known_warnings_silenced

WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass(frozen=True)
class LayerSensitivity:
    name: str
    sqnr_db: float  # ONNX: activation SQNR; FX: logits SQNR with this layer kept in float
    gain_db: float  # FX: SQNR gained over full INT8 by keeping this layer in float; ONNX: dB below the best layer


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - candidate.astype(np.float64)) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(signal, 1e-30) / noise)


def quantizable_modules(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and name]


def fx_sensitivity(
    model: nn.Module,
    calibration: Sequence[torch.Tensor],
    inputs: torch.Tensor,
    backend: str,
    observer: FxObserver = FxObserver.DEFAULT,
) -> tuple[float, list[LayerSensitivity]]:
    """Logits SQNR of full FX INT8, and per module the SQNR with that module kept in float (most sensitive first)."""
    with torch.no_grad():
        reference = model(inputs).numpy()

    def sqnr_with(keep: tuple[str, ...]) -> float:
        quantized = to_int8(
            model, calibration, calibration_batches=len(calibration), backend=backend, observer=observer, keep_float=keep
        )
        with quantized_engine(backend), torch.no_grad(), known_warnings_silenced():
            return sqnr_db(reference, quantized(inputs).numpy())

    base = sqnr_with(())
    layers = [LayerSensitivity(name, (s := sqnr_with((name,))), s - base) for name in quantizable_modules(model)]
    return base, sorted(layers, key=lambda layer: layer.gain_db, reverse=True)


def onnx_sensitivity(fp32_path: Path, int8_path: Path, batches: Sequence[np.ndarray]) -> list[LayerSensitivity]:
    """Per quantized activation of the INT8 ONNX model: SQNR against the FP32 model's (lowest first)."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    graph = onnx.load(str(fp32_path)).graph
    producers = {out: node for node in graph.node for out in node.output}
    with tempfile.TemporaryDirectory(prefix="edge-opt-sens-") as tmp, known_warnings_silenced():
        aug_float, aug_qdq = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        modify_model_output_intermediate_tensors(str(fp32_path), str(aug_float))
        modify_model_output_intermediate_tensors(str(int8_path), str(aug_qdq))
        float_acts = collect_activations(str(aug_float), BatchReader(batches))
        qdq_acts = collect_activations(str(aug_qdq), BatchReader(batches))
        errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    # Attribute each damaged activation to the weight layer upstream of it (through Relu, MaxPool, Flatten, ...):
    # that is the node nodes_to_exclude must name to keep the computation in float.
    worst: dict[str, float] = {}
    for tensor, err in errors.items():
        if "xmodel_err" not in err or tensor not in producers:
            continue
        node = producers[tensor]
        while node.op_type not in WEIGHT_OPS and node.input and node.input[0] in producers:
            node = producers[node.input[0]]
        if node.op_type in WEIGHT_OPS:
            worst[node.name] = min(worst.get(node.name, math.inf), float(err["xmodel_err"]))
    finite = [s for s in worst.values() if math.isfinite(s)]
    best = max(finite) if finite else 0.0
    return sorted((LayerSensitivity(name, s, s - best) for name, s in worst.items()), key=lambda layer: layer.sqnr_db)


def onnx_nodes_for_modules(onnx_path: Path, modules: Sequence[str]) -> list[str]:
    """ONNX node names that the exporter produced from these module names (matched on the node's scopes)."""
    import onnx

    wanted = [m for m in modules if m]
    nodes = []
    for node in onnx.load(str(onnx_path)).graph.node:
        scopes = [s for s in node.name.split("/") if s][:-1]
        if not scopes:
            continue
        for module in wanted:
            parts = module.split(".")
            if module.endswith(scopes[-1]) and all(_contiguous(s.split("."), parts) for s in scopes):
                nodes.append(node.name)
                break
    return nodes


def _contiguous(needle: list[str], haystack: list[str]) -> bool:
    n = len(needle)
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))
