"""patch_window: weekly windows in a time zone, across midnight and daylight saving changes;
through Ansible, the result a playbook reads and the failure that names the parameter."""

from datetime import datetime

import pytest
import repo_scripts
from ansible_run import run_module

window = repo_scripts.load("plugins/modules/patch_window.py")

WEEKEND_NIGHTS = {"days": ["sat", "sun"], "start": "02:00", "end": "05:00"}


def judge(at: str, days=("sat", "sun"), start="02:00", end="05:00", zone="Europe/Berlin"):
    parsed = window.parse_window(list(days), start, end, zone)
    return window.judge(parsed, window.parse_moment(at))


@pytest.mark.parametrize(
    ("at", "is_open", "remaining_s"),
    [
        # Saturday 2026-11-28, Berlin is UTC+1 in winter.
        ("2026-11-28T01:00:00+00:00", True, 3 * 3600),  # 02:00 in Berlin: opens
        ("2026-11-28T03:59:59+00:00", True, 1),  # 04:59:59: still open
        ("2026-11-28T04:00:00+00:00", False, 0),  # 05:00: closed
        ("2026-11-28T00:59:59+00:00", False, 0),  # 01:59:59: not yet
        ("2026-11-27T02:30:00+00:00", False, 0),  # Friday: not a window day
        ("2026-11-29T02:30:00+01:00", True, 9000),  # Sunday 02:30 given in Berlin's offset
    ],
)
def test_the_window_is_open_from_its_start_until_just_before_its_end(at, is_open, remaining_s):
    result = judge(at)
    assert (result["open"], result["remaining_s"]) == (is_open, remaining_s), result


def test_a_closed_window_says_when_it_opens_next():
    result = judge("2026-11-24T12:00:00Z")  # a Tuesday
    assert result["opens_at"] == "2026-11-28T02:00:00+01:00"
    assert result["now"] == "2026-11-24T13:00:00+01:00"
    assert result["closes_at"] == "" and result["window"] == "sat, sun 02:00-05:00 Europe/Berlin"


def test_a_window_past_midnight_belongs_to_the_day_it_opens_on():
    friday_night = {"days": ["friday"], "start": "22:00", "end": "02:00", "zone": "UTC"}
    assert judge("2026-11-27T23:00:00Z", **friday_night)["open"]
    saturday_small_hours = judge("2026-11-28T01:30:00Z", **friday_night)
    assert saturday_small_hours["open"] and saturday_small_hours["remaining_s"] == 1800
    assert not judge("2026-11-28T23:00:00Z", **friday_night)["open"]  # Saturday night
    assert not judge("2026-11-27T01:30:00Z", **friday_night)["open"]  # Thursday's small hours


def test_wall_clock_times_follow_daylight_saving():
    """Berlin changes to summer time on 2027-03-28 at 02:00 (CET to CEST)."""
    sunday_mornings = {"days": ["sun"], "start": "04:00", "end": "06:00"}
    before = judge("2027-03-21T03:30:00Z", **sunday_mornings)  # 04:30 CET
    after = judge("2027-03-28T02:30:00Z", **sunday_mornings)  # 04:30 CEST
    assert before["open"] and after["open"]
    # 04:30 UTC is 06:30 in summer time: closed, though 05:30 in winter time would be open.
    assert not judge("2027-03-28T04:30:00Z", **sunday_mornings)["open"]
    assert judge("2027-03-22T00:00:00Z", **sunday_mornings)["opens_at"].endswith("+02:00")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"days": []}, "days: the window needs at least one day"),
        ({"days": ["sat", "someday"]}, "days: 'someday' is not a day"),
        ({"start": "2am"}, "start: '2am' is not a time of day as HH:MM"),
        ({"end": "24:00"}, "end: '24:00' is not a time of day"),
        ({"start": "03:00", "end": "03:00"}, "start and end: both are 03:00"),
        ({"zone": "Mars/Olympus"}, "timezone: 'Mars/Olympus' is not a time zone"),
        ({"at": "2026-11-28 02:00"}, "at: '2026-11-28 02:00' has no UTC offset"),
        ({"at": "saturday"}, "at: 'saturday' is not an ISO 8601 date and time"),
    ],
)
def test_a_window_that_cannot_be_read_is_refused_naming_the_parameter(fields, named):
    arguments = {"days": ["sat"], "start": "02:00", "end": "05:00", "zone": "UTC"} | fields
    at = arguments.pop("at", "2026-11-28T03:00:00Z")
    with pytest.raises(window.WindowError) as refused:
        judge(at, **arguments)
    assert str(refused.value).startswith(named)


def test_now_is_the_default_moment():
    result = judge("", days=window.DAY_NAMES, start="00:00", end="23:59", zone="UTC")
    moment = datetime.fromisoformat(result["now"])
    assert abs((datetime.now(moment.tzinfo) - moment).total_seconds()) < 60


def test_through_ansible_a_playbook_reads_the_window_and_a_bad_one_fails_the_task():
    closed = run_module(
        "gpufleet.fleet.patch_window",
        {**WEEKEND_NIGHTS, "timezone": "UTC", "at": "2026-11-24T12:00:00Z"},
    )
    assert closed.get("failed") is not True and closed["changed"] is False, closed
    assert (closed["open"], closed["opens_at"]) == (False, "2026-11-28T02:00:00+00:00")
    bad = run_module(
        "gpufleet.fleet.patch_window", {**WEEKEND_NIGHTS, "timezone": "Berlin"}, check=True
    )
    assert bad["failed"] is True
    assert bad["msg"].startswith("patch_window: timezone: 'Berlin' is not a time zone"), bad
