"""Peak memory of the current process, for the benchmarks that measure in fresh processes."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    VmHWM belongs to the address space, which exec replaces; ru_maxrss would carry the high-water mark of the parent
    that started this process.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
