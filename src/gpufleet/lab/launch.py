"""`gpufleet lab launch`: new lab hosts from a kept image, as EC2 launches instances from an AMI.

Each host gets a new disk from the image (an overlay of the image's disk over the rootfs), empty
instance-store disks, a new address on the bridge, and an instance in the local EC2 API made by
`run_instances` with the image and the fleet's tags. The lab puts in only what EC2 itself
gives an instance: the key pair's public key (cloud-init's part), the host name and the VPC's
name resolution (/etc/hosts). Its SSH host keys, machine id and bind addresses are the image's
first-boot and every-boot work; no playbook runs on it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from gpufleet.lab import LabError, collection_module_util, images
from gpufleet.lab.topology import (
    DEFAULT_NVME_SIZE,
    GPU_INSTANCE_TYPES,
    GPU_POOL,
    GPU_POOL_ALIAS,
    LabHost,
    LabTopology,
    check_nvme,
)

LIFECYCLES = ("on-demand", "spot")
MAX_COUNT = 8
GPU_NAME = re.compile(r"gpu-(\d+)")


@dataclass(frozen=True)
class LaunchRequest:
    image_id: str
    count: int = 1
    pool: str = GPU_POOL
    # Empty: the image's first model.
    model: str = ""
    lifecycle: str = "on-demand"
    # Instance-store disks of each host, cycled over them as `lab up --nvme-disks` does.
    nvme_disks: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_COUNT:
            raise LabError(f"--count {self.count}: launch 1 to {MAX_COUNT} hosts at a time")
        if self.lifecycle not in LIFECYCLES:
            raise LabError(f"--lifecycle {self.lifecycle!r}: spot or on-demand")
        check_nvme(self.nvme_disks, DEFAULT_NVME_SIZE)


def plan_hosts(topology: LabTopology, image: images.Image, request: LaunchRequest) -> list[LabHost]:
    """The hosts to launch, checked against the image and the lab before anything is made."""
    if not image.launchable:
        raise LabError(
            f"image {image.image_id} failed its audit ({image.audit}): it is kept to be read, "
            "not launched; nothing launched"
        )
    names = collection_module_util("model_names")
    model = request.model or (image.models[0] if image.models else "")
    problem = names.name_problem(model) if model else "no model given and the image has none"
    if problem:
        raise LabError(f"--model {model!r}: {problem}; nothing launched")
    carried = {names.full_name(m) for m in image.models}
    if names.full_name(model) not in carried:
        raise LabError(
            f"image {image.image_id} does not carry {model} (it carries "
            f"{', '.join(image.models) or 'no model'}); nothing launched"
        )
    pools = sorted({h.pool for h in topology.hosts if h.role == "gpu"})
    if request.pool not in pools:
        raise LabError(
            f"--pool {request.pool!r}: the lab's GPU pools are {', '.join(pools) or 'none'}, "
            "whose LB backends a launched host joins; nothing launched"
        )
    first_number = next_gpu_number(topology)
    taken = {h.address for h in topology.hosts} | {topology.gateway}
    launched = []
    for index in range(request.count):
        az_index = (len(topology.hosts) + index) % 2
        address = _free_address(topology, az_index, taken)
        taken.add(address)
        launched.append(
            LabHost(
                name=f"gpu-{first_number + index}",
                role="gpu",
                address=address,
                az_index=az_index,
                instance_type=GPU_INSTANCE_TYPES[0],
                lifecycle=request.lifecycle,
                pool=request.pool,
                model=model,
                alias=GPU_POOL_ALIAS if request.pool == GPU_POOL else "",
                nvme_disks=request.nvme_disks[index % len(request.nvme_disks)],
                image=image.image_id,
            )
        )
    return launched


def next_gpu_number(topology: LabTopology, used: Iterable[str] = ()) -> int:
    """The number of the next GPU host's name: gpu-N after the highest there is, or that
    `used` names (the terminated instances': a name is never given twice)."""
    names = [*(h.name for h in topology.hosts), *used]
    numbers = [int(m.group(1)) for name in names if (m := GPU_NAME.fullmatch(name))]
    return max(numbers, default=0) + 1


def az_index_of(topology: LabTopology, address: str) -> int:
    """Which half of the lab subnet, so which of its two EC2 subnets (AZs), holds the address."""
    half = topology.network.num_addresses // 2
    offset = int(ipaddress.IPv4Address(address)) - int(topology.network.network_address)
    return offset // half


def _free_address(topology: LabTopology, az_index: int, taken: set[str]) -> str:
    """The lowest free address of the AZ's half of the subnet, from where `lab up` starts."""
    half = topology.network.num_addresses // 2
    first = topology.network.network_address + az_index * half + 10
    for offset in range(half - 11):
        candidate = str(ipaddress.IPv4Address(int(first) + offset))
        if candidate not in taken:
            return candidate
    raise LabError(f"the lab's subnet {topology.subnet} has no free address; nothing launched")
