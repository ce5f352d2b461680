"""group_capacity: set a pool group's desired capacity, its own on-demand base, and whether it
replaces instances marked Unhealthy."""

from __future__ import annotations

DOCUMENTATION = r"""
module: group_capacity
short_description: Set a GPU pool's Auto Scaling group's desired capacity and on-demand base
description:
  - Sets the desired capacity of an Auto Scaling group that M(gpufleet.fleet.capacity_group)
    keeps, and optionally the pool's own on-demand base, in one update of the group.
  - Optionally suspends or resumes the group's C(ReplaceUnhealthy) process, so that instances
    a playbook is taking out of service are not replaced by the group while it does.
  - The pool's own base is the group's C(gpufleet:on-demand-base) tag; the group's
    C(OnDemandBaseCapacity) is that base plus the on-demand instances the LBs' spot fallback
    has standing in for spot, which are kept. The tag and the group move together, in the
    order that never shows the fallback more stand-ins than it has.
  - Changes nothing, and reports no change, when the group is as asked. Refuses a desired
    capacity outside the group's minimum and maximum, naming the group.
  - Written for gpufleet because M(amazon.aws.autoscaling_group) rewrites the whole group
    (its launch template and mixed instances policy among it) to change its size.
author: gpufleet maintainers (!UNKNOWN)
version_added: "0.1.0"
options:
  name:
    description: The group's name.
    type: str
    required: true
  desired_capacity:
    description: The instances the group should run; the current number when omitted.
    type: int
  on_demand_base:
    description: The pool's own on-demand base; the current one when omitted.
    type: int
  replace_unhealthy:
    description:
      - Whether the group replaces the instances marked Unhealthy (its C(ReplaceUnhealthy)
        process resumed) or leaves them to the caller (suspended); as it is when omitted.
      - Suspended, an instance marked Unhealthy stays until the caller terminates it.
    type: bool
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - ansible.builtin.action_common_attributes
"""

EXAMPLES = r"""
- name: Launch one more instance on demand in the pool chat
  gpufleet.fleet.group_capacity:
    name: gpufleet-prod-chat
    desired_capacity: 4
    on_demand_base: 3
    region: us-east-1

- name: Give the pool back its own base once the old instance is terminated
  gpufleet.fleet.group_capacity:
    name: gpufleet-prod-chat
    on_demand_base: 2
    region: us-east-1

- name: Keep the group from replacing the instances about to be drained and terminated
  gpufleet.fleet.group_capacity:
    name: gpufleet-prod-chat
    replace_unhealthy: false
    region: us-east-1
"""

RETURN = r"""
group:
  description: The group's sizes after the change (as they would be, in check mode).
  returned: always
  type: dict
  contains:
    name:
      description: The group's name.
      type: str
    min_size:
      description: The fewest instances.
      type: int
    max_size:
      description: The most instances.
      type: int
    desired_capacity:
      description: The instances the group aims for.
      type: int
    on_demand_base:
      description: The pool's own on-demand base (the C(gpufleet:on-demand-base) tag).
      type: int
    fallback:
      description: On-demand instances standing in for spot, above the pool's base.
      type: int
    replace_unhealthy:
      description: Whether the group's C(ReplaceUnhealthy) process runs (is not suspended).
      type: bool
  sample:
    name: gpufleet-prod-chat
    min_size: 2
    max_size: 6
    desired_capacity: 4
    on_demand_base: 3
    fallback: 0
    replace_unhealthy: true
before:
  description: The group's sizes before the change, as RV(group) has them.
  returned: always
  type: dict
"""

from typing import Any

try:
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # AnsibleAWSModule says botocore is missing.
    BotoCoreError = ClientError = Exception

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.gpufleet.fleet.plugins.module_utils.spot_fallback import (
    BASE_TAG,
    base_and_spot_share,
)

REPLACE_UNHEALTHY = "ReplaceUnhealthy"


