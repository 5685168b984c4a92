"""What disturbed a run: other processes' CPU load during it, throttling, heat and a frequency drop before or
after it. A run with any of these is marked ``disturbed``, each reason named in its ``warnings``."""

from __future__ import annotations

import math
from typing import Any

#: Other processes using more CPU than this (in cores, averaged over the run) mark the run as disturbed.
DISTURBED_OTHER_LOAD = 0.5
DISTURBED_TEMPERATURE_C = 80.0


def disturbance_warnings(state_before: dict[str, Any], state_after: dict[str, Any], other_load: float) -> list[str]:
    """The reasons a run's figures may be disturbed (none: a clean run)."""
    warnings: list[str] = []
    if other_load > DISTURBED_OTHER_LOAD:
        warnings.append(f"other processes used {other_load:.2f} CPU cores on average during the run")
    for label, state in (("before", state_before), ("after", state_after)):
        if state["throttled"]:
            warnings.append(f"the CPU was throttled {label} the run (flags {state['throttled_raw']})")
        if state["temperature_c"] >= DISTURBED_TEMPERATURE_C:
            warnings.append(f"CPU temperature {state['temperature_c']:.0f} °C {label} the run")
    freq_before, freq_after = state_before["cpu_freq_mhz"], state_after["cpu_freq_mhz"]
    if not (math.isnan(freq_before) or math.isnan(freq_after)) and freq_after < 0.8 * freq_before:
        warnings.append("the CPU frequency dropped by more than 20% during the run")
    return warnings
