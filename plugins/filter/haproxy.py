"""Filters for the haproxy role: HAProxy's time values."""

from __future__ import annotations

import re
from typing import Any

from ansible.errors import AnsibleFilterError

# HAProxy's time format: a number, then us, ms, s, m, h or d; milliseconds without a unit.
TIME = re.compile(r"(?P<number>[0-9]+)(?P<unit>us|ms|s|m|h|d)?")
UNIT_MS = {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def haproxy_milliseconds(value: Any) -> int:
    """A time as HAProxy reads it (`2m`, `500ms`, `30s`, `1000`), in whole milliseconds."""
    match = TIME.fullmatch(str(value).strip())
    if match is None:
        raise AnsibleFilterError(
            f"{value!r} is not a time as HAProxy takes it: a number with us, ms, s, m, h or d "
            "(milliseconds without a unit)"
        )
    return int(int(match["number"]) * UNIT_MS[match["unit"] or "ms"])


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"haproxy_milliseconds": haproxy_milliseconds}
