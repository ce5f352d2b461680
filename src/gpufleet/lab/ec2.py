"""The lab's EC2 API: a moto server on loopback that describes the lab hosts as instances.

Every instance carries the private IP of its lab host and the tags a gpufleet host
carries in AWS, so the inventory plugin reads the lab exactly as it reads an account.
"""

from __future__ import annotations

import datetime
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from gpufleet import tags
from gpufleet.lab import LabError
from gpufleet.lab.system import python_module, read_pid, start_daemon, stop_daemon, tcp_open
from gpufleet.lab.topology import LabHost, LabTopology
from gpufleet.tags import fleet_tags

LOOPBACK = "127.0.0.1"
LAB_HOST_TAG = "gpufleet:lab-host"
LAB_ENV = "lab"
BAKED_IMAGE_NAME = "gpufleet-gpu-lab"
# moto accepts any credentials; these are the ones its documentation uses.
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def endpoint(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


def client(topology: LabTopology, service: str = "ec2") -> Any:
    """A client of the lab's API: EC2 by default, or another service moto serves there."""
    import boto3

    return boto3.session.Session(**CREDENTIALS, region_name=topology.region).client(
        service, endpoint_url=endpoint(topology.ec2_port)
    )


def server_pid(ec2_dir: Path) -> int | None:
    return read_pid(ec2_dir / "server.pid")


def start_server(ec2_dir: Path, port: int, gateway: str) -> None:
    """Start moto in its own session, on loopback for the controller and on the lab bridge's
    gateway for the hosts (the LBs' membership service); it outlives `lab up`."""
    start_daemon(
        python_module("gpufleet.lab.ec2", str(port), str(ec2_dir), gateway),
        ec2_dir,
        "server",
        ready=lambda: tcp_open(LOOPBACK, port),
        what=f"the local EC2 API on {endpoint(port)}",
    )


def stop_server(ec2_dir: Path) -> None:
    stop_daemon(ec2_dir / "server.pid")


def seed(topology: LabTopology) -> None:
    """Describe every lab host as an instance; instances already there are kept."""
    ec2 = client(topology)
    existing = lab_instances(ec2)
    missing = [h for h in topology.hosts if h.name not in existing]
    if missing:
        subnets = _ensure_subnets(ec2, topology)
        image_id = _base_image(ec2)
        for host in missing:
            _run_instance(ec2, host, subnets[host.az_index], image_id)
    _ensure_baked_image(ec2, topology)


def lab_instances(ec2: Any) -> dict[str, str]:
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": "tag-key", "Values": [LAB_HOST_TAG]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    )
    found = {}
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                found[tags[LAB_HOST_TAG]] = instance["InstanceId"]
    return found


def launch(topology: LabTopology, hosts: list[LabHost]) -> None:
    """Launch hosts as instances of their image (LabHost.image), as `lab launch` does."""
    ec2 = client(topology)
    subnets = _ensure_subnets(ec2, topology)
    for host in hosts:
        _run_instance(ec2, host, subnets[host.az_index], host.image)


def subnet_ids(topology: LabTopology) -> list[str]:
    """The lab VPC's two subnets, one per AZ, in address order (the first AZ's first)."""
    return _ensure_subnets(client(topology), topology)


def mark_lab_host(topology: LabTopology, instance_id: str, name: str) -> None:
    """Name an instance the API launched itself after the lab host that now stands for it."""
    client(topology).create_tags(
        Resources=[instance_id],
        Tags=[{"Key": LAB_HOST_TAG, "Value": name}, {"Key": tags.NAME, "Value": name}],
    )


def _ensure_subnets(ec2: Any, topology: LabTopology) -> list[str]:
    """One VPC over the lab subnet, split into one EC2 subnet per AZ."""
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "cidr", "Values": [topology.subnet]}])["Vpcs"]
    vpc_id = vpcs[0]["VpcId"] if vpcs else ec2.create_vpc(CidrBlock=topology.subnet)["Vpc"]["VpcId"]
    halves = list(topology.network.subnets(prefixlen_diff=1))
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]][:2]
    subnet_ids = []
    for half, zone in zip(halves, zones, strict=True):
        found = ec2.describe_subnets(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "cidr-block", "Values": [str(half)]},
            ]
        )["Subnets"]
        if found:
            subnet_ids.append(found[0]["SubnetId"])
        else:
            created = ec2.create_subnet(VpcId=vpc_id, CidrBlock=str(half), AvailabilityZone=zone)
            subnet_ids.append(created["Subnet"]["SubnetId"])
    return subnet_ids


