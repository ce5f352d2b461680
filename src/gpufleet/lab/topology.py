"""What the lab is made of: its paths, its subnet and one record per host."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from gpufleet.lab import LabError

BRIDGE = "gflab0"
NFT_TABLE = "gpufleet_lab"
NETNS_PREFIX = "gflab-"
VETH_PREFIX = "gfl-"
SSH_USER = "admin"
DEFAULT_SUBNET = "10.77.0.0/24"
DEFAULT_REGION = "us-east-1"

# Served models and instance types cycle over the GPU hosts so the inventory
# sees the variety a real fleet has: two models, two GPU families, spot and on-demand.
GPU_MODELS = ("llama3.1:8b", "llama3.1:8b", "qwen2.5:7b")
# The GPU pool, and its alias: clients ask for `chat` whatever model each host serves.
GPU_POOL, GPU_POOL_ALIAS = "chat", "chat"
GPU_INSTANCE_TYPES = ("g4dn.xlarge", "g5.xlarge")
LB_INSTANCE_TYPE = "t3.medium"
# Instance-store NVMe disks (loop devices) per GPU host, cycled like the types above: a
# stripe, a single disk and none, the three layouts the model store knows.
DEFAULT_NVME_DISKS = (2, 1, 0)
DEFAULT_NVME_SIZE = "4G"
MAX_NVME_DISKS = 8
# mkfs.xfs refuses file systems smaller than 300 MiB.
MIN_NVME_BYTES = 300 * 1024**2


@dataclass(frozen=True)
class LabPaths:
    state: Path
    cache: Path

    @classmethod
    def from_environment(cls) -> LabPaths:
        return cls(
            state=Path(os.environ.get("GPUFLEET_LAB_STATE", "/var/lib/gpufleet-lab")),
            cache=Path(os.environ.get("GPUFLEET_LAB_CACHE", "/var/cache/gpufleet-lab")),
        )

    @property
    def lab_file(self) -> Path:
        return self.state / "lab.json"

    @property
    def ssh_key(self) -> Path:
        return self.state / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state / "ssh" / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        """How SSH reaches lab hosts (key, user, pinned host keys), for `ssh -F`."""
        return self.state / "ssh" / "config"

    @property
    def inventory_dir(self) -> Path:
        return self.state / "inventory"

    @property
    def lab_vars(self) -> Path:
        """The lab-to-role contract: the variables the lab hands to playbooks and molecule
        (where its hosts download Ollama, node exporter and the driver from)."""
        return self.inventory_dir / "group_vars" / "all" / "lab_vars.yml"

    @property
    def ec2_dir(self) -> Path:
        return self.state / "ec2"

    @property
    def registry_dir(self) -> Path:
        return self.state / "registry"

    @property
    def files_dir(self) -> Path:
        return self.state / "registry" / "files"

    @property
    def imds_dir(self) -> Path:
        """The IMDS stand-in's log and pid, and its notices: imds/notices/<address>/."""
        return self.state / "imds"

    def host_dir(self, name: str) -> Path:
        return self.state / "hosts" / name


@dataclass(frozen=True)
class LabHost:
    name: str
    role: str
    address: str
    az_index: int
    instance_type: str
    lifecycle: str
    pool: str
    model: str = ""
    alias: str = ""
    nvme_disks: int = 0
    # The lab image it was launched from (`lab launch`); empty for a host `lab up` made.
    image: str = ""

    @property
    def netns(self) -> str:
        return NETNS_PREFIX + self.name

    @property
    def veth(self) -> str:
        return VETH_PREFIX + self.name


@dataclass
class LabTopology:
    subnet: str
    region: str
    hosts: list[LabHost]
    ec2_port: int = 0
    registry_port: int = 0
    # The IMDS stand-in every host reads its spot and rebalance notices from.
    imds_port: int = 0
    # Models the lab registry serves, NAME=SIZE separated by commas.
    registry_models: str = ""
    # The machine's net.ipv4.ip_forward before the lab turned it on, restored by `lab down`.
    ip_forward_before: str = ""
    # Size of each GPU host's instance-store disks, as losetup's sparse files take it (4G).
    nvme_size: str = DEFAULT_NVME_SIZE

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts)
        raise LabError(f"no lab host named {name!r} (the lab has: {known})")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LabTopology:
        data = json.loads(text)
        data["hosts"] = [LabHost(**h) for h in data["hosts"]]
        return cls(**data)


