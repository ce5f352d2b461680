"""capacity_group: a pool's Auto Scaling group, an on-demand base with spot above it."""

from __future__ import annotations

DOCUMENTATION = r"""
module: capacity_group
short_description: A GPU pool's Auto Scaling group with an on-demand base and spot above it
description:
  - Creates or updates an EC2 Auto Scaling group whose mixed instances policy keeps
    O(on_demand_base) instances on demand and puts O(spot_share) percent of the capacity
    above that base on spot, over the instance types in O(instance_types), in the subnets
    O(subnets), with capacity rebalancing as O(capacity_rebalance) says.
  - Compares the group with what it should be and changes nothing, and reports no change,
    when they match. In check mode it says what it would change; with C(--diff) it shows it.
  - The desired capacity is the scaler's to change once the group exists. O(desired_capacity)
    is set when the group is created; afterwards the current one is kept, moved only into
    the new O(min_size) to O(max_size) range when it falls outside it.
  - Written for gpufleet because amazon.aws.autoscaling_group has no capacity rebalancing
    (amazon.aws issue 1711) and reports any existing group as changed in check mode, with
    no diff.
author: gpufleet maintainers (!UNKNOWN)
version_added: "0.1.0"
options:
  name:
    description: The group's name.
    type: str
    required: true
  launch_template:
    description: The launch template the group launches from, by name.
    type: str
    required: true
  launch_template_version:
    description: The template's version; C($Latest) launches each new instance from the newest.
    type: str
    default: $Latest
  subnets:
    description: The subnet ids the group launches into, one or more per availability zone.
    type: list
    elements: str
    required: true
  min_size:
    description: The fewest instances the group keeps.
    type: int
    required: true
  max_size:
    description: The most instances the group may run.
    type: int
    required: true
  desired_capacity:
    description: The instances the group starts with; defaults to O(min_size).
    type: int
  on_demand_base:
    description: Instances always launched on demand, before any spot (the reserved base).
    type: int
    default: 0
  spot_share:
    description: Percent of the capacity above O(on_demand_base) launched on spot.
    type: int
    default: 30
  spot_allocation_strategy:
    description: How EC2 picks spot pools; C(capacity-optimized) picks the deepest.
    type: str
    default: capacity-optimized
    choices:
      - capacity-optimized
      - price-capacity-optimized
      - lowest-price
      - capacity-optimized-prioritized
  instance_types:
    description:
      - The instance types the group may launch, the on-demand ones in this order of
        preference.
    type: list
    elements: str
    required: true
  capacity_rebalance:
    description:
      - Launch a replacement when EC2 says a spot instance is at elevated risk of
        interruption, before the interruption notice.
    type: bool
    default: true
  health_check_grace_period:
    description: Seconds after launch before the group acts on an instance's health.
    type: int
    default: 300
  drain_hook_timeout:
    description:
      - Seconds an instance the group terminates by itself (scale-in, rebalancing) is held
        in the termination lifecycle hook C(gpufleet-drain) so its streams can end; 0 keeps
        no hook.
      - The instance's fleet agent drains it on its target lifecycle state; gpufleet-scaler
        completes the lifecycle action once no LB has a stream on it, and without the scaler
        the hook's timeout ends the wait (its default result is C(CONTINUE)).
    type: int
    default: 0
  tags:
    description:
      - Tags on the group, propagated to the instances it launches. Other tags the group
        has are removed.
      - The group also carries C(gpufleet:on-demand-base), the pool's own base. The LBs' spot
        fallback (gpufleet-lb-membership) raises the group's base and desired capacity above
        it while spot is missing; the module keeps that margin.
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
notes:
  - Needs autoscaling:DescribeAutoScalingGroups, CreateAutoScalingGroup,
    UpdateAutoScalingGroup, CreateOrUpdateTags, DeleteTags, DescribeLifecycleHooks,
    PutLifecycleHook and DeleteLifecycleHook, and to pass the launch template's instance
    profile (docs/iam/capacity-policy.json).
"""

