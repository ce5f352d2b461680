"""What EC2 does with the instances the lab's EC2 API (moto) only records, done with lab hosts.

moto keeps Auto Scaling groups and launches their instances, as records. This keeper, a lab
daemon that `gpufleet lab up` starts, makes those records real every 2 seconds:

- an instance a group launched becomes a lab host booted from the instance's image (a lab
  image, `lab images`) at the private address EC2 gave it, with the tags its launch template
  gave it: a `lab launch` host whose address EC2 chose, named gpu-N and tagged so;
- a launched host whose instance is terminated is powered off and forgotten, so its address
  is free for the next instance;
- a spot interruption notice (`lab spot-notice`) on a group's instance ends as EC2 ends it:
  the instance is reclaimed once the notice's two minutes, divided by TIME_FACTOR, are over,
  and its group launches a replacement (moto's terminate-in-group, without a decrement,
  stands for the group's health check finding the instance gone);
- an instance marked Unhealthy in its group (SetInstanceHealth: the LB membership service
  does it) is terminated and replaced as the group does, once the group's health check grace
  period since its launch is over (the mark asks for it to be respected) and unless the group's
  ReplaceUnhealthy process is suspended; moto's groups only record the mark.

The hosts of `lab up` and `lab launch` belong to no group and are never reclaimed: the tests
give them notices to watch a drain.

    python -m gpufleet.lab.instance_keeper STATE_DIR CACHE_DIR
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpufleet import tags
from gpufleet.lab import LabError, ec2, lab
from gpufleet.lab.launch import az_index_of, next_gpu_number
from gpufleet.lab.standins import imds
from gpufleet.lab.topology import LabHost, LabPaths, LabTopology

# The lab's clock for spot interruptions: EC2's two minutes of notice become 15 s.
TIME_FACTOR = 8
INTERVAL_SECONDS = 2.0
LIVE_STATES = ("pending", "running")
# Every type of the capacity role's sizing table has one instance-store (NVMe) disk.
INSTANCE_STORE_DISKS = 1


def say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def notice_seconds() -> float:
    return imds.SPOT_WARNING.total_seconds() / TIME_FACTOR


def keep(paths: LabPaths) -> None:
    """Every INTERVAL_SECONDS, make the API's instances and the lab's hosts agree."""
    refused: set[str] = set()
    failing = ""
    clients: dict[str, Any] = {}
    lab.keeper_ready(paths).touch()
    while True:
        try:
            with lab.topology_lock(paths):
                topology = lab.load(paths)
                if topology is not None:
                    if not clients:
                        clients = {s: ec2.client(topology, s) for s in ("ec2", "autoscaling")}
                    keep_once(paths, topology, clients, refused)
            if failing:
                say("the lab's EC2 API answers again")
            failing = ""
        except Exception as exc:  # the keeper outlives any one failure, and says it once
            if str(exc) != failing:
                say(f"could not keep the instances ({type(exc).__name__}): {exc}")
            failing = str(exc)
        time.sleep(INTERVAL_SECONDS)


def keep_once(
    paths: LabPaths, topology: LabTopology, clients: dict[str, Any], refused: set[str]
) -> None:
    members = _group_members(clients["autoscaling"])
    instances = _instances(clients["ec2"]) if members or _launched(topology) else []
    by_host = {i["tags"].get(ec2.LAB_HOST_TAG): i for i in instances}
    for host in _launched(topology):
        instance = by_host.get(host.name)
        if instance is None or instance["State"]["Name"] not in LIVE_STATES:
            lab.retire(paths, host.name)
            say(f"{host.name} at {host.address} powered off: its instance is terminated")
    for instance in instances:
        name = instance["tags"].get(ec2.LAB_HOST_TAG)
        member = members.get(instance["InstanceId"])
        if not name or member is None or instance["State"]["Name"] not in LIVE_STATES:
            continue
        if notice_is_over(paths, instance):
            why = "reclaimed at the end of its spot notice"
        elif replaced_as_unhealthy(instance, member):
            why = "marked Unhealthy in its group, replaced"
        else:
            continue
        clients["autoscaling"].terminate_instance_in_auto_scaling_group(
            InstanceId=instance["InstanceId"], ShouldDecrementDesiredCapacity=False
        )
        say(f"{name} ({instance['InstanceId']}) {why}")
    for instance in instances:
        wanted = instance["InstanceId"] in members and instance["State"]["Name"] in LIVE_STATES
        if not wanted or ec2.LAB_HOST_TAG in instance["tags"]:
            continue
        if instance["InstanceId"] in refused:
            continue
        try:
            used = [i["tags"].get(tags.NAME, "") for i in instances]
            host = host_for(lab.load(paths), instance, used)
            lab.adopt(paths, host, instance["InstanceId"])
        except LabError as exc:
            refused.add(instance["InstanceId"])
            say(f"{instance['InstanceId']} gets no lab host: {exc}")
            continue
        say(
            f"{host.name} at {host.address} booted from {host.image} for "
            f"{instance['InstanceId']} of group {members[instance['InstanceId']].group}"
        )


def _launched(topology: LabTopology) -> list[LabHost]:
    """The hosts launched from an image (`lab launch`, or the keeper's): instances may end."""
    return [h for h in topology.hosts if h.image]


def host_for(
    topology: LabTopology, instance: dict[str, Any], used_names: Iterable[str] = ()
) -> LabHost:
    """The lab host that stands for an instance: its address, image, type and tags, and a
    name no host or instance had."""
    found = instance["tags"]
    return LabHost(
        name=f"gpu-{next_gpu_number(topology, used_names)}",
        role=found.get(tags.ROLE, "gpu"),
        address=instance["PrivateIpAddress"],
        az_index=az_index_of(topology, instance["PrivateIpAddress"]),
        instance_type=instance["InstanceType"],
        lifecycle=instance.get("InstanceLifecycle", "on-demand"),
        pool=found.get(tags.POOL, ""),
        model=found.get(tags.MODEL, ""),
        alias=found.get(tags.ALIAS, ""),
        nvme_disks=INSTANCE_STORE_DISKS,
        image=instance["ImageId"],
    )


def _instances(ec2_client: Any) -> list[dict[str, Any]]:
    pages = ec2_client.get_paginator("describe_instances").paginate()
    found = []
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                instance["tags"] = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                found.append(instance)
    return found


@dataclass(frozen=True)
class Member:
    """An instance's place in its Auto Scaling group."""

    group: str
    health: str
    # The group's health check grace period, in seconds.
    grace: int = 0
    # Whether the group replaces Unhealthy instances (its ReplaceUnhealthy process not suspended).
    replaces_unhealthy: bool = True


def _group_members(autoscaling: Any) -> dict[str, Member]:
    """Each instance in an Auto Scaling group: its group, its health there, the group's grace
    period, and whether the group replaces Unhealthy instances."""
    pages = autoscaling.get_paginator("describe_auto_scaling_groups").paginate()
    return {
        i["InstanceId"]: Member(
            g["AutoScalingGroupName"],
            i["HealthStatus"],
            int(g.get("HealthCheckGracePeriod", 0)),
            "ReplaceUnhealthy" not in {p["ProcessName"] for p in g.get("SuspendedProcesses", [])},
        )
        for page in pages
        for g in page["AutoScalingGroups"]
        for i in g["Instances"]
    }


def replaced_as_unhealthy(instance: dict[str, Any], member: Member) -> bool:
    """Whether the group replaces the instance now: marked Unhealthy, past the grace period,
    and the group's ReplaceUnhealthy process not suspended."""
    unhealthy = member.health == "Unhealthy" and member.replaces_unhealthy
    return unhealthy and past_grace(instance, member)


def past_grace(instance: dict[str, Any], member: Member) -> bool:
    """Whether the instance's group's grace period since its launch is over."""
    launched = instance["LaunchTime"].timestamp()
    return time.time() - launched >= member.grace


def notice_is_over(paths: LabPaths, instance: dict[str, Any]) -> bool:
    notice = imds.notice_path(paths.imds_dir / "notices", instance["PrivateIpAddress"], "spot")
    try:
        given = notice.stat().st_mtime
    except FileNotFoundError:
        return False
    return time.time() - given >= notice_seconds()


if __name__ == "__main__":
    keep(LabPaths(state=Path(sys.argv[1]), cache=Path(sys.argv[2])))
