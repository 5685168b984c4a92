"""What the device is (static info) and what state it is in (temperature, frequency, throttling, load).

Everything is read from /proc and /sys, so it costs no dependency; fields the OS does not expose are NaN or
empty. The runtimes are those of the benchmark workers' interpreter, asked of it in a subprocess
(:class:`edge_agent.runtimes.probe.RuntimeProbe`: importing torch costs ~2 s and ~600 MB, never in the agent).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from edge_agent import __version__
from edge_agent.device.cpu import INT8_FLAGS, cpu_flags, cpu_model, suggested_target
from edge_agent.runtimes.base import RuntimeInfo
from edge_agent.runtimes.probe import RuntimeProbe

__all__ = ["DeviceState", "RuntimeInfo", "cpu_busy_seconds", "device_info", "device_state"]


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


def device_info(device_id: str, probe_torch: bool = True, *, probe: RuntimeProbe | None = None) -> dict[str, object]:
    """What the device is. Its runtimes and Python version are those of the benchmark workers' interpreter, asked
    by ``probe`` (the agent's, started with it); without one, this Python is asked now."""
    if probe is None:
        probe = RuntimeProbe(sys.executable, probe_torch=probe_torch).start()
    runtimes = probe.runtimes()
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
        "python_version": probe.python_version or platform.python_version(),
        "runtimes": [asdict(r) for r in runtimes],
        "board_model": _read("/proc/device-tree/model"),
        "state": device_state().to_dict(),
        "agent_version": __version__,
        "suggested_target": suggested_target(arch, flags),
    }