def plan(
    gpu_hosts: int,
    lb_hosts: int,
    subnet: str,
    region: str,
    nvme_disks: tuple[int, ...] = DEFAULT_NVME_DISKS,
    nvme_size: str = DEFAULT_NVME_SIZE,
    bake_hosts: int = 0,
) -> LabTopology:
    """Lay out the hosts: GPU hosts first, then load balancers, then bake hosts, alternating
    two AZs.

    The subnet is split in two halves, one per AZ, as two EC2 subnets would be. GPU hosts
    get instance-store disks by nvme_disks, cycled. Bake hosts come last so that asking for
    them moves no other host's address.
    """
    if gpu_hosts < 0 or lb_hosts < 0 or gpu_hosts + lb_hosts == 0:
        raise LabError("the lab needs at least one host: set --gpu-hosts and --lb-hosts >= 0")
    if bake_hosts < 0:
        raise LabError("--bake-hosts must be 0 or more")
    try:
        network = ipaddress.IPv4Network(subnet)
    except ValueError as exc:
        raise LabError(f"--subnet {subnet!r} is not an IPv4 network: {exc}") from None
    if not network.is_private or network.prefixlen > 26:
        raise LabError(f"--subnet {subnet} must be a private IPv4 network of /26 or larger")
    half = network.num_addresses // 2
    per_az = half - 12
    count = gpu_hosts + lb_hosts + bake_hosts
    if (count + 1) // 2 > per_az:
        raise LabError(f"--subnet {subnet} is too small for {count} hosts")
    check_nvme(nvme_disks, nvme_size)

    roles = (
        [("gpu", i) for i in range(1, gpu_hosts + 1)]
        + [("lb", i) for i in range(1, lb_hosts + 1)]
        + [("bake", i) for i in range(1, bake_hosts + 1)]
    )
    hosts = []
    for index, (role, number) in enumerate(roles):
        az_index = index % 2
        address = network.network_address + az_index * half + 10 + index // 2
        host = _host(role, number, str(address), az_index)
        if role == "gpu":
            host = replace(host, nvme_disks=nvme_disks[(number - 1) % len(nvme_disks)])
        hosts.append(host)
    return LabTopology(subnet=str(network), region=region, hosts=hosts, nvme_size=nvme_size)


def check_nvme(nvme_disks: tuple[int, ...], nvme_size: str) -> None:
    if not nvme_disks or not all(0 <= n <= MAX_NVME_DISKS for n in nvme_disks):
        raise LabError(f"--nvme-disks needs counts from 0 to {MAX_NVME_DISKS}, such as 2,1,0")
    if size_bytes(nvme_size) < MIN_NVME_BYTES:
        raise LabError(f"--nvme-size {nvme_size} is below the 300M XFS needs")


def size_bytes(text: str) -> int:
    """4G, 512M: a size in bytes, binary units as truncate and losetup take them."""
    match = re.fullmatch(r"(\d+)([MG])", text)
    if match is None:
        raise LabError(f"--nvme-size {text!r} is not a size such as 4G or 512M")
    return int(match.group(1)) * (1024**3 if match.group(2) == "G" else 1024**2)


def _host(role: str, number: int, address: str, az_index: int) -> LabHost:
    place = {"name": f"{role}-{number}", "role": role, "address": address, "az_index": az_index}
    if role == "bake":
        # Packer's build instance: in no pool, serving nothing, gone when the image is made.
        return LabHost(**place, instance_type=GPU_INSTANCE_TYPES[0], lifecycle="on-demand", pool="")
    if role == "lb":
        return LabHost(**place, instance_type=LB_INSTANCE_TYPE, lifecycle="on-demand", pool="edge")
    return LabHost(
        **place,
        instance_type=GPU_INSTANCE_TYPES[(number - 1) % len(GPU_INSTANCE_TYPES)],
        lifecycle="spot" if number % 2 == 0 else "on-demand",
        pool=GPU_POOL,
        model=GPU_MODELS[(number - 1) % len(GPU_MODELS)],
        alias=GPU_POOL_ALIAS,
    )
