"""What the device is (static info) and what state it is in (temperature, frequency, throttling, load).

Everything is read from /proc and /sys, so it costs no dependency; fields the OS does not expose are NaN or
empty. The torch probe runs in a subprocess once (importing torch costs ~2 s and ~600 MB: never in the agent).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge_agent import __version__
from edge_agent.cpu import INT8_FLAGS, cpu_flags, cpu_model, suggested_target


@dataclass
class DeviceState:
    temperature_c: float = math.nan
    cpu_freq_mhz: float = math.nan
    governor: str = ""
    throttled: bool = False
    throttled_raw: str = ""
    load_1m: float = math.nan

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class RuntimeInfo:
    name: str
    version: str
    providers: list[str] = field(default_factory=list)
    quantized_engines: list[str] = field(default_factory=list)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip().rstrip("\x00")
    except OSError:
        return ""


def _meminfo() -> dict[str, int]:
    values = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        with contextlib.suppress(ValueError, IndexError):
            values[key] = int(rest.split()[0]) * 1024
    return values


def _os_name() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()


_torch_probe: RuntimeInfo | None = None
_torch_probe_done = threading.Event()


def start_torch_probe() -> None:
    """Probe the runtimes in the background (at agent start), so GetDeviceInfo never waits for them."""
    threading.Thread(target=_probe_runtimes, name="edge-agent-runtime-probe", daemon=True).start()


_ort_providers: list[str] = []


def _probe_runtimes() -> None:
    _probe_onnxruntime()
    _probe_torch()


def _probe_onnxruntime() -> None:
    """onnxruntime's execution providers, from a subprocess: the agent itself never imports a runtime."""
    global _ort_providers
    if importlib.util.find_spec("onnxruntime") is None:
        return
    code = "import json, onnxruntime; print(json.dumps(onnxruntime.get_available_providers()))"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
        _ort_providers = [str(p) for p in json.loads(out.stdout.strip().splitlines()[-1])]
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        _ort_providers = []


def _probe_torch() -> None:
    global _torch_probe
    if importlib.util.find_spec("torch") is not None:
        code = "import json, torch; print(json.dumps([torch.__version__, torch.backends.quantized.supported_engines]))"
        try:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
            version, engines = json.loads(out.stdout.strip().splitlines()[-1])
            _torch_probe = RuntimeInfo("torch", version, quantized_engines=[e for e in engines if e != "none"])
        except (subprocess.SubprocessError, ValueError, IndexError, OSError):
            _torch_probe = RuntimeInfo("torch", _dist_version("torch"))
    _torch_probe_done.set()


def torch_probe(wait: float = 0.0) -> RuntimeInfo | None:
    """torch's version and quantized engines (None if torch is not installed).

    Importing torch costs seconds, so it is probed once in a subprocess; until that finishes, the version from the
    package metadata is reported without the engines.
    """
    if importlib.util.find_spec("torch") is None:
        return None
    if not _torch_probe_done.wait(wait):
        return RuntimeInfo("torch", _dist_version("torch"))
    return _torch_probe


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def runtimes(probe_torch: bool = True) -> list[RuntimeInfo]:
    found = []
    if importlib.util.find_spec("onnxruntime") is not None:
        found.append(RuntimeInfo("onnxruntime", _dist_version("onnxruntime"), providers=list(_ort_providers)))
    torch = torch_probe(wait=0.5) if probe_torch else None
    if torch is not None:
        found.append(torch)
    if executorch_available():
        # From the package metadata: the runtime imports torch, which costs seconds; its delegate is XNNPACK.
        found.append(RuntimeInfo("executorch", _dist_version("executorch"), providers=["XnnpackBackend"]))
    return found


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def executorch_available() -> bool:
    """Can this device run .pte artifacts? (Found without importing it: the runtime imports torch.)"""
    from edge_agent.executorch_runner import executorch_available as available

    return available()


def _throttled() -> tuple[bool, str]:
    """Raspberry Pi firmware throttling flags (bits 0-3: now; 16-19: since boot)."""
    raw = _read("/sys/devices/platform/soc/soc:firmware/get_throttled")
    vcgencmd = shutil.which("vcgencmd")
    if not raw and vcgencmd:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            out = subprocess.run([vcgencmd, "get_throttled"], capture_output=True, text=True, timeout=2, check=False)
            raw = out.stdout.strip().partition("=")[2]
    if not raw:
        return False, ""
    try:
        value = int(raw, 16)  # "0x50005" from sysfs or vcgencmd
    except ValueError:
        return False, raw
    return bool(value & 0xF), raw


def device_state() -> DeviceState:
    state = DeviceState()
    temps = []
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        with contextlib.suppress(ValueError):
            temps.append(int(_read(str(zone / "temp"))) / 1000.0)
    if temps:
        state.temperature_c = max(temps)
    freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    if freq.isdigit():
        state.cpu_freq_mhz = int(freq) / 1000.0
    else:
        for line in _read("/proc/cpuinfo").splitlines():
            if line.startswith("cpu MHz"):
                state.cpu_freq_mhz = float(line.split(":", 1)[1])
                break
    state.governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    state.throttled, state.throttled_raw = _throttled()
    with contextlib.suppress(OSError):
        state.load_1m = os.getloadavg()[0]
    return state


def cpu_busy_seconds() -> float:
    """CPU seconds spent busy by all processes since boot (from /proc/stat), for other-load accounting."""
    fields = _read("/proc/stat").splitlines()[0].split()[1:]
    if not fields:
        return math.nan
    ticks = [int(v) for v in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def device_info(device_id: str, probe_torch: bool = True) -> dict[str, object]:
    arch = platform.machine()
    flags = sorted(cpu_flags() & set(INT8_FLAGS))
    mem = _meminfo()
    return {
        "device_id": device_id,
        "hostname": socket.gethostname(),
        "arch": arch,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 1,
        "cpu_flags": flags,
        "memory_total_bytes": mem.get("MemTotal", 0),
        "memory_available_bytes": mem.get("MemAvailable", 0),
        "os": _os_name(),
        "kernel": platform.release(),
        "python_version": platform.python_version(),
        "runtimes": [asdict(r) for r in runtimes(probe_torch)],
        "board_model": _read("/proc/device-tree/model"),
        "state": device_state().to_dict(),
        "agent_version": __version__,
        "suggested_target": suggested_target(arch, flags),
    }
