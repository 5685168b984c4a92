"""Run a model with its own runtime: accuracy on a split, parity against another model, host latency.

A :class:`Runner` takes float32 NCHW input (as :class:`edge_opt.data.Preprocessing` makes it) and returns float32
logits, whatever runtime and input dtype it uses inside: FP16 models get their inputs cast automatically.

Evaluation modes (recorded in every manifest's ``host_metrics.evaluation``):

* ``host-kernels``: the artifact runs on this host's fastest kernels (ONNX Runtime with every graph optimisation).
  Right when this host *is* the artifact's target: its kernels are the ones the device runs.
* ``reference-semantics``: the model's own arithmetic, executed as written. For a QDQ ONNX model that is ONNX
  Runtime with graph optimisations disabled: QuantizeLinear, the float operator and DequantizeLinear run one by
  one, which every correct device reproduces (an emulated Raspberry Pi agrees to 5e-7). A host's optimised INT8
  kernels are not always that: on an AVX2-only x86 (no VNNI) ONNX Runtime's kernels for int8 activations, and for
  uint8 activations without ``reduce_range``, differ from it by up to two quantization steps. For TorchScript INT8
  the semantics are the quantized engine's integer kernels (``torch.backends.quantized.engine``): an x86 torch
  build has every engine, so an artifact built for ``qnnpack`` (arm64) runs on the host with ``qnnpack``, as on
  the device; the x86 engine's default qconfig uses 7-bit activations (``reduce_range``), so its AVX2 kernels
  (VPMADDUBSW) cannot saturate either.

The host is the target when ``resolve_target("host").name`` equals the artifact's target profile name: the profile
names the kernels (VNNI or not, signed or unsigned activations), so two machines with the same profile run the
same kernel family.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from edge_agent.worker.timing import LatencyStats, measure
from torch import nn

from edge_opt.data import Preprocessing, Split
from edge_opt.quant.fx import check_backend
from edge_opt.targets import resolve_target

if TYPE_CHECKING:  # the config derives its formats from the registry above this module: only its type is needed
    from edge_opt.config import BenchmarkSection


class Runner(Protocol):
    name: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...

    def threads(self, n: int) -> contextlib.AbstractContextManager[None]: ...


class TorchRunner:
    """An eager or TorchScript module; ``engine`` is the quantized engine its INT8 kernels need."""

    def __init__(
        self, module: nn.Module, *, dtype: torch.dtype = torch.float32, engine: str | None = None, name: str = "torch"
    ) -> None:
        self.module = module.eval()
        self.dtype = dtype
        self.engine = engine
        self.name = name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.engine and torch.backends.quantized.engine != self.engine:
            check_backend(self.engine)
            torch.backends.quantized.engine = self.engine  # INT8 kernels are the engine's; set once, cheaply
        with torch.inference_mode():
            out = self.module(torch.from_numpy(x).to(self.dtype))
        return out.float().numpy()

    @contextlib.contextmanager
    def threads(self, n: int) -> Iterator[None]:
        previous = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


HOST_KERNELS = "host-kernels"
REFERENCE_SEMANTICS = "reference-semantics"


def evaluation_mode(artifact_target: str, *, quantized: bool, host_target: str | None = None) -> str:
    """How the host evaluates an artifact built for ``artifact_target``.

    Float artifacts are the same file for every target and float kernels agree to rounding: ``host-kernels``.
    INT8 artifacts use ``host-kernels`` only when this host's profile is the artifact's target, otherwise
    ``reference-semantics``.
    """
    if not quantized:
        return HOST_KERNELS
    if host_target is None:
        host_target = resolve_target("host").name
    return HOST_KERNELS if host_target == artifact_target else REFERENCE_SEMANTICS


def output_step(path: Path) -> float:
    """The quantization step of a QDQ ONNX model's output: the scale of the DequantizeLinear that produces it.

    An optimised integer kernel may round a tie the other way and land one such step from the model's semantics
    (``reference-semantics``), so comparisons of a device with the semantics allow one step. 0.0 when the output is
    not dequantized (float models), so such comparisons stay exact; ValueError when its scale is not a constant.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = next((node for node in graph.node if graph.output[0].name in node.output), None)
    if producer is None or producer.op_type != "DequantizeLinear":
        return 0.0
    scale = next((i for i in graph.initializer if i.name == producer.input[1]), None)
    if scale is None:
        raise ValueError(f"{path}: the output's DequantizeLinear takes its scale {producer.input[1]!r} from a node, "
                         "not an initializer; export it with constant folding (edge-export does)")
    return float(np.max(numpy_helper.to_array(scale)))


def predict(runner: Runner, split: Split, preprocessing: Preprocessing, batch_size: int) -> np.ndarray:
    """Outputs for every item of ``split``, one flattened row per item (float32, ``(N, outputs)``)."""
    outs = [runner(x.numpy()) for x, _ in split.batches(preprocessing, batch_size)]
    return np.concatenate([out.reshape(out.shape[0], -1) for out in outs])


def accuracy_of(logits: np.ndarray, labels: torch.Tensor | None) -> float:
    """Top-1 accuracy of ``logits`` against ``labels`` (unlabelled data has none: callers check first)."""
    if labels is None:
        raise ValueError("top-1 accuracy needs labelled data")
    return float((logits.argmax(axis=1) == labels.numpy()).mean())


@dataclass(frozen=True)
class Parity:
    """How closely a candidate's logits follow a reference's on the same inputs."""

    samples: int
    top1_agreement: float
    max_abs_error: float
    mean_cosine: float
    finite: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def parity(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    finite = bool(np.isfinite(candidate).all())
    ref = reference.astype(np.float64)
    cand = np.nan_to_num(candidate.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    dot = (ref * cand).sum(axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = np.where(norms > 0, dot / np.maximum(norms, 1e-30), 0.0)
    return Parity(
        samples=int(reference.shape[0]),
        top1_agreement=float((reference.argmax(1) == candidate.argmax(1)).mean()),
        max_abs_error=float(np.abs(ref - cand).max()) if finite else float("inf"),
        mean_cosine=float(cosine.mean()),
        finite=finite,
    )


def host_latency(runner: Runner, preprocessing: Preprocessing, batch_size: int, settings: BenchmarkSection) -> LatencyStats:
    """Latency of one call at ``batch_size`` with ``settings.threads`` threads on this host."""
    rng = np.random.default_rng(0)
    shape = (batch_size, preprocessing.channels, preprocessing.height, preprocessing.width)
    x = rng.standard_normal(shape, dtype=np.float32)
    with runner.threads(settings.threads):
        return measure(
            lambda: runner(x),
            warmup_runs=settings.warmup_runs,
            warmup_min_seconds=settings.warmup_min_seconds,
            iterations=settings.iterations,
            min_seconds=settings.min_seconds,
        )
