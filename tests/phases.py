"""make test's phases and their seconds, one JSON object a line, for benchmarks/suite.py.

make times its own phases (deps, lint, unit, sanity, lab) with `time`; the lab tests' conftest
records each test file, each molecule scenario and the lab's shared set-up inside the lab
phase. Standard library only: make's first phase runs before the virtualenv exists.

The unit tests and sanity, which run beside the lab tests, wait at a gate until the lab's
shared converge is done: it keeps both cores busy, and the checks beside it made it 1.7 times
slower. The checks also run yielding: in a cpu cgroup of their own at the lowest weight
cgroup v1 takes. Niced only, they shared the CPU with the lab's hosts as one equal group, and
a group that runs without pause outweighs one that waits on SSH between tasks: beside the
unit tests, the LB tests' second run of gpu_hosts.yml got 0.45 of the two cores and the unit
tests about 1.5. Beside two spinning processes, a second run of loadbalancer.yml took 41.7 s
with them niced, 38.3 with them at 64 shares and 31.2 at 2, against 33 alone.

    python3 tests/phases.py time PHASES_FILE NAME -- COMMAND...
    python3 tests/phases.py wait GATE_FILE PID    (until the lab opens the gate, or PID ends)
    python3 tests/phases.py yielding -- COMMAND...   (after make deps: it uses the lab's code)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Where make test asks the lab tests to record their phases; unset, they record nothing.
ENVIRONMENT = "GPUFLEET_TEST_PHASES"
# The file the lab tests create once their shared set-up is done; unset, there is no gate.
GATE_ENVIRONMENT = "GPUFLEET_TEST_CHECKS_GATE"
# The checks' cpu cgroup and its cpu.shares, cgroup v1's least: a lab host's group weighs 1024.
CHECKS_CGROUP = "gpufleet-checks"
CHECKS_CPU_SHARES = 2


def record(phases_file: Path, name: str, started: float, seconds: float, within: str = "") -> None:
    """Append one phase: its name, when it started (epoch seconds), its seconds, and the
    phase it is part of ("" for make's own)."""
    entry = {
        "phase": name,
        "within": within,
        "started": round(started, 3),
        "seconds": round(seconds, 3),
    }
    with phases_file.open("a") as out:
        out.write(json.dumps(entry) + "\n")


def recording() -> Path | None:
    """The phases file make test named, if any."""
    named = os.environ.get(ENVIRONMENT)
    return Path(named) if named else None


class PhaseClock:
    """Seconds spent per phase inside one pytest session, shared set-up kept apart: a session
    fixture's set-up counts as its own phase, not as the first test that asked for it."""

    def __init__(self) -> None:
        self.spent: dict[str, list[float]] = {}
        self.shared_seconds = 0.0

    def spend(self, name: str, started: float, seconds: float) -> None:
        first_started, total = self.spent.get(name, [started, 0.0])
        self.spent[name] = [min(first_started, started), total + seconds]

    def shared(self, name: str, started: float, seconds: float) -> None:
        self.shared_seconds += seconds
        self.spend(name, started, seconds)

    def write(self, phases_file: Path, within: str) -> None:
        for name, (started, seconds) in self.spent.items():
            record(phases_file, name, started, seconds, within)


def time_command(phases_file: Path, name: str, command: list[str]) -> int:
    """Run command, record it as the phase name whether it passes or fails; its exit status."""
    started = time.time()
    try:
        return subprocess.run(command, check=False).returncode
    finally:
        record(phases_file, name, started, time.time() - started)


def open_gate() -> None:
    """Let the checks start, if make test set a gate for them."""
    named = os.environ.get(GATE_ENVIRONMENT)
    if named:
        Path(named).touch()


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_at_gate(gate: Path, pid: int, poll: float = 1.0) -> None:
    """Return once the gate is open or process pid (the lab tests) has ended."""
    while not gate.exists() and running(pid):
        time.sleep(poll)


def run_yielding(command: list[str]) -> int:
    """Run command in the checks' cpu cgroup and niced (all a machine without cgroup v1's
    cpu controller gets); its exit status."""
    from gpufleet.lab.cgroups import cpu_group

    os.nice(10)
    with cpu_group(CHECKS_CGROUP, CHECKS_CPU_SHARES):
        return subprocess.run(command, check=False).returncode


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[:2] == ["yielding", "--"]:
        return run_yielding(argv[2:])
    if len(argv) == 3 and argv[0] == "wait" and argv[2].isdigit():
        wait_at_gate(Path(argv[1]), int(argv[2]))
        return 0
    if len(argv) < 5 or argv[0] != "time" or argv[3] != "--":
        usage = __doc__.strip().splitlines()[-3:]
        print("\n".join(line.strip() for line in usage), file=sys.stderr)
        return 2
    return time_command(Path(argv[1]), argv[2], argv[4:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
