"""Target profiles: INT8 is built for the device's kernels, not the host's.

A profile decides the PyTorch quantized engine (and so the FX qconfig: per-channel with ``reduce_range`` on x86,
per-tensor without it on qnnpack) and the ONNX Runtime static-quantization types. The choices are measured, not
guessed:

* x86-64 with VNNI: ONNX Runtime's fast path is uint8 activations × int8 weights (U8S8). ORT 1.32 defaults to
  int8 activations (S8S8), which left 11 of 20 ResNet18 convolutions running in FP32 between Dequantize and
  Quantize nodes and made INT8 2–3× slower than U8S8 on this kind of CPU.
* x86-64 without VNNI (AVX2 / AVX-512 only): the U8S8 kernels use VPMADDUBSW, which can saturate; ORT's
  documented remedy is ``reduce_range`` (7-bit weights).
* arm64 (Raspberry Pi 4/5): ORT recommends S8S8 on ARM; a Pi's torch offers only qnnpack (and onednn), whose
  default FX qconfig is per-tensor with ``reduce_range=False``.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from typing import Any

from edge_agent.device.cpu import cpu_flags, suggested_target

from edge_opt.errors import ConfigError


@dataclass(frozen=True)
class TargetProfile:
    name: str
    arch: str
    description: str
    #: ``torch.backends.quantized.engine`` for FX INT8 (and the qconfig mapping it implies).
    torch_engine: str
    #: ONNX Runtime ``QuantType`` names for activations and weights.
    ort_activation_type: str
    ort_weight_type: str
    ort_per_channel: bool
    ort_reduce_range: bool

    def to_manifest(self) -> dict[str, Any]:
        return asdict(self)


PROFILES: dict[str, TargetProfile] = {
    p.name: p
    for p in (
        TargetProfile(
            name="x86_64",
            arch="x86_64",
            description="x86-64 with AVX-512 VNNI or AVX-VNNI (recent Intel / AMD Zen 4)",
            torch_engine="x86",
            ort_activation_type="QUInt8",
            ort_weight_type="QInt8",
            ort_per_channel=True,
            ort_reduce_range=False,
        ),
        TargetProfile(
            name="x86_64-avx2",
            arch="x86_64",
            description="x86-64 without VNNI (AVX2 / AVX-512F only): 7-bit weights avoid U8S8 saturation",
            torch_engine="x86",
            ort_activation_type="QUInt8",
            ort_weight_type="QInt8",
            ort_per_channel=True,
            ort_reduce_range=True,
        ),
        TargetProfile(
            name="arm64",
            arch="aarch64",
            description="arm64, e.g. Raspberry Pi 4 (Cortex-A72) or Pi 5 (Cortex-A76)",
            torch_engine="qnnpack",
            ort_activation_type="QInt8",
            ort_weight_type="QInt8",
            ort_per_channel=True,
            ort_reduce_range=False,
        ),
    )
}

def profile_for(arch: str, flags: set[str]) -> TargetProfile:
    """The profile for a machine with this architecture and these CPU flags.

    Raises:
        ConfigError: an architecture no profile covers.
    """
    name = suggested_target(arch, flags)
    if name:
        return PROFILES[name]
    raise ConfigError(f"no target profile for architecture {arch!r}; pass --target with one of {', '.join(PROFILES)}")


def resolve_target(name: str) -> TargetProfile:
    """``host`` → the profile of this machine; otherwise a profile by name.

    Raises:
        ConfigError: an unknown name, listing the known ones.
    """
    if name == "host":
        return profile_for(platform.machine(), cpu_flags())
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown target {name!r}; expected one of host, {', '.join(PROFILES)}") from None
