"""HAProxy's runtime API over its Unix socket, for gpufleet's modules.

One command per connection, as in `echo "show map" | socat stdio UNIX:/run/haproxy/admin.sock`:
HAProxy answers and closes. community.general.haproxy covers server states and weights;
maps are not among its commands, so gpufleet's map module speaks to the socket through this.
"""

from __future__ import annotations

import socket

# Answers that mean the command failed; HAProxy still answers with a 200-less text line.
FAILURE_PREFIXES = ("Unknown", "Missing", "Permission denied", "Can't", "'", "This command")


class RuntimeApiError(Exception):
    """A failure with a message that names the socket and the command."""


def command(socket_path: str, line: str, timeout: float = 10.0) -> str:
    """Send one command and return HAProxy's whole answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            connection.connect(socket_path)
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