EXAMPLES = r"""
- name: Keep the chat pool at 2 to 6 hosts, 2 on demand, 30 % spot above them
  gpufleet.fleet.capacity_group:
    name: gpufleet-prod-chat
    region: us-east-1
    launch_template: gpufleet-prod-chat
    subnets: [subnet-0a1b2c3d, subnet-4e5f6a7b]
    min_size: 2
    max_size: 6
    on_demand_base: 2
    spot_share: 30
    instance_types: [g5.xlarge, g4dn.xlarge]
    # Streams on an instance the group terminates get up to 5 minutes to end.
    drain_hook_timeout: 300
    tags:
      gpufleet:role: gpu
      gpufleet:pool: chat
"""

RETURN = r"""
group:
  description: The group's settings after the change (as they would be, in check mode).
  returned: always
  type: dict
  contains:
    min_size:
      description: The fewest instances.
      type: int
    max_size:
      description: The most instances.
      type: int
    desired_capacity:
      description: The instances the group aims for.
      type: int
    subnets:
      description: The group's subnets, sorted.
      type: list
      elements: str
    instance_types:
      description: The instance types, in order of preference.
      type: list
      elements: str
    on_demand_base:
      description: Instances on demand before any spot.
      type: int
    spot_share:
      description: Percent of the capacity above the base on spot.
      type: int
    drain_hook_timeout:
      description: Seconds the termination lifecycle hook holds an instance; 0, no hook.
      type: int
  sample:
    name: gpufleet-prod-chat
    min_size: 2
    max_size: 6
    desired_capacity: 2
    on_demand_base: 2
    spot_share: 30
created:
  description: Whether the group was (or would be) created.
  returned: always
  type: bool
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

# The termination lifecycle hook the scaler completes (roles/scaler) once no LB has a stream.
DRAIN_HOOK = "gpufleet-drain"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"


def _view(params: dict[str, Any], desired: int, fallback: int) -> dict[str, Any]:
    """The group's settings as compared and shown: one flat, readable form. The LBs' spot
    fallback keeps `fallback` on-demand instances above the pool's base (BASE_TAG)."""
    return {
        "name": params["name"],
        "launch_template": params["launch_template"],
        "launch_template_version": params["launch_template_version"],
        "subnets": sorted(params["subnets"]),
        "min_size": params["min_size"],
        "max_size": params["max_size"],
        "desired_capacity": desired,
        "on_demand_base": params["on_demand_base"] + fallback,
        "spot_share": params["spot_share"],
        "spot_allocation_strategy": params["spot_allocation_strategy"],
        "instance_types": list(params["instance_types"]),
        "capacity_rebalance": params["capacity_rebalance"],
        "health_check_grace_period": params["health_check_grace_period"],
        "drain_hook_timeout": params["drain_hook_timeout"],
        "tags": {**params["tags"], BASE_TAG: str(params["on_demand_base"])},
    }


def current_view(group: dict[str, Any], hooks: list[dict[str, Any]]) -> dict[str, Any]:
    """An existing group (DescribeAutoScalingGroups) and its lifecycle hooks in the compared
    form."""
    drain_hook = [
        h
        for h in hooks
        if h["LifecycleHookName"] == DRAIN_HOOK and h["LifecycleTransition"] == TERMINATING
    ]
    policy = group.get("MixedInstancesPolicy", {})
    template = policy.get("LaunchTemplate", {})
    spec = template.get("LaunchTemplateSpecification", {})
    distribution = policy.get("InstancesDistribution", {})
    on_demand_base, spot_share = base_and_spot_share(policy)
    subnets = [s for s in group.get("VPCZoneIdentifier", "").split(",") if s]
    return {
        "name": group["AutoScalingGroupName"],
        "launch_template": spec.get("LaunchTemplateName"),
        "launch_template_version": spec.get("Version"),
        "subnets": sorted(subnets),
        "min_size": group["MinSize"],
        "max_size": group["MaxSize"],
        "desired_capacity": group["DesiredCapacity"],
        "on_demand_base": on_demand_base,
        "spot_share": spot_share,
        "spot_allocation_strategy": distribution.get("SpotAllocationStrategy"),
        "instance_types": [o["InstanceType"] for o in template.get("Overrides", [])],
        "capacity_rebalance": group.get("CapacityRebalance", False),
        "health_check_grace_period": group.get("HealthCheckGracePeriod", 0),
        "drain_hook_timeout": drain_hook[0]["HeartbeatTimeout"] if drain_hook else 0,
        "tags": {t["Key"]: t["Value"] for t in group.get("Tags", [])},
    }