def sizes(group: dict[str, Any]) -> dict[str, Any]:
    """A described group's sizes, and whether it replaces Unhealthy instances; a group without
    the base tag has no stand-ins."""
    base, _spot_share = base_and_spot_share(group.get("MixedInstancesPolicy") or {})
    tags = {t["Key"]: t["Value"] for t in group.get("Tags", [])}
    own = int(tags.get(BASE_TAG) or base)
    return {
        "min_size": int(group["MinSize"]),
        "max_size": int(group["MaxSize"]),
        "desired_capacity": int(group["DesiredCapacity"]),
        "on_demand_base": own,
        "fallback": max(0, base - own),
        "replace_unhealthy": REPLACE_UNHEALTHY
        not in {p["ProcessName"] for p in group.get("SuspendedProcesses", [])},
    }


def wanted_sizes(current: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    wanted = dict(current)
    for key in ("desired_capacity", "on_demand_base", "replace_unhealthy"):
        if params[key] is not None:
            wanted[key] = params[key]
    return wanted


def problems(name: str, wanted: dict[str, Any]) -> list[str]:
    found = []
    if not wanted["min_size"] <= wanted["desired_capacity"] <= wanted["max_size"]:
        found.append(
            f"desired_capacity {wanted['desired_capacity']} is outside the group {name}'s "
            f"min_size {wanted['min_size']} to max_size {wanted['max_size']}"
        )
    if wanted["on_demand_base"] < 0:
        found.append(f"on_demand_base {wanted['on_demand_base']} is below 0")
    return found


def apply(client: Any, name: str, wanted: dict[str, Any], current: dict[str, Any]) -> None:
    """The ReplaceUnhealthy process first when it is suspended (nothing is replaced from then
    on) and last when it is resumed; the sizes between them."""
    processes = {"AutoScalingGroupName": name, "ScalingProcesses": [REPLACE_UNHEALTHY]}
    if current["replace_unhealthy"] and not wanted["replace_unhealthy"]:
        client.suspend_processes(**processes)
    moved = ("desired_capacity", "on_demand_base")
    if any(wanted[key] != current[key] for key in moved):
        apply_sizes(client, name, wanted, current)
    if wanted["replace_unhealthy"] and not current["replace_unhealthy"]:
        client.resume_processes(**processes)


def apply_sizes(client: Any, name: str, wanted: dict[str, Any], current: dict[str, Any]) -> None:
    """The desired capacity alone through SetDesiredCapacity; with the base, one update of the
    group, the base tag before it when the base rises and after it when it falls, so the spot
    fallback never reads more stand-ins than there are."""
    if wanted["on_demand_base"] == current["on_demand_base"]:
        client.set_desired_capacity(
            AutoScalingGroupName=name,
            DesiredCapacity=wanted["desired_capacity"],
            HonorCooldown=False,
        )
        return
    tag = [
        {
            "ResourceId": name,
            "ResourceType": "auto-scaling-group",
            "Key": BASE_TAG,
            "Value": str(wanted["on_demand_base"]),
            "PropagateAtLaunch": False,
        }
    ]
    rising = wanted["on_demand_base"] > current["on_demand_base"]
    if rising:
        client.create_or_update_tags(Tags=tag)
    base = wanted["on_demand_base"] + wanted["fallback"]
    client.update_auto_scaling_group(
        AutoScalingGroupName=name,
        DesiredCapacity=wanted["desired_capacity"],
        MixedInstancesPolicy={"InstancesDistribution": {"OnDemandBaseCapacity": base}},
    )
    if not rising:
        client.create_or_update_tags(Tags=tag)


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "desired_capacity": {"type": "int"},
            "on_demand_base": {"type": "int"},
            "replace_unhealthy": {"type": "bool"},
        },
        supports_check_mode=True,
    )
    name = module.params["name"]
    client = module.client("autoscaling")
    try:
        groups = client.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
        if not groups["AutoScalingGroups"]:
            module.fail_json(msg=f"group_capacity: the Auto Scaling group {name} does not exist")
        current = sizes(groups["AutoScalingGroups"][0])
        wanted = wanted_sizes(current, module.params)
        found = problems(name, wanted)
        if found:
            module.fail_json(msg="group_capacity: " + "; ".join(found) + ". Nothing was changed.")
        changed = wanted != current
        if changed and not module.check_mode:
            apply(client, name, wanted, current)
    except (BotoCoreError, ClientError) as exc:
        module.fail_json_aws(exc, msg=f"group_capacity {name}: the Auto Scaling API refused")
    module.exit_json(
        changed=changed, group={"name": name, **wanted}, before={"name": name, **current}
    )


if __name__ == "__main__":
    main()
