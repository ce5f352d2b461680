"""`gpufleet lab up | down | status | reset | ssh`: the fleet lab's life cycle."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gpufleet.lab import (
    LabError,
    apt_cache,
    cgroups,
    disks,
    downloads,
    ec2,
    front_door,
    hosts,
    images,
    inventory,
    network,
    rootfs,
)
from gpufleet.lab.launch import LaunchRequest, plan_hosts
from gpufleet.lab.standins import imds
from gpufleet.lab.system import (
    free_port,
    kill_all,
    make_ssh_key,
    mounts_below,
    port_in_use,
    processes_in_netns,
    python_module,
    read_pid,
    run,
    start_daemon,
    stop_daemon,
    succeeds,
    tcp_open,
    wait_until,
    write_whole,
)
from gpufleet.lab.topology import (
    BRIDGE,
    DEFAULT_NVME_DISKS,
    DEFAULT_NVME_SIZE,
    DEFAULT_REGION,
    DEFAULT_SUBNET,
    NETNS_PREFIX,
    NFT_TABLE,
    LabHost,
    LabPaths,
    LabTopology,
    check_nvme,
    plan,
)

KEEPER_MODULE = "gpufleet.lab.instance_keeper"
REQUIRED_TOOLS = (
    "systemd-nspawn",
    "debootstrap",
    "ip",
    "nft",
    "ssh",
    "ssh-keygen",
    "mount",
    "losetup",
)
SSH_READY_SECONDS = 120.0
DEFAULT_GPU_HOSTS = 3
DEFAULT_LB_HOSTS = 1
MAX_PORT = 65535
REGION_NAME = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")


@dataclass(frozen=True)
class UpRequest:
    """What `lab up` was asked for; None means the running lab's value, or the default."""

    gpu_hosts: int | None = None
    lb_hosts: int | None = None
    subnet: str | None = None
    region: str | None = None
    ec2_port: int | None = None
    nvme_disks: tuple[int, ...] | None = None
    nvme_size: str | None = None
    bake_hosts: int | None = None

    def __post_init__(self) -> None:
        """Refuse what cannot be right before anything is looked at or built."""
        if self.ec2_port is not None and not 1 <= self.ec2_port <= MAX_PORT:
            raise LabError(f"--ec2-port {self.ec2_port} is not a TCP port (1 to {MAX_PORT})")
        if self.region is not None and not REGION_NAME.fullmatch(self.region):
            raise LabError(f"--region {self.region!r} is not an AWS region name, such as us-east-1")
        check_nvme(self.nvme_disks or DEFAULT_NVME_DISKS, self.nvme_size or DEFAULT_NVME_SIZE)


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root: it mounts overlays and makes network namespaces")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise LabError(f"missing prerequisite: {', '.join(missing)} (run `make deps`)")


def load(paths: LabPaths) -> LabTopology | None:
    if not paths.lab_file.exists():
        return None
    return LabTopology.from_json(paths.lab_file.read_text())


def _save(paths: LabPaths, topology: LabTopology) -> None:
    paths.state.mkdir(parents=True, exist_ok=True)
    write_whole(paths.lab_file, topology.to_json())


def _write_known_hosts(paths: LabPaths, lines: list[str]) -> None:
    write_whole(paths.known_hosts, "".join(f"{line}\n" for line in lines))


def ssh_argv(paths: LabPaths, host: LabHost) -> list[str]:
    return ["ssh", "-F", str(paths.ssh_config), host.address]


# --- what is there --------------------------------------------------------------------------


def leftovers(paths: LabPaths) -> list[str]:
    """Every piece of a lab on this machine, whether or not the lab's state file knows of it."""
    found = []
    if network.bridge_exists():
        found.append(f"bridge {BRIDGE}")
    found += [f"namespace {ns}" for ns in network.lab_namespaces()]
    found += [f"veth {veth}" for veth in network.lab_veths()]
    if network.nat_present():
        found.append(f"nft table {NFT_TABLE}")
    found += [f"mount {m}" for m in mounts_below(paths.state)]
    found += [f"cgroup {c}" for c in cgroups.lab_cgroups()]
    found += [f"loop device {d}" for d in disks.lab_loop_devices(paths.state)]
    found += [f"process {pid} ({what})" for pid, what in _lab_processes(paths)]
    return found


