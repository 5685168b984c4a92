"""What a CPU is, as both sides of the wire need to know it: its Linux feature flags, its name, and the INT8 target
profile that suits it. Read from /proc/cpuinfo, no dependency; the agent reports it in device info, the toolchain
uses it to build for ``--target host``.
"""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

#: CPU flags that decide INT8 speed: x86 VNNI/AVX, ARM NEON and dot-product.
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm", "sve")

#: x86 flags of the 8-bit dot-product instructions (the ``x86_64`` profile); without them, ``x86_64-avx2``.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})

_ARM_CORES = {"0xd03": "Cortex-A53", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76", "0xd05": "Cortex-A55"}


def _cpuinfo(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The CPU feature flags Linux reports (``flags`` on x86, ``Features`` on ARM); empty elsewhere."""
    for line in _cpuinfo(cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's name: ``model name`` on x86; on ARM the core, from its part number (a Pi's ``Model`` line names
    the board, which device info reports separately)."""
    fields: dict[str, str] = {}
    for line in _cpuinfo(cpuinfo).splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    if fields.get("model name"):
        return fields["model name"]
    if fields.get("CPU implementer") == "0x41" and fields.get("CPU part") in _ARM_CORES:
        return f"ARM {_ARM_CORES[fields['CPU part']]}"
    return fields.get("Hardware") or fields.get("Model") or platform.processor() or "unknown"


def suggested_target(arch: str, flags: set[str] | list[str]) -> str:
    """The target profile name for this architecture and these flags; "" for an architecture no profile covers."""
    arch = arch.lower()
    if arch in ("aarch64", "arm64"):
        return "arm64"
    if arch in ("x86_64", "amd64"):
        return "x86_64" if VNNI_FLAGS & set(flags) else "x86_64-avx2"
    return ""
