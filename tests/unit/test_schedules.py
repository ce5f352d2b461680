"""The patch window's example schedules (docs/schedules/) start inside the window the patch
role guards by default, never overlap, and are valid for the tools that read them."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import repo_scripts
import yaml
from dateutil.rrule import rrulestr

REPO = repo_scripts.REPO
SCHEDULES = REPO / "docs" / "schedules"
window_module = repo_scripts.load("plugins/modules/patch_window.py")
DEFAULTS = yaml.safe_load((REPO / "roles/patch/defaults/main.yml").read_text())
WINDOW = window_module.parse_window(
    DEFAULTS["patch_window_days"],
    DEFAULTS["patch_window_start"],
    DEFAULTS["patch_window_end"],
    DEFAULTS["patch_window_timezone"],
)


def inside_window(moment: datetime) -> bool:
    return bool(window_module.judge(WINDOW, moment)["open"])


def unit_setting(unit: str, key: str) -> str:
    text = (SCHEDULES / unit).read_text().replace("\\\n", " ")
    return re.search(rf"^{key}=(.*)$", text, re.MULTILINE).group(1).strip()


def test_the_timer_fires_inside_the_window_with_its_random_delay():
    calendar = unit_setting("gpufleet-patch.timer", "OnCalendar")
    shown = subprocess.run(
        ["systemd-analyze", "calendar", "--iterations=4", calendar],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    elapses = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", shown)
    assert len(elapses) == 4, shown
    delay = timedelta(minutes=int(unit_setting("gpufleet-patch.timer", "RandomizedDelaySec")[:-3]))
    for elapse in elapses:
        start = datetime.fromisoformat(elapse).replace(tzinfo=UTC)
        assert inside_window(start) and inside_window(start + delay), elapse


def test_the_units_verify_and_never_run_twice_at_once(tmp_path):
    for unit in ("gpufleet-patch.service", "gpufleet-patch.timer"):
        shutil.copy(SCHEDULES / unit, tmp_path / unit)
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "gpufleet-patch.timer")],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert verified.returncode == 0 and "gpufleet-patch" not in verified.stderr, verified.stderr
    command = unit_setting("gpufleet-patch.service", "ExecStart")
    assert command.startswith("/usr/bin/flock --nonblock --conflict-exit-code 75 ")
    assert command.endswith("playbooks/patch.yml")
    assert unit_setting("gpufleet-patch.service", "SuccessExitStatus") == "75"
    assert unit_setting("gpufleet-patch.timer", "Persistent") == "false"


def test_the_awx_rule_starts_every_run_inside_the_window():
    note = (SCHEDULES / "README.md").read_text()
    rule = re.search(r"^(DTSTART;.*\nRRULE:.*)$", note, re.MULTILINE).group(1)
    runs = rrulestr(rule).xafter(datetime(2026, 11, 23, tzinfo=UTC), count=6)
    assert all(inside_window(run) for run in runs)


def test_the_github_workflow_starts_inside_the_window_and_queues_a_second_run():
    workflow = yaml.safe_load((SCHEDULES / "patch-window.github-workflow.yml").read_text())
    cron = workflow["on"]["schedule"][0]["cron"]
    minute, hour, _day_of_month, _month, days = cron.split()
    # Cron counts days from Sunday, 0; 2026-11-22 was a Sunday.
    sunday = datetime(2026, 11, 22, int(hour), int(minute), tzinfo=UTC)
    for day in days.split(","):
        assert inside_window(sunday + timedelta(days=int(day))), (cron, day)
    assert workflow["concurrency"] == {"group": "patch-window", "cancel-in-progress": False}
    assert (
        "patch_force=${{ inputs.force || false }}" in workflow["jobs"]["patch"]["steps"][3]["run"]
    )