def _base_image(ec2: Any) -> str:
    images = ec2.describe_images(Owners=["amazon"])["Images"]
    if not images:
        raise LabError("the local EC2 API offers no base image to launch lab instances from")
    return sorted(images, key=lambda image: image["ImageId"])[0]["ImageId"]


def host_tags(host: LabHost) -> dict[str, str]:
    if host.role == "bake":
        # Tagged as Packer tags its build instance (run_tags in packer/sources.pkr.hcl): no
        # gpufleet:env, so no fleet inventory, the lab's included, lists it.
        own = {tags.NAME: f"gpufleet-bake {host.name}", tags.ROLE: "bake"}
    else:
        own = fleet_tags(host.name, host.role, host.pool, LAB_ENV, host.model, host.alias)
    return {**own, LAB_HOST_TAG: host.name}


def _run_instance(ec2: Any, host: LabHost, subnet_id: str, image_id: str) -> None:
    request: dict[str, Any] = {
        "ImageId": image_id,
        "InstanceType": host.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "SubnetId": subnet_id,
        "PrivateIpAddress": host.address,
        "MetadataOptions": {"HttpTokens": "required", "InstanceMetadataTags": "enabled"},
        "TagSpecifications": [
            {
                "ResourceType": "instance",
                "Tags": [{"Key": k, "Value": v} for k, v in host_tags(host).items()],
            }
        ],
    }
    if host.lifecycle == "spot":
        request["InstanceMarketOptions"] = {"MarketType": "spot"}
    ec2.run_instances(**request)


def _ensure_baked_image(ec2: Any, topology: LabTopology) -> None:
    """An AMI shaped like one our Packer bake produces, made from the first GPU host."""
    if ec2.describe_images(Filters=[{"Name": "name", "Values": [BAKED_IMAGE_NAME]}])["Images"]:
        return
    instances = lab_instances(ec2)
    source = next((h.name for h in topology.hosts if h.role == "gpu"), topology.hosts[0].name)
    image = ec2.create_image(
        InstanceId=instances[source],
        Name=BAKED_IMAGE_NAME,
        Description="gpufleet GPU host image (lab)",
    )
    ec2.create_tags(
        Resources=[image["ImageId"]],
        Tags=[
            {"Key": tags.NAME, "Value": BAKED_IMAGE_NAME},
            {"Key": tags.ROLE, "Value": "gpu"},
            {"Key": tags.ENV, "Value": LAB_ENV},
            {"Key": "gpufleet:baked-at", "Value": datetime.datetime.now(datetime.UTC).isoformat()},
        ],
    )


def _serve(port: int, ec2_dir: Path, gateway: str) -> None:
    from moto.server import ThreadedMotoServer

    from gpufleet.lab import ec2_groups

    ec2_groups.install(ec2_dir)

    # One process: moto's backends are the process's, so both addresses see one EC2.
    servers = [
        ThreadedMotoServer(ip_address=address, port=port, verbose=False)
        for address in (LOOPBACK, gateway)
    ]
    for server in servers:
        server.start()

    def shutdown(_signum: int, _frame: FrameType | None) -> None:
        for server in servers:
            server.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    # The second argument, the lab's EC2 state dir, also marks the process as the lab's.
    _serve(int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
