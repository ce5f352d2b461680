"""Lab hosts: an overlay over the shared rootfs, per-host identity, and a supervised nspawn."""

from __future__ import annotations

import json
import os
import shutil
import signal
import uuid
from pathlib import Path

from gpufleet.lab import apt_cache
from gpufleet.lab.system import (
    kill_netns_processes,
    make_ssh_key,
    mount_overlay,
    mounted,
    python_module,
    read_pid,
    run,
    spawn_daemon,
    stop_daemon,
)
from gpufleet.lab.topology import SSH_USER, LabHost, LabPaths, LabTopology

SHUTDOWN_GRACE_SECONDS = 12.0


class HostFiles:
    """Where one host's overlay, identity and supervisor records live."""

    def __init__(self, paths: LabPaths, name: str) -> None:
        self.root = paths.host_dir(name)
        self.upper = self.root / "upper"
        self.work = self.root / "work"
        self.merged = self.root / "merged"
        self.host_key = self.root / "ssh_host_ed25519_key"
        self.nspawn_argv = self.root / "nspawn.json"
        self.supervisor_pid = self.root / "supervisor.pid"
        self.nspawn_pid = self.root / "nspawn.pid"
        self.events = self.root / "events.log"
        self.console = self.root / "console.log"


def ensure_identity(files: HostFiles, host: LabHost) -> str:
    """Make the host's SSH key once, kept across resets; return the host's known_hosts line."""
    files.root.mkdir(parents=True, exist_ok=True)
    make_ssh_key(files.host_key, host.name)
    key_type, key_body = files.host_key.with_suffix(".pub").read_text().split()[:2]
    return f"{host.address},{host.name} {key_type} {key_body}"


def ensure_overlay(
    files: HostFiles,
    lower: str,
    topology: LabTopology,
    host: LabHost,
    authorized_key: str,
    package_cache: Path,
) -> None:
    """Mount the host's overlay over lower (the rootfs, or an image's disk over it) and write
    what makes it this host: name, keys, /etc/hosts. A fresh host of the rootfs gets the lab's
    cached packages in its apt archive and the lab's host key; one launched from an image makes
    its own host keys at first boot."""
    if mounted(files.merged):
        return
    for directory in (files.upper, files.work, files.merged):
        directory.mkdir(parents=True, exist_ok=True)
    fresh = not any(files.upper.iterdir())
    if fresh and not host.image:
        apt_cache.seed(package_cache, files.upper)
    mount_overlay(files.merged, f"lowerdir={lower},upperdir={files.upper},workdir={files.work}")
    if fresh:
        _personalise(files, topology, host, authorized_key)


def _personalise(
    files: HostFiles, topology: LabTopology, host: LabHost, authorized_key: str
) -> None:
    etc = files.merged / "etc"
    (etc / "hostname").write_text(host.name + "\n")
    (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
    hosts_lines = ["127.0.0.1 localhost", f"127.0.1.1 {host.name}", ""]
    hosts_lines[2:2] = [f"{h.address} {h.name}" for h in topology.hosts]
    (etc / "hosts").write_text("\n".join(hosts_lines) + "\n")
    if not host.image:
        for suffix, mode in (("", 0o600), (".pub", 0o644)):
            source = files.host_key.with_name(files.host_key.name + suffix)
            _write_file(etc / "ssh" / source.name, source.read_bytes(), mode)
    ssh_dir = files.merged / "home" / SSH_USER / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(authorized_key)
    owner = (files.merged / "home" / SSH_USER).stat()
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, owner.st_uid, owner.st_gid)


def _write_file(path: Path, content: bytes, mode: int) -> None:
    """Write a file that has its mode from the start: a private key is never readable."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as out:
        out.write(content)


def own_host_key(files: HostFiles, host: LabHost) -> str | None:
    """The known_hosts line of the host key a launched host made at its first boot, read from
    its disk (as EC2's console output shows it); None until it is there."""
    public = files.merged / "etc" / "ssh" / "ssh_host_ed25519_key.pub"
    try:
        key_type, key_body = public.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return f"{host.address},{host.name} {key_type} {key_body}"


def nspawn_argv(files: HostFiles, host: LabHost, extra: list[str]) -> list[str]:
    """A host owns its network namespace as an EC2 instance owns its network: it may load
    nftables rules and set net.* sysctls there (CAP_NET_ADMIN, /proc/sys/net writable);
    kernel-wide settings stay read-only, as they belong to the machine."""
    return [
        "env",
        "SYSTEMD_NSPAWN_API_VFS_WRITABLE=network",
        "systemd-nspawn",
        "--quiet",
        f"--directory={files.merged}",
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--machine={host.name}",
        f"--hostname={host.name}",
        f"--network-namespace-path=/run/netns/{host.netns}",
        "--resolv-conf=copy-host",
        "--timezone=off",
        "--link-journal=no",
        "--console=passive",
        "--capability=CAP_NET_ADMIN",
        *extra,
    ]


def running(files: HostFiles) -> bool:
    return read_pid(files.supervisor_pid) is not None


def start(files: HostFiles, host: LabHost, extra: list[str]) -> None:
    """Start the host's supervisor, which boots the host and boots it again after a reboot;
    extra is more for nspawn (the host's disks)."""
    if running(files):
        return
    # A host whose nspawn was killed leaves its container behind; clear it before booting again.
    kill_netns_processes(host.netns)
    files.nspawn_argv.write_text(json.dumps(nspawn_argv(files, host, extra)))
    files.nspawn_pid.unlink(missing_ok=True)
    # Packer's build instance compiles beside the fleet's hosts and yields the CPU to them.
    yielding = ["--yield-cpu"] if host.role == "bake" else []
    spawn_daemon(
        python_module("gpufleet.lab.supervisor", str(files.root), "--own-cgroup", *yielding),
        files.console,
        files.supervisor_pid,
    )


def stop(files: HostFiles, netns: str) -> None:
    """Power the host off through its supervisor; kill what is left after a grace period."""
    stop_daemon(files.supervisor_pid, SHUTDOWN_GRACE_SECONDS)
    nspawn = read_pid(files.nspawn_pid)
    if nspawn is not None:
        os.kill(nspawn, signal.SIGKILL)
    kill_netns_processes(netns)
    files.nspawn_pid.unlink(missing_ok=True)


def unmount(files: HostFiles) -> None:
    if mounted(files.merged):
        run(["umount", str(files.merged)])


def wipe_overlay(files: HostFiles) -> None:
    """Forget everything the host wrote; its identity (host key) is kept."""
    for directory in (files.upper, files.work):
        if directory.exists():
            shutil.rmtree(directory)


def events(files: HostFiles) -> list[str]:
    """The supervisor's event lines: boots and exits, such as 'exit 133 (reboot)'."""
    if not files.events.exists():
        return []
    return files.events.read_text().strip().splitlines()
