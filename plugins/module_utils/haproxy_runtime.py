"""HAProxy's runtime API over its Unix socket (or a TCP one), for gpufleet's modules.

One command per connection, as in `echo "show map" | socat stdio UNIX:/run/haproxy/admin.sock`:
HAProxy answers and closes. A socket is a path, or ADDRESS:PORT for a TCP `stats socket` (the
haproxy role's read-only one, which the scaler reads every LB's statistics from).
community.general.haproxy covers server states and weights; maps, statistics and stick tables
are not among its commands, so gpufleet's haproxy_map and haproxy_stat modules speak to the
socket through this.
"""

from __future__ import annotations

import csv
import io
import re
import socket

# show stat's object types, as its type mask adds them.
STAT_TYPES = {"frontend": 1, "backend": 2, "server": 4}
# `show table` rows: 0x55d0c0a8: key=chat use=0 exp=86391 gpc0=12 gpc1=0 http_req_cnt=12
TABLE_ROW = re.compile(r"^0x[0-9a-f]+: key=(?P<key>\S+) (?P<fields>.*)$")
# Answers that mean the command failed; HAProxy still answers with a 200-less text line.
FAILURE_PREFIXES = (
    "Unknown",
    "Missing",
    "No such",
    "Permission denied",
    "Can't",
    "'",
    "This command",
)


class RuntimeApiError(Exception):
    """A failure with a message that names the socket and the command."""


def connect(socket_path: str, timeout: float) -> socket.socket:
    """A connection to a Unix socket's path, or to ADDRESS:PORT over TCP."""
    host, _colon, port = socket_path.rpartition(":")
    if host and port.isdigit() and "/" not in socket_path:
        return socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(timeout)
    try:
        connection.connect(socket_path)
    except OSError:
        connection.close()
        raise
    return connection


def command(socket_path: str, line: str, timeout: float = 10.0) -> str:
    """Send one command and return HAProxy's whole answer."""
    try:
        with connect(socket_path, timeout) as connection:
            connection.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise RuntimeApiError(f"HAProxy's runtime API at {socket_path}: {exc}") from None
    answer = b"".join(chunks).decode(errors="replace")
    if answer.lstrip().startswith(FAILURE_PREFIXES):
        first = answer.strip().splitlines()[0]
        raise RuntimeApiError(f"HAProxy's runtime API refused `{line}`: {first}")
    return answer


def map_entries(socket_path: str, map_path: str) -> dict[str, str]:
    """The running process's map: `show map` lines are `<ref> <key> <value>`."""
    entries = {}
    for row in command(socket_path, f"show map {map_path}").splitlines():
        parts = row.split(" ", 2)
        if len(parts) == 3:
            entries[parts[1]] = parts[2]
    return entries


def parse_stat(answer: str) -> list[dict[str, str]]:
    """`show stat`'s CSV, a dict per row keyed by its header (pxname, svname, status, ...)."""
    return list(csv.DictReader(io.StringIO(answer.lstrip("# "))))


def parse_table(answer: str) -> dict[str, dict[str, str]]:
    """`show table NAME`'s rows: each key's stored data (use, exp, gpc0, http_req_cnt, ...)."""
    entries = {}
    for line in answer.splitlines():
        found = TABLE_ROW.match(line.strip())
        if found:
            fields = found["fields"].split()
            entries[found["key"]] = dict(f.split("=", 1) for f in fields if "=" in f)
    return entries


def stat_rows(socket_path: str, types: list[str]) -> list[dict[str, str]]:
    """`show stat` for the given object types (all of them when empty)."""
    mask = sum(STAT_TYPES[t] for t in types) if types else -1
    return parse_stat(command(socket_path, f"show stat -1 {mask} -1"))


def serving(row: dict[str, str]) -> bool:
    """A server's `show stat` row: UP, and its agent check has answered at least once (not
    INI): a server just put in a slot is UP before its agent is asked."""
    answered = not row.get("agent_status", "").lstrip("* ").startswith("INI")
    return row.get("status", "").startswith("UP") and answered


def server_addresses(socket_path: str) -> dict[tuple[str, str], str]:
    """(backend, server) -> the server's address, from `show servers state` rows (be_id
    be_name srv_id srv_name srv_addr ...): also at level user, where `show stat` leaves
    the addresses out."""
    rows = command(socket_path, "show servers state").splitlines()
    return {
        (fields[1], fields[3]): fields[4]
        for fields in (row.split() for row in rows)
        if len(fields) > 4 and not fields[0].startswith("#")
    }


def table_entries(socket_path: str, table: str) -> dict[str, dict[str, str]]:
    """`show table NAME`, parsed."""
    return parse_table(command(socket_path, f"show table {table}"))
