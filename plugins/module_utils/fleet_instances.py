"""The fleet's instances as the EC2 and Auto Scaling APIs describe them, for the programs
that run beside HAProxy (gpufleet-lb-membership, gpufleet-scaler): an environment's running
instances of a gpufleet role, and its pool groups with their members.

Standard library only (the clients are boto3's, passed in): installed beside the programs
as gpufleet_fleet_instances.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TAGS = {
    "role": "gpufleet:role",
    "env": "gpufleet:env",
    "pool": "gpufleet:pool",
    "model": "gpufleet:model",
    "alias": "gpufleet:alias",
    "group": "aws:autoscaling:groupName",
}
# Lifecycle states of a group's instances on their way out.
LEAVING_STATES = ("Terminat", "Detach")


def running(ec2: Any, role: str, env: str) -> list[dict[str, Any]]:
    """The environment's running instances of a gpufleet role, as EC2 describes them."""
    filters = [
        {"Name": f"tag:{TAGS['role']}", "Values": [role]},
        {"Name": f"tag:{TAGS['env']}", "Values": [env]},
        {"Name": "instance-state-name", "Values": ["running"]},
    ]
    pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


@dataclass(frozen=True)
class Member:
    """A pool group's instance, as EC2 describes it."""

    instance_id: str
    address: str
    lifecycle: str
    launched: str
    tags: dict[str, str]
    instance_type: str = ""


def pool_groups(autoscaling: Any, env: str, marker: str) -> list[dict[str, Any]]:
    """The environment's pool groups that capacity.yml keeps (they carry the marker tag, the
    spot fallback's BASE_TAG), each with its tags as a dict under "tags"."""
    pages = autoscaling.get_paginator("describe_auto_scaling_groups").paginate()
    found = []
    for page in pages:
        for group in page["AutoScalingGroups"]:
            tags = {t["Key"]: t["Value"] for t in group.get("Tags", [])}
            if tags.get(TAGS["env"]) == env and marker in tags:
                found.append(group | {"tags": tags})
    return found


def group_members(
    ec2: Any, groups: list[dict[str, Any]], states: tuple[str, ...] = ()
) -> dict[str, Member]:
    """The groups' instances by id: those in the given lifecycle states, or by default
    those not on their way out."""
    ids = [
        i["InstanceId"]
        for g in groups
        for i in g["Instances"]
        if (
            i["LifecycleState"] in states
            if states
            else not i["LifecycleState"].startswith(LEAVING_STATES)
        )
    ]
    found: dict[str, Member] = {}
    if not ids:
        return found
    for page in ec2.get_paginator("describe_instances").paginate(InstanceIds=ids):
        for reservation in page["Reservations"]:
            for i in reservation["Instances"]:
                found[i["InstanceId"]] = Member(
                    i["InstanceId"],
                    i.get("PrivateIpAddress", ""),
                    i.get("InstanceLifecycle", "on-demand"),
                    str(i.get("LaunchTime", "")),
                    {t["Key"]: t["Value"] for t in i.get("Tags", [])},
                    i.get("InstanceType", ""),
                )
    return found
