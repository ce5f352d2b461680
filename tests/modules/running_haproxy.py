"""A real HAProxy on loopback with its runtime API, for the modules that speak to it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# The runtime API at admin level on {socket}, and HTTP defaults; tests add their proxies.
ADMIN_AND_HTTP = """
global
    stats socket {socket} mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_haproxy(config: Path, admin: Path) -> Iterator[None]:
    """HAProxy on config until the block ends; it is up once its admin socket exists."""
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is missing: run `make deps`")
    process = subprocess.Popen(["haproxy", "-f", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not admin.exists():
        if time.monotonic() > deadline or process.poll() is not None:
            pytest.fail(f"haproxy did not start: {process.stderr.read()}")
        time.sleep(0.05)
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)