def _lab_processes(paths: LabPaths) -> list[tuple[int, str]]:
    markers = {
        "gpufleet.lab.supervisor": "host supervisor",
        "gpufleet.lab.ec2": "EC2 API",
        KEEPER_MODULE: "instance keeper",
        downloads.REGISTRY_MODULE: "model registry",
        imds.IMDS_MODULE: "IMDS",
    }
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        mine = any(w.startswith(str(paths.state)) for w in words)
        found += [
            (int(entry.name), what) for marker, what in markers.items() if mine and marker in words
        ]
    for netns in network.lab_namespaces():
        found += [(pid, f"process in {netns}") for pid in processes_in_netns(netns)]
    return found


def host_status(paths: LabPaths, host: LabHost) -> dict[str, object]:
    files = hosts.HostFiles(paths, host.name)
    supervised = hosts.running(files)
    ssh_open = supervised and tcp_open(host.address, 22, timeout=0.5)
    history = hosts.events(files)
    return {
        "name": host.name,
        "role": host.role,
        "address": host.address,
        "state": "up" if ssh_open else ("booting" if supervised else "down"),
        "nvme": disks.names_inside(host),
        "last_event": history[-1] if history else "",
        "reboots": sum(line.endswith("(reboot)") for line in history),
    }


def status(paths: LabPaths) -> dict[str, object]:
    topology = load(paths)
    if topology is None:
        pieces = leftovers(paths)
        return {"state": "stale" if pieces else "absent", "leftovers": pieces, "hosts": []}
    host_states = [host_status(paths, h) for h in topology.hosts]
    ec2_up = ec2.server_pid(paths.ec2_dir) is not None and tcp_open("127.0.0.1", topology.ec2_port)
    healthy = ec2_up and all(h["state"] == "up" for h in host_states)
    return {
        "state": "up" if healthy else "degraded",
        "ec2_endpoint": ec2.endpoint(topology.ec2_port),
        "ec2_api": "up" if ec2_up else "down",
        "region": topology.region,
        "subnet": topology.subnet,
        "inventory": str(paths.inventory_dir),
        "lab_vars": str(paths.lab_vars),
        "ssh_config": str(paths.ssh_config),
        "registry": f"http://{topology.gateway}:{topology.registry_port}"
        if topology.registry_port
        else "",
        "ssh_key": str(paths.ssh_key),
        "front_door": str(front_door.front_door_file(paths)),
        "hosts": host_states,
    }


# --- up ---------------------------------------------------------------------------------------


def _resolve(paths: LabPaths, request: UpRequest) -> LabTopology:
    """The topology to bring up: the running lab's (a recovery) or a new plan."""
    current = load(paths)
    if current is None:
        pieces = leftovers(paths)
        if pieces:
            raise LabError(
                f"a stale lab from an earlier run is still here ({pieces[0]}, "
                f"{len(pieces)} pieces in all): run `gpufleet lab down` first"
            )
        topology = plan(
            DEFAULT_GPU_HOSTS if request.gpu_hosts is None else request.gpu_hosts,
            DEFAULT_LB_HOSTS if request.lb_hosts is None else request.lb_hosts,
            request.subnet or DEFAULT_SUBNET,
            request.region or DEFAULT_REGION,
            request.nvme_disks or DEFAULT_NVME_DISKS,
            request.nvme_size or DEFAULT_NVME_SIZE,
            request.bake_hosts or 0,
        )
        network.check_subnet_is_free(topology)
        return topology
    gpu = [h for h in current.hosts if h.role == "gpu" and not h.image]
    running = Counter(h.role for h in current.hosts if not h.image)
    wanted = plan(
        running["gpu"] if request.gpu_hosts is None else request.gpu_hosts,
        running["lb"] if request.lb_hosts is None else request.lb_hosts,
        request.subnet or current.subnet,
        request.region or current.region,
        request.nvme_disks or tuple(h.nvme_disks for h in gpu) or DEFAULT_NVME_DISKS,
        request.nvme_size or current.nvme_size,
        running["bake"] if request.bake_hosts is None else request.bake_hosts,
    )
    if (wanted.hosts, wanted.region, wanted.nvme_size) != (
        [h for h in current.hosts if not h.image],
        current.region,
        current.nvme_size,
    ):
        raise LabError(
            "a lab with another topology is up: run `gpufleet lab down` before "
            "changing hosts, subnet, region or NVMe disks"
        )
    if request.ec2_port not in (None, current.ec2_port):
        raise LabError(f"the lab's EC2 API already listens on port {current.ec2_port}")
    return current