def wanted_view(params: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    """What the group should be; the desired capacity and the spot fallback's stand-ins kept,
    the desired capacity only moved into min..max."""
    low, high = params["min_size"], params["max_size"]
    if current is None:
        desired = params["desired_capacity"] if params["desired_capacity"] is not None else low
        fallback = 0
    else:
        desired = current["desired_capacity"]
        base = current["tags"].get(BASE_TAG, "")
        fallback = max(0, current["on_demand_base"] - int(base)) if base.isdigit() else 0
    return _view(params, min(max(desired, low), high), fallback)


def group_settings(view: dict[str, Any]) -> dict[str, Any]:
    """The view as the API's create and update calls take it."""
    return {
        "AutoScalingGroupName": view["name"],
        "MinSize": view["min_size"],
        "MaxSize": view["max_size"],
        "DesiredCapacity": view["desired_capacity"],
        "VPCZoneIdentifier": ",".join(view["subnets"]),
        "CapacityRebalance": view["capacity_rebalance"],
        "HealthCheckGracePeriod": view["health_check_grace_period"],
        "MixedInstancesPolicy": {
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {
                    "LaunchTemplateName": view["launch_template"],
                    "Version": view["launch_template_version"],
                },
                "Overrides": [{"InstanceType": t} for t in view["instance_types"]],
            },
            "InstancesDistribution": {
                "OnDemandAllocationStrategy": "prioritized",
                "OnDemandBaseCapacity": view["on_demand_base"],
                "OnDemandPercentageAboveBaseCapacity": 100 - view["spot_share"],
                "SpotAllocationStrategy": view["spot_allocation_strategy"],
            },
        },
    }


def tag_list(name: str, tags: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "ResourceId": name,
            "ResourceType": "auto-scaling-group",
            "Key": key,
            "Value": value,
            # The pool's base is the group's own; its instances carry the fleet's tags.
            "PropagateAtLaunch": key != BASE_TAG,
        }
        for key, value in sorted(tags.items())
    ]


def input_problems(params: dict[str, Any]) -> list[str]:
    """What makes the wanted group impossible, one sentence each, naming the option."""
    low, high = params["min_size"], params["max_size"]
    problems = []
    if low < 0 or high < low:
        problems.append(f"max_size ({high}) must be at least min_size ({low}), which is 0 or more")
    desired = params["desired_capacity"]
    if desired is not None and not low <= desired <= high:
        problems.append(
            f"desired_capacity ({desired}) is outside min_size {low} to max_size {high}"
        )
    if not 0 <= params["on_demand_base"] <= high:
        problems.append(
            f"on_demand_base ({params['on_demand_base']}) must be 0 to max_size ({high})"
        )
    if params["drain_hook_timeout"] and not 30 <= params["drain_hook_timeout"] <= 7200:
        problems.append(
            f"drain_hook_timeout ({params['drain_hook_timeout']}) must be 0 (no hook) or "
            "30 to 7200 seconds, the heartbeat timeouts EC2 Auto Scaling takes"
        )
    if not 0 <= params["spot_share"] <= 100:
        problems.append(f"spot_share ({params['spot_share']}) must be a percentage, 0 to 100")
    for key in ("subnets", "instance_types"):
        if not params[key]:
            problems.append(f"{key} must name at least one")
    return problems


