"""Filters for the LB's API keys: what is wrong with a list of them (naming each key by its name,
never by its value), and the SHA-256 the LB keeps of each key in place of the key."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

MIN_KEY_LENGTH = 32
# A name goes into the LB's map files and log lines as one word.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
LIMITS = ("requests_per_minute", "concurrent_requests")


def _positive_whole(value: object) -> bool:
    # YAML gives ints and -e gives text; a bool (YAML's yes) is not a limit.
    if isinstance(value, bool):
        return False
    text = str(value).strip()
    return re.fullmatch(r"[0-9]+", text) is not None and int(text) > 0


def _problems_of(index: int, entry: object) -> list[str]:
    if not isinstance(entry, dict):
        return [f"entry {index + 1} is not a mapping of name and key"]
    name = str(entry.get("name") or "").strip()
    label = f"key '{name}'" if name else f"entry {index + 1}"
    problems = [] if name else [f"{label} has no name"]
    if name and not NAME.fullmatch(name):
        problems.append(f"{label}: a name is 1 to 64 letters, digits and ._- only")
    key = entry.get("key")
    if not isinstance(key, str) or not key.strip():
        problems.append(f"{label} has an empty key")
    elif len(key) < MIN_KEY_LENGTH:
        problems.append(f"{label} is shorter than {MIN_KEY_LENGTH} characters")
    elif any(c.isspace() for c in key):
        problems.append(f"{label} has white space in it")
    problems += [
        f"{label}: {limit} must be a whole number above 0"
        for limit in LIMITS
        if limit in entry and not _positive_whole(entry[limit])
    ]
    unknown = sorted(set(entry) - {"name", "key", *LIMITS})
    if unknown:
        problems.append(f"{label} has unknown fields: {', '.join(map(str, unknown))}")
    return problems


def api_key_problems(keys: Iterable[object]) -> list[str]:
    """Each problem of the list, as a sentence naming the key by name: empty, short or
    duplicated keys, duplicated names, limits that are not whole numbers above 0."""
    entries = list(keys or [])
    problems = [p for i, entry in enumerate(entries) for p in _problems_of(i, entry)]
    names: dict[str, int] = {}
    keys_seen: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        name = str(entry.get("name") or "").strip()
        if name:
            names[name] = names.get(name, 0) + 1
        key = entry.get("key")
        if isinstance(key, str) and key and name:
            if key in keys_seen:
                problems.append(f"keys '{keys_seen[key]}' and '{name}' are the same key")
            else:
                keys_seen[key] = name
    problems += [f"the name '{n}' is given to {c} keys" for n, c in names.items() if c > 1]
    return problems


def api_key_hash(key: str) -> str:
    """The key's SHA-256 in upper-case hex, as HAProxy's sha2(256),hex converters write it."""
    return hashlib.sha256(key.encode()).hexdigest().upper()


class FilterModule:
    def filters(self) -> dict:
        return {"api_key_problems": api_key_problems, "api_key_hash": api_key_hash}
