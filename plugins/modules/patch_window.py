"""patch_window: say whether now is inside a weekly maintenance window, and when it next opens."""

from __future__ import annotations

DOCUMENTATION = r"""
module: patch_window
short_description: Tell whether a weekly patch window is open now
description:
  - Reads a weekly window (the days it opens on, its start and end as wall-clock times, and
    its time zone) and says whether a moment (now unless O(at) is given) is inside it, how
    long it stays open, and when it next opens.
  - It never changes anything and never fails because the window is closed; the playbook
    decides what a closed window means (gpufleet's patch playbook refuses, unless forced).
    It fails, naming the parameter, on a window it cannot read.
  - A window whose end is at or before its start ends the next day (C(22:00) to C(02:00)); its
    days are the days it opens on.
  - Times are the zone's wall-clock times, daylight saving included. A start that falls into
    a skipped hour (the spring change) opens at the same wall-clock time read with the offset
    before the change, as Python's zoneinfo reads it.
author: gpufleet maintainers (!UNKNOWN)
version_added: "0.1.0"
options:
  days:
    description: The days the window opens on, as C(mon) to C(sun) or the full English names.
    type: list
    elements: str
    required: true
  start:
    description: When the window opens, C(HH:MM) in O(timezone).
    type: str
    required: true
  end:
    description: When it closes, C(HH:MM) in O(timezone); at or before O(start) means the next day.
    type: str
    required: true
  timezone:
    description: An IANA time zone name, such as C(Europe/Berlin) or C(UTC).
    type: str
    default: UTC
  at:
    description: The moment to judge, ISO 8601 with its UTC offset; now when empty.
    type: str
    default: ""
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
requirements:
  - Python 3.9 or newer on the host it runs on (zoneinfo), with the system's time zone data.
"""

EXAMPLES = r"""
- name: Read the patch window
  gpufleet.fleet.patch_window:
    days: [sat, sun]
    start: "02:00"
    end: "05:00"
    timezone: Europe/Berlin
  register: window
  delegate_to: localhost

- name: Refuse to patch outside the window, unless forced
  ansible.builtin.assert:
    that: window.open or patch_force | bool
    fail_msg: >-
      The patch window is closed ({{ window.window }}); it opens next at {{ window.opens_at }}.
"""

RETURN = r"""
open:
  description: Whether the moment is inside the window.
  returned: always
  type: bool
window:
  description: The window in words, for messages.
  returned: always
  type: str
  sample: sat, sun 02:00-05:00 Europe/Berlin
now:
  description: The moment judged, in the window's time zone (ISO 8601).
  returned: always
  type: str
closes_at:
  description: When the open window closes (ISO 8601, the window's zone); empty when closed.
  returned: always
  type: str
remaining_s:
  description: Seconds until the open window closes; 0 when closed.
  returned: always
  type: int
opens_at:
  description: When the window opens next after the moment (ISO 8601, the window's zone).
  returned: always
  type: str
"""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ansible.module_utils.basic import AnsibleModule

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


class WindowError(ValueError):
    """A window that cannot be read; the message names the parameter."""


@dataclass(frozen=True)
class Window:
    weekdays: frozenset[int]
    start: time
    end: time
    zone: ZoneInfo

    def describe(self) -> str:
        days = ", ".join(DAY_NAMES[d] for d in sorted(self.weekdays))
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M} {self.zone.key}"

    def opening(self, day: date) -> tuple[datetime, datetime]:
        """The window that opens on day: its opening and closing moments."""
        opens = datetime.combine(day, self.start, tzinfo=self.zone)
        closing_day = day if self.end > self.start else day + timedelta(days=1)
        return opens, datetime.combine(closing_day, self.end, tzinfo=self.zone)

    def openings_around(self, moment: datetime, days_after: int) -> list[tuple[datetime, datetime]]:
        """Every opening from the day before moment (a window past midnight) to days_after."""
        today = moment.astimezone(self.zone).date()
        days = (today + timedelta(days=n) for n in range(-1, days_after + 1))
        return [self.opening(day) for day in days if day.weekday() in self.weekdays]


def parse_day(name: str) -> int:
    word = name.strip().lower()
    for names in (DAY_NAMES, FULL_DAY_NAMES):
        if word in names:
            return names.index(word)
    raise WindowError(f"days: {name!r} is not a day (mon to sun, or the full name)")


def parse_clock(field: str, text: str) -> time:
    match = CLOCK.match(text.strip())
    if match is None:
        raise WindowError(f"{field}: {text!r} is not a time of day as HH:MM (00:00 to 23:59)")
    return time(int(match.group(1)), int(match.group(2)))


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError(
            f"timezone: {name!r} is not a time zone (an IANA name such as Europe/Berlin)"
        ) from None


def parse_window(days: list[str], start: str, end: str, zone: str) -> Window:
    if not days:
        raise WindowError("days: the window needs at least one day")
    window = Window(
        frozenset(parse_day(day) for day in days),
        parse_clock("start", start),
        parse_clock("end", end),
        parse_zone(zone),
    )
    if window.start == window.end:
        raise WindowError(f"start and end: both are {start}; a window needs a length")
    return window


def parse_moment(text: str) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise WindowError(f"at: {text!r} is not an ISO 8601 date and time") from None
    if moment.tzinfo is None:
        raise WindowError(f"at: {text!r} has no UTC offset (add Z or +01:00, for example)")
    return moment


def judge(window: Window, moment: datetime) -> dict[str, object]:
    """Whether moment is inside the window, until when, and when it opens next."""
    openings = window.openings_around(moment, days_after=8)
    inside = [(opens, closes) for opens, closes in openings if opens <= moment < closes]
    opens_at = min(opens for opens, _closes in openings if opens > moment)
    closes = max((closes for _opens, closes in inside), default=None)
    return {
        "open": closes is not None,
        "window": window.describe(),
        "now": moment.astimezone(window.zone).isoformat(),
        "closes_at": closes.isoformat() if closes else "",
        "remaining_s": int((closes - moment).total_seconds()) if closes else 0,
        "opens_at": opens_at.isoformat(),
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "days": {"type": "list", "elements": "str", "required": True},
            "start": {"type": "str", "required": True},
            "end": {"type": "str", "required": True},
            "timezone": {"type": "str", "default": "UTC"},
            "at": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        window = parse_window(params["days"], params["start"], params["end"], params["timezone"])
        result = judge(window, parse_moment(params["at"]))
    except WindowError as exc:
        module.fail_json(msg=f"patch_window: {exc}")
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
