"""Thin wrappers over the host tools the lab drives (ip, nft, mount, ssh-keygen)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpufleet.lab import LabError


def run(argv: list[str], *, check: bool = True, input_text: str | None = None) -> str:
    """Run a command and return its stdout; on failure raise LabError with its stderr."""
    proc = subprocess.run(argv, input=input_text, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit status {proc.returncode}"
        raise LabError(f"{' '.join(argv[:4])} failed: {reason}")
    return proc.stdout


def write_whole(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace path with text in one step: the lab's files (its SSH config, known_hosts,
    inventory) are rewritten by `lab up` while bakes, tests and the keeper read them, and a
    reader sees the old file or the new one, never a truncated one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.chmod(mode)
    temporary.replace(path)


def succeeds(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def processes_in_netns(netns: str) -> list[int]:
    """PIDs in a named network namespace: every process of a lab host, orphaned ones too."""
    if not Path(f"/run/netns/{netns}").exists():
        return []
    out = run(["ip", "netns", "pids", netns], check=False)
    return [int(pid) for pid in out.split() if pid.isdigit()]


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


def kill_netns_processes(netns: str, grace: float = 5.0) -> None:
    """SIGKILL every process of a host's namespace and wait up to grace seconds for them."""
    kill_all(processes_in_netns(netns))
    wait_until(lambda: not processes_in_netns(netns), grace, interval=0.1)


# mountinfo writes a space in a path as \040, and so on.
OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo: where, what file system, its own options."""

    point: Path
    fstype: str
    options: tuple[str, ...]


def mounts() -> list[Mount]:
    found = []
    with Path("/proc/self/mountinfo").open() as mountinfo:
        for line in mountinfo:
            before, _dash, after = line.partition(" - ")
            fstype, _source, options = after.split()[:3]
            point = OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), before.split()[4])
            found.append(Mount(Path(point), fstype, tuple(options.split(","))))
    return found


def mount_overlay(target: Path | str, options: str) -> None:
    """An overlay at target: options as mount -o takes them (lowerdir=..., and upperdir and
    workdir for a writable one)."""
    run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)])


def mounted(path: Path) -> bool:
    return any(m.point == path for m in mounts())


def mounts_below(path: Path) -> list[Path]:
    return [m.point for m in mounts() if m.point != path and m.point.is_relative_to(path)]


def overlay_lower_dirs() -> set[Path]:
    """Lower directories of the overlay mounts in use now."""
    return {
        Path(lower)
        for m in mounts()
        if m.fstype == "overlay"
        for option in m.options
        if option.startswith("lowerdir=")
        for lower in option.removeprefix("lowerdir=").split(":")
    }


def port_in_use(port: int, address: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return True
    return False


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def tcp_open(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def make_ssh_key(path: Path, comment: str) -> None:
    """An ed25519 key pair without passphrase at path (and path.pub), made once."""
    if not path.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def spawn_daemon(
    argv: list[str], log: Path, pidfile: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a process in its own session, detached from ours, output to log, pid to pidfile."""
    with log.open("ab") as output:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    pidfile.write_text(f"{proc.pid}\n")
    return proc


def start_daemon(
    argv: list[str],
    directory: Path,
    name: str,
    ready: Callable[[], bool],
    what: str,
    timeout: float = 30,
) -> None:
    """Start a lab daemon (log and pid as <name>.log and <name>.pid in directory) and wait
    until ready() says it serves; raise LabError naming it if it exits or stays silent."""
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / f"{name}.log"
    proc = spawn_daemon(argv, log, directory / f"{name}.pid")
    if not wait_until(lambda: proc.poll() is not None or ready(), timeout):
        raise LabError(f"{what} did not answer within {timeout:.0f} s: see {log}")
    if proc.poll() is not None:
        raise LabError(f"{what} exited at start (status {proc.returncode}): see {log}")


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def stop_daemon(pidfile: Path, grace: float = 5.0) -> None:
    """SIGTERM the process in pidfile, SIGKILL it after grace seconds, forget the pidfile."""
    pid = read_pid(pidfile)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not pid_alive(pid), grace):
            os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
