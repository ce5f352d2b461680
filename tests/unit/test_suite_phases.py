"""make test's phase table: phases recorded as they ran, and benchmarks/suite.py's figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import phases
import pytest
import repo_scripts

from gpufleet.lab import cgroups

suite = repo_scripts.load("benchmarks/suite.py")


def test_a_failing_phase_is_recorded_and_its_status_passed_on(tmp_path):
    phases_file = tmp_path / "phases.jsonl"
    status = phases.time_command(phases_file, "lint", [sys.executable, "-c", "exit(3)"])
    assert status == 3
    (entry,) = suite.read(phases_file)
    assert (entry["phase"], entry["within"]) == ("lint", "")
    assert entry["seconds"] >= 0


def test_a_shared_set_up_is_its_own_phase_not_its_first_tests():
    clock = phases.PhaseClock()
    clock.spend("test_a.py", 100.0, 5.0)
    clock.shared("lab up", 105.0, 60.0)
    clock.spend("test_a.py", 165.0, 10.0)
    clock.spend("molecule base", 175.0, 50.0)
    assert clock.spent == {
        "test_a.py": [100.0, 15.0],
        "lab up": [105.0, 60.0],
        "molecule base": [175.0, 50.0],
    }
    assert clock.shared_seconds == 60.0


def write(phases_file, *entries):
    for name, within, started, seconds in entries:
        phases.record(phases_file, name, started, seconds, within)


def test_the_total_is_wall_time_so_a_gap_between_phases_still_counts(tmp_path, capsys):
    phases_file = tmp_path / "phases.jsonl"
    write(
        phases_file,
        ("deps", "", 0.0, 60.0),
        ("lint", "", 60.0, 60.0),
        ("lab", "", 300.0, 1800.0),
        ("test_a.py", "lab", 300.0, 600.0),
        ("molecule base", "lab", 900.0, 1200.0),
    )
    assert suite.main([str(phases_file)]) == 0
    *table, line = capsys.readouterr().out.splitlines()
    figures = json.loads(line)
    assert figures["total_min"] == 35.0 and figures["total_to_budget"] == 1.0
    assert figures["phases_min"] == {
        "deps": 1.0,
        "lint": 1.0,
        "lab": 30.0,
        "lab: test_a.py": 10.0,
        "lab: molecule base": 20.0,
    }
    # Each phase's parts follow it, slowest first; the total closes the table.
    names = [row.split()[0] for row in table[1:]]
    assert names == ["deps", "lint", "lab", "molecule", "test_a.py", "total"]
    assert table[-1].split()[:2] == ["total", "35.00"]


@pytest.mark.parametrize("content", [None, ""])
def test_no_recorded_phases_is_said_and_fails(tmp_path, capsys, content):
    phases_file = tmp_path / "phases.jsonl"
    if content is not None:
        phases_file.write_text(content)
    assert suite.main([str(phases_file)]) == 1
    assert "suite: " in capsys.readouterr().err


def test_the_checks_wait_at_the_gate_until_the_lab_opens_it(tmp_path, monkeypatch):
    gate = tmp_path / "gate"
    monkeypatch.setenv(phases.GATE_ENVIRONMENT, str(gate))
    opener = threading.Timer(0.3, phases.open_gate)
    opener.start()
    started = time.monotonic()
    phases.wait_at_gate(gate, os.getpid(), poll=0.05)
    assert gate.exists() and time.monotonic() - started >= 0.3


def test_the_checks_start_when_the_lab_ends_without_opening_the_gate(tmp_path):
    lab = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    started = time.monotonic()
    # The lab's pid stays taken until it is reaped: a reaper stands in for the shell's wait.
    threading.Thread(target=lab.wait).start()
    phases.wait_at_gate(tmp_path / "gate", lab.pid, poll=0.05)
    assert not (tmp_path / "gate").exists() and time.monotonic() - started >= 0.3


def test_without_a_gate_from_make_test_the_lab_opens_none(tmp_path, monkeypatch):
    monkeypatch.delenv(phases.GATE_ENVIRONMENT, raising=False)
    monkeypatch.chdir(tmp_path)
    phases.open_gate()
    assert list(tmp_path.iterdir()) == []


def test_the_checks_run_yielding_and_leave_no_cgroup_behind():
    """Niced everywhere; in the checks' cpu cgroup at their weight where cgroup v1's cpu
    controller is mounted and the tests run as root (as make test does, whose checks these
    tests are, so the group is made inside theirs)."""
    script = Path(phases.__file__)
    groups = [place / phases.CHECKS_CGROUP for place in cgroups.cpu_cgroups()]
    # The command reports its niceness and, for each group, whether it is in it and its weight.
    report = (
        "import os, sys; print(os.nice(0)); "
        "[print(str(os.getpid()) in open(g + '/cgroup.procs').read().split(), "
        "open(g + '/cpu.shares').read().strip()) for g in sys.argv[1:]]"
    )
    command = [sys.executable, "-c", report, *map(str, groups)]
    shown = subprocess.run(
        [sys.executable, script, "yielding", "--", *command],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert int(shown[0]) >= 10
    if os.geteuid() == 0:
        assert shown[1:] == [f"True {phases.CHECKS_CPU_SHARES}"] * len(groups)
    assert not any(group.exists() for group in groups)
    failing = [sys.executable, script, "yielding", "--", sys.executable, "-c", "exit(4)"]
    assert subprocess.run(failing, check=False).returncode == 4
