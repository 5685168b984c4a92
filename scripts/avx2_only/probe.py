"""What this Python sees of the CPU, asked the way libraries ask: /proc/cpuinfo's flags and the CPUID instruction
itself (a few bytes of machine code run through ctypes), plus torch's kernel level when torch is installed.

Exit 0 when it sees an AVX2-only x86 (AVX2, and neither AVX-512 nor VNNI nor AMX in either place; torch, when
installed, at its AVX2 level), 1 otherwise.
Run by ``scripts/avx2_only.sh`` before the command, and by ``--check``.
"""

from __future__ import annotations

import ctypes
import mmap
import re
import sys
from pathlib import Path

#: push rbx; mov eax, edi; mov ecx, esi; cpuid; mov eax, <register>; pop rbx; ret
_REGISTER = {"eax": b"", "ebx": b"\x89\xd8", "ecx": b"\x89\xc8", "edx": b"\x89\xd0"}
#: the flags scripts/avx2_only.sh hides
_HIDDEN = re.compile(r"avx512|avx_vnni|avx_ifma|avx_ne_convert|amx_")


def cpuid(leaf: int, sub: int, register: str) -> int:
    code = b"\x53\x89\xf8\x89\xf1\x0f\xa2" + _REGISTER[register] + b"\x5b\xc3"
    buffer = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buffer.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    function = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32)(address)
    return int(function(leaf, sub))


def main() -> int:
    cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    flags = set(next((line for line in cpuinfo if line.startswith("flags")), ":").split(":", 1)[1].split())
    hidden = sorted(f for f in flags if _HIDDEN.match(f))
    leaf7 = {r: cpuid(7, 0, r) for r in ("ebx", "ecx", "edx")}
    seen = {
        "avx2": bool(leaf7["ebx"] >> 5 & 1),
        "avx512f": bool(leaf7["ebx"] >> 16 & 1),
        "avx512_vnni": bool(leaf7["ecx"] >> 11 & 1),
        "amx_int8": bool(leaf7["edx"] >> 25 & 1),
        "avx_vnni": bool(cpuid(7, 1, "eax") >> 4 & 1),
    }
    masked = "cpuid_mask.so" in Path("/proc/self/maps").read_text(encoding="utf-8")
    print(f"/proc/cpuinfo: avx2 {'avx2' in flags}, AVX-512/VNNI/AMX flags: {' '.join(hidden) or 'none'}")
    print(f"CPUID: {', '.join(f'{k} {v}' for k, v in seen.items())}; CPUID mask loaded: {masked}")
    avx2_only = "avx2" in flags and not hidden and seen["avx2"] and not any(v for k, v in seen.items() if k != "avx2")
    try:
        import torch
    except ImportError:
        print("torch: not installed in this Python")
    else:
        capability = torch.backends.cpu.get_cpu_capability()
        print(f"torch CPU capability: {capability}")
        avx2_only = avx2_only and capability == "AVX2"
    print("an AVX2-only x86" if avx2_only else "NOT an AVX2-only x86")
    return 0 if avx2_only else 1


if __name__ == "__main__":
    sys.exit(main())