def apply(client: Any, wanted: dict[str, Any], current: dict[str, Any] | None) -> None:
    settings = group_settings(wanted)
    if current is None:
        client.create_auto_scaling_group(**settings, Tags=tag_list(wanted["name"], wanted["tags"]))
    else:
        update(client, settings, wanted, current)
    timeout = wanted["drain_hook_timeout"]
    if timeout != (current or {}).get("drain_hook_timeout", 0):
        if timeout:
            client.put_lifecycle_hook(
                LifecycleHookName=DRAIN_HOOK,
                AutoScalingGroupName=wanted["name"],
                LifecycleTransition=TERMINATING,
                HeartbeatTimeout=timeout,
                DefaultResult="CONTINUE",
            )
        else:
            client.delete_lifecycle_hook(
                LifecycleHookName=DRAIN_HOOK, AutoScalingGroupName=wanted["name"]
            )


def update(
    client: Any, settings: dict[str, Any], wanted: dict[str, Any], current: dict[str, Any]
) -> None:
    """An existing group's settings and tags brought to what they should be."""
    own = ("tags", "drain_hook_timeout")
    if {k: v for k, v in wanted.items() if k not in own} != {
        k: v for k, v in current.items() if k not in own
    }:
        client.update_auto_scaling_group(**settings)
    changed_tags = {k: v for k, v in wanted["tags"].items() if current["tags"].get(k) != v}
    if changed_tags:
        client.create_or_update_tags(Tags=tag_list(wanted["name"], changed_tags))
    gone = {k: current["tags"][k] for k in current["tags"] if k not in wanted["tags"]}
    if gone:
        client.delete_tags(Tags=tag_list(wanted["name"], gone))


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "launch_template": {"type": "str", "required": True},
            "launch_template_version": {"type": "str", "default": "$Latest"},
            "subnets": {"type": "list", "elements": "str", "required": True},
            "min_size": {"type": "int", "required": True},
            "max_size": {"type": "int", "required": True},
            "desired_capacity": {"type": "int"},
            "on_demand_base": {"type": "int", "default": 0},
            "spot_share": {"type": "int", "default": 30},
            "spot_allocation_strategy": {
                "type": "str",
                "default": "capacity-optimized",
                "choices": [
                    "capacity-optimized",
                    "price-capacity-optimized",
                    "lowest-price",
                    "capacity-optimized-prioritized",
                ],
            },
            "instance_types": {"type": "list", "elements": "str", "required": True},
            "capacity_rebalance": {"type": "bool", "default": True},
            "health_check_grace_period": {"type": "int", "default": 300},
            "drain_hook_timeout": {"type": "int", "default": 0},
            "tags": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    problems = input_problems(module.params)
    if problems:
        module.fail_json(msg=f"capacity_group {module.params['name']}: " + "; ".join(problems))
    client = module.client("autoscaling")
    name = module.params["name"]
    try:
        found = client.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
        groups = found["AutoScalingGroups"]
        current = None
        if groups:
            hooks = client.describe_lifecycle_hooks(AutoScalingGroupName=name)["LifecycleHooks"]
            current = current_view(groups[0], hooks)
        wanted = wanted_view(module.params, current)
        changed = wanted != current
        if changed and not module.check_mode:
            apply(client, wanted, current)
    except (BotoCoreError, ClientError) as exc:
        module.fail_json_aws(exc, msg=f"capacity_group {name}: the Auto Scaling API refused")
    module.exit_json(
        changed=changed,
        created=current is None,
        group=wanted,
        diff={
            "before": current or {},
            "after": wanted,
            "before_header": f"Auto Scaling group {name}",
            "after_header": f"Auto Scaling group {name}",
        },
    )


if __name__ == "__main__":
    main()
