"""The supervisor's restart rule, run for real with a stand-in for systemd-nspawn.

The stand-in is a tiny Python command that exits with the statuses nspawn gives:
133 for a reboot inside the container, 0 for a poweroff, anything else a crash.
"""

import json
import signal
import subprocess
import sys
import time

import pytest

# Exits with the first status in the file named by argv[1] and drops it from the file.
EXITS_THEN = """
import pathlib, sys
statuses = pathlib.Path(sys.argv[1])
codes = statuses.read_text().split()
statuses.write_text(" ".join(codes[1:]))
sys.exit(int(codes[0]))
"""


def supervise(tmp_path, statuses):
    script = tmp_path / "statuses"
    script.write_text(" ".join(map(str, statuses)))
    (tmp_path / "nspawn.json").write_text(
        json.dumps([sys.executable, "-c", EXITS_THEN, str(script)])
    )
    return subprocess.run(
        [sys.executable, "-m", "gpufleet.lab.supervisor", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def events(tmp_path):
    return [line.split(" ", 1)[1] for line in (tmp_path / "events.log").read_text().splitlines()]


def test_reboots_boot_the_host_again_and_poweroff_ends(tmp_path):
    result = supervise(tmp_path, [133, 133, 0])
    assert result.returncode == 0
    assert events(tmp_path) == [
        "boot",
        "exit 133 (reboot)",
        "boot",
        "exit 133 (reboot)",
        "boot",
        "exit 0 (poweroff)",
    ]


@pytest.mark.parametrize("status", [1, 137, 255])
def test_any_other_exit_is_a_crash_and_is_not_restarted(tmp_path, status):
    result = supervise(tmp_path, [133, status, 0])
    assert result.returncode == status
    assert events(tmp_path) == ["boot", "exit 133 (reboot)", "boot", f"exit {status} (crash)"]


def test_sigterm_stops_the_host_and_the_supervisor(tmp_path):
    (tmp_path / "nspawn.json").write_text(
        json.dumps([sys.executable, "-c", "import time; time.sleep(60)"])
    )
    proc = subprocess.Popen([sys.executable, "-m", "gpufleet.lab.supervisor", str(tmp_path)])
    deadline = time.monotonic() + 10
    while not (tmp_path / "nspawn.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert events(tmp_path)[-1] == "exit -15 (stopped)"