def _choose_ec2_port(paths: LabPaths, topology: LabTopology, requested: int | None) -> int:
    if ec2.server_pid(paths.ec2_dir) is not None and topology.ec2_port:
        return topology.ec2_port
    port = requested if requested is not None else (topology.ec2_port or free_port())
    if port_in_use(port):
        raise LabError(f"port {port} on 127.0.0.1 is busy: choose another with --ec2-port")
    return port


def _ensure_ssh_key(paths: LabPaths) -> str:
    paths.ssh_key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    make_ssh_key(paths.ssh_key, "gpufleet-lab")
    return paths.ssh_key.with_suffix(".pub").read_text()


def _lower(paths: LabPaths, host: LabHost, rootfs_dir: Path) -> str:
    """What a host's disk lies over: the rootfs, or its image's disk over the rootfs."""
    return (
        images.lower_dirs(paths, images.find(paths, host.image)) if host.image else str(rootfs_dir)
    )


def _bring_up_host(
    paths: LabPaths, topology: LabTopology, host: LabHost, rootfs_dir: Path, authorized_key: str
) -> str:
    """Start the host; return its known_hosts line (a launched host's once it made its key)."""
    files = hosts.HostFiles(paths, host.name)
    known_host = "" if host.image else hosts.ensure_identity(files, host)
    network.ensure_host_link(topology, host)
    lower = _lower(paths, host, rootfs_dir)
    hosts.ensure_overlay(files, lower, topology, host, authorized_key, paths.cache)
    loops = disks.ensure(paths, host, topology.nvme_size)
    hosts.start(files, host, disks.nspawn_options(paths, host, loops))
    return known_host or hosts.own_host_key(files, host) or ""


def wait_for_ssh(paths: LabPaths, topology: LabTopology, names: list[str]) -> None:
    """Wait until every named host accepts SSH as the lab user."""
    targets = [topology.host(n) for n in names]

    def ready(host: LabHost) -> bool:
        return tcp_open(host.address, 22) and succeeds([*ssh_argv(paths, host), "true"])

    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        results = pool.map(lambda h: wait_until(lambda: ready(h), SSH_READY_SECONDS, 1.0), targets)
    late = [h.name for h, ok in zip(targets, results, strict=True) if not ok]
    if late:
        raise LabError(
            f"no SSH from {', '.join(late)} within {SSH_READY_SECONDS:.0f} s: "
            f"see {paths.host_dir(late[0]) / 'console.log'}"
        )


def up(paths: LabPaths, request: UpRequest) -> LabTopology:
    check_prerequisites()
    with topology_lock(paths):
        return _up(paths, request)


def _up(paths: LabPaths, request: UpRequest) -> LabTopology:
    topology = _resolve(paths, request)
    topology = replace(topology, ec2_port=_choose_ec2_port(paths, topology, request.ec2_port))
    lower = rootfs.ensure_rootfs(paths.cache)
    authorized_key = _ensure_ssh_key(paths)
    _save(paths, topology)
    network.ensure_bridge(topology)
    forward_before = network.ensure_nat(topology)
    if not topology.ip_forward_before:
        topology = replace(topology, ip_forward_before=forward_before)
        _save(paths, topology)
    # A host already running is left as it is: a bake host past its sysprep, say, lets no
    # one in until it gets a fresh disk, and that is its bake's business.
    booting = [h.name for h in topology.hosts if not hosts.running(hosts.HostFiles(paths, h.name))]
    known_hosts = [
        _bring_up_host(paths, topology, h, lower, authorized_key) for h in topology.hosts
    ]
    _write_known_hosts(paths, [line for line in known_hosts if line])
    if ec2.server_pid(paths.ec2_dir) is None:
        ec2.start_server(paths.ec2_dir, topology.ec2_port, topology.gateway)
    ec2.seed(topology)
    if read_pid(_keeper_pid(paths)) is None:
        _start_keeper(paths)
    topology, artifacts = _ensure_downloads(paths, topology)
    inventory.write(paths, topology, artifacts)
    front_door.ensure(paths, topology)
    wait_for_ssh(paths, topology, booting)
    return topology


def _ensure_downloads(
    paths: LabPaths, topology: LabTopology
) -> tuple[LabTopology, downloads.Artifacts]:
    """Build what the lab serves its hosts (once) and start serving it on the bridge."""
    artifacts: downloads.Artifacts = {
        "ollama": _built_once(paths, "release.json", downloads.build_releases),
        "node_exporter": _built_once(
            paths, "node_exporter.json", downloads.build_node_exporter_archive
        ),
        "cuda_repo": _built_once(paths, "cuda_repo.json", downloads.build_cuda_repo),
    }
    if not topology.registry_models:
        models = os.environ.get("GPUFLEET_LAB_MODELS", downloads.DEFAULT_MODELS)
        topology = replace(topology, registry_models=models)
    if downloads.registry_pid(paths) is None:
        topology = replace(topology, registry_port=downloads.start_registry(paths, topology))
    if not imds.running(paths):
        topology = replace(topology, imds_port=imds.start(paths, topology))
    _save(paths, topology)
    return topology, artifacts


