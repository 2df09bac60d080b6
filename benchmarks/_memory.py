"""Peak memory of the current process, for the benchmarks that measure in fresh processes."""

from __future__ import annotations

import resource


def _status_mb(field: str) -> float | None:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return None


def rss_mb() -> float:
    """This process's current resident memory in MB (NaN where /proc has no VmRSS)."""
    current = _status_mb("VmRSS")
    return float("nan") if current is None else current


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    VmHWM belongs to the address space, which exec replaces; ru_maxrss would carry the high-water mark of the parent
    that started this process.
    """
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
