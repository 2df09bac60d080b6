"""How long `lvu --help` takes, side by side with what it is bounded by.

Each round runs, in turn: a bare interpreter (``python -c pass``), ``lvu --help``, ``lvu fit --help``, and an
interpreter that imports Lightning (what building the parser used to do). Medians over rounds, and each command's
ratio to the bare interpreter measured in the same rounds (these machines are noisy; ratios are what carry over).

    python benchmarks/bench_cli.py --rounds 10
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

LVU = str(Path(sys.executable).parent / "lvu")
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "lvu --help": [LVU, "--help"],
    "lvu fit --help": [LVU, "fit", "--help"],
    "python -c 'import lightning'": [sys.executable, "-c", "import lightning"],
}


def _time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    for command in COMMANDS.values():  # warm the file cache once
        _time(command)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
            times[name].append(_time(command))
    load = os.getloadavg()[0]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}, "
          f"{args.rounds} rounds")
    base = statistics.median(times["python -c pass"])
    print(f"{'command':32s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'vs bare python':>15s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:32s} {median:9.3f} {min(values):7.3f} {max(values):7.3f} {median / base:14.1f}x")


if __name__ == "__main__":
    main()