def _built_once(paths: LabPaths, name: str, build: Callable[[LabPaths], Any]) -> Any:
    """What a stand-in builder returned, recorded in the registry's directory so a lab that
    is brought up again serves the same files without building them twice."""
    record = paths.registry_dir / name
    if not record.exists():
        paths.registry_dir.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(build(paths)))
    return json.loads(record.read_text())


# --- images and launch ------------------------------------------------------------------------


def keep_image(
    paths: LabPaths, topology: LabTopology, name: str, image_tags: dict[str, str], audit: str
) -> images.Image:
    """Keep a baked host's disk as an image, then give the host a fresh disk. Under the
    topology lock throughout, so that no `lab up` boots the stopped host meanwhile."""
    host = topology.host(name)
    files = hosts.HostFiles(paths, name)
    check_prerequisites()
    with topology_lock(paths):
        hosts.stop(files, host.netns)
        hosts.unmount(files)
        image = images.keep(
            paths, topology, name, files.upper, rootfs.ensure_rootfs(paths.cache), image_tags, audit
        )
        _reset(paths, [name])
    return image


def launch(paths: LabPaths, request: LaunchRequest) -> list[LabHost]:
    """New hosts from an image, checked first: with a bad request nothing is made."""
    check_prerequisites()
    with topology_lock(paths):
        topology = _loaded(paths)
        launched = plan_hosts(topology, images.find(paths, request.image_id), request)
        topology = _boot_launched(paths, topology, launched)
        ec2.launch(topology, launched)
        _announce_launched(paths, topology, launched)
    wait_for_ssh(paths, topology, [h.name for h in launched])
    return launched


def adopt(paths: LabPaths, host: LabHost, instance_id: str) -> None:
    """Boot a host for an instance the EC2 API launched itself (an Auto Scaling group's).
    The caller holds topology_lock, as for retire."""
    topology = _boot_launched(paths, _loaded(paths), [host])
    ec2.mark_lab_host(topology, instance_id, host.name)
    _announce_launched(paths, topology, [host])


def retire(paths: LabPaths, name: str) -> None:
    """Power off a launched host whose instance was terminated, and forget it: its address
    may be the next instance's."""
    topology = _loaded(paths)
    host = topology.host(name)
    files = hosts.HostFiles(paths, name)
    hosts.stop(files, host.netns)
    hosts.unmount(files)
    disks.wipe(paths, host)
    network.remove_host_link(host)
    imds.clear_notices(paths.imds_dir / "notices", host.address)
    shutil.rmtree(paths.host_dir(name), onerror=_unless_already_gone)
    topology = replace(topology, hosts=[h for h in topology.hosts if h.name != name])
    _save(paths, topology)
    topology, artifacts = _ensure_downloads(paths, topology)
    inventory.write(paths, topology, artifacts)
    lines = paths.known_hosts.read_text().splitlines()
    kept = [line for line in lines if host.address not in line.split(" ", 1)[0].split(",")]
    _write_known_hosts(paths, kept)


