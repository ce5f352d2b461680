"""Keeps one lab host booted: a reboot inside the host is an nspawn exit with status 133.

Run as `python -m gpufleet.lab.supervisor HOST_DIR --own-cgroup [--yield-cpu]`, detached,
by `gpufleet lab up`; --own-cgroup first moves it into the host's own cgroup, --yield-cpu
gives that cgroup a low CPU weight (lab/cgroups.py).
Any other exit while not asked to stop is a crash: it is logged and the supervisor ends.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from gpufleet.lab.cgroups import enter_host_cgroup

REBOOT_STATUS = 133


class Supervisor:
    def __init__(self, host_dir: Path) -> None:
        self.host_dir = host_dir
        self.argv: list[str] = json.loads((host_dir / "nspawn.json").read_text())
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None

    def request_stop(self, _signum: int, _frame: FrameType | None) -> None:
        """nspawn turns SIGTERM into a clean poweroff of the container."""
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def log(self, event: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with (self.host_dir / "events.log").open("a") as events:
            events.write(f"{stamp} {event}\n")

    def run(self) -> int:
        while not self.stopping:
            self.child = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
            (self.host_dir / "nspawn.pid").write_text(f"{self.child.pid}\n")
            self.log("boot")
            status = self.child.wait()
            if self.stopping:
                self.log(f"exit {status} (stopped)")
                return 0
            if status == REBOOT_STATUS:
                self.log(f"exit {status} (reboot)")
                continue
            self.log(f"exit {status} (crash)" if status else "exit 0 (poweroff)")
            return status
        return 0


def main() -> int:
    host_dir = Path(sys.argv[1])
    if "--own-cgroup" in sys.argv[2:]:
        enter_host_cgroup(host_dir.name, yielding="--yield-cpu" in sys.argv[2:])
    supervisor = Supervisor(host_dir)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