@contextlib.contextmanager
def topology_lock(paths: LabPaths) -> Iterator[None]:
    """One writer of the lab's hosts at a time: `lab launch` and the instance keeper."""
    paths.state.mkdir(parents=True, exist_ok=True)
    with (paths.state / "hosts.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _loaded(paths: LabPaths) -> LabTopology:
    topology = load(paths)
    if topology is None:
        raise LabError("the lab is not up: run `gpufleet lab up` first")
    return topology


def _boot_launched(paths: LabPaths, topology: LabTopology, launched: list[LabHost]) -> LabTopology:
    topology = replace(topology, hosts=[*topology.hosts, *launched])
    _save(paths, topology)
    lower = rootfs.ensure_rootfs(paths.cache)
    authorized_key = _ensure_ssh_key(paths)
    for host in launched:
        _bring_up_host(paths, topology, host, lower, authorized_key)
    return topology


def _announce_launched(paths: LabPaths, topology: LabTopology, launched: list[LabHost]) -> None:
    """The inventory lists the new hosts; SSH knows their keys once their first boot made them."""
    topology, artifacts = _ensure_downloads(paths, topology)
    inventory.write(paths, topology, artifacts)
    _learn_host_keys(paths, launched)


def _learn_host_keys(paths: LabPaths, launched: list[LabHost]) -> None:
    """Pin each launched host's own key once its first boot made it."""
    lines = []
    for host in launched:
        files = hosts.HostFiles(paths, host.name)
        if not wait_until(
            lambda f=files, h=host: hosts.own_host_key(f, h) is not None, SSH_READY_SECONDS
        ):
            raise LabError(
                f"{host.name} made no SSH host key within {SSH_READY_SECONDS:.0f} s of its first "
                f"boot: see {files.console}"
            )
        lines.append(hosts.own_host_key(files, host))
    with paths.known_hosts.open("a") as known_hosts:
        known_hosts.write("\n".join(lines) + "\n")


def keeper_ready(paths: LabPaths) -> Path:
    return paths.ec2_dir / "keeper.ready"


def _keeper_pid(paths: LabPaths) -> Path:
    return paths.ec2_dir / "keeper.pid"


def _start_keeper(paths: LabPaths) -> None:
    """The daemon that boots, powers off and reclaims hosts as the EC2 API's groups need
    (gpufleet.lab.instance_keeper)."""
    keeper_ready(paths).unlink(missing_ok=True)
    start_daemon(
        python_module(KEEPER_MODULE, str(paths.state), str(paths.cache)),
        paths.ec2_dir,
        "keeper",
        ready=keeper_ready(paths).exists,
        what="the lab's instance keeper",
    )


# --- reset and down ---------------------------------------------------------------------------


def reset(paths: LabPaths, names: list[str]) -> None:
    """Give the named hosts a fresh disk: as if just launched from the lab's image."""
    check_prerequisites()
    with topology_lock(paths):
        _reset(paths, names)


def _reset(paths: LabPaths, names: list[str]) -> None:
    topology = load(paths)
    if topology is None:
        raise LabError("the lab is not up: run `gpufleet lab up` first")
    targets = (
        [topology.host(n) for n in names] if names else [h for h in topology.hosts if not h.image]
    )
    launched = [h.name for h in targets if h.image]
    if launched:
        raise LabError(
            f"{', '.join(launched)} launched from an image: launch another rather than reset it"
        )
    lower = rootfs.ensure_rootfs(paths.cache)
    authorized_key = _ensure_ssh_key(paths)

    def fresh(host: LabHost) -> None:
        files = hosts.HostFiles(paths, host.name)
        hosts.stop(files, host.netns)
        hosts.unmount(files)
        apt_cache.collect(paths.cache, files.upper)
        hosts.wipe_overlay(files)
        disks.wipe(paths, host)
        _bring_up_host(paths, topology, host, lower, authorized_key)

    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        list(pool.map(fresh, targets))
    wait_for_ssh(paths, topology, [h.name for h in targets])


def down(paths: LabPaths) -> list[str]:
    """Remove the lab entirely; return whatever could not be removed (empty when clean)."""
    check_prerequisites()
    # First, so that no instance is booted or reclaimed while the lab goes.
    stop_daemon(_keeper_pid(paths))
    topology = load(paths)
    host_dirs = sorted((paths.state / "hosts").glob("*"))
    with ThreadPoolExecutor(max_workers=max(1, len(host_dirs))) as pool:
        list(
            pool.map(
                lambda d: hosts.stop(hosts.HostFiles(paths, d.name), NETNS_PREFIX + d.name),
                host_dirs,
            )
        )
    kill_all([pid for pid, _what in _lab_processes(paths)])
    for host_dir in host_dirs:
        apt_cache.collect(paths.cache, hosts.HostFiles(paths, host_dir.name).upper)
    ec2.stop_server(paths.ec2_dir)
    # The images' AMIs were the EC2 API's, which is gone.
    images.remove_all(paths)
    downloads.stop_registry(paths)
    imds.stop(paths)
    for mount_point in sorted(mounts_below(paths.state), key=lambda p: len(p.parts), reverse=True):
        run(["umount", "--lazy", str(mount_point)], check=False)
    network.teardown(topology.ip_forward_before if topology else "")
    disks.detach_below(paths.state)
    cgroups.remove_lab_cgroups()
    remaining = leftovers(paths)
    if not remaining and paths.state.exists():
        shutil.rmtree(paths.state, onerror=_unless_already_gone)
    return remaining


def _unless_already_gone(_func: object, _path: str, exc_info: tuple) -> None:
    """A host's last processes may still be deleting files while the state goes."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]
