"""capacity_group against a real moto server: a pool's group created with its on-demand base
and spot share, unchanged on a second run, shown and left alone in check mode."""

import pytest
from ansible_run import run_module
from moto_region import aws, subnets_in

from gpufleet.lab.ec2 import CREDENTIALS

REGION = "us-east-1"


@pytest.fixture
def pool_network(moto):
    return network_and_template(moto)


def network_and_template(moto) -> list[str]:
    """Two subnets in two zones and a launch template, as capacity.yml leaves them."""
    subnets = subnets_in(moto, "10.40.0.0/16", ["us-east-1a", "us-east-1b"])
    ec2 = aws(moto, "ec2")
    image = sorted(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])[0]
    ec2.create_launch_template(
        LaunchTemplateName="gpufleet-lab-chat", LaunchTemplateData={"ImageId": image}
    )
    return subnets


def group_args(moto, subnets, **changes):
    return {
        "name": "gpufleet-lab-chat",
        "region": REGION,
        "endpoint_url": moto,
        "access_key": CREDENTIALS["aws_access_key_id"],
        "secret_key": CREDENTIALS["aws_secret_access_key"],
        "launch_template": "gpufleet-lab-chat",
        "subnets": subnets,
        "min_size": 1,
        "max_size": 4,
        "on_demand_base": 1,
        "spot_share": 30,
        "instance_types": ["g5.xlarge", "g4dn.xlarge"],
        "tags": {"gpufleet:role": "gpu", "gpufleet:pool": "chat"},
        **changes,
    }


def described(moto):
    return aws(moto, "autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=["gpufleet-lab-chat"]
    )["AutoScalingGroups"]


def test_creates_the_group_with_its_base_and_spot_share_then_changes_nothing(moto, pool_network):
    created = run_module("gpufleet.fleet.capacity_group", group_args(moto, pool_network))
    assert created["changed"] and created["created"], created
    (group,) = described(moto)
    policy = group["MixedInstancesPolicy"]
    assert policy["InstancesDistribution"]["OnDemandBaseCapacity"] == 1
    assert policy["InstancesDistribution"]["OnDemandPercentageAboveBaseCapacity"] == 70
    assert policy["InstancesDistribution"]["SpotAllocationStrategy"] == "capacity-optimized"
    assert [o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]] == [
        "g5.xlarge",
        "g4dn.xlarge",
    ]
    assert group["CapacityRebalance"] is True
    assert sorted(group["VPCZoneIdentifier"].split(",")) == sorted(pool_network)
    assert {t["Key"]: t["PropagateAtLaunch"] for t in group["Tags"]} == {
        "gpufleet:role": True,
        "gpufleet:pool": True,
        "gpufleet:on-demand-base": False,
    }
    again = run_module("gpufleet.fleet.capacity_group", group_args(moto, pool_network))
    assert not again["changed"], again


def test_check_mode_shows_the_change_and_makes_none(moto, pool_network):
    run_module("gpufleet.fleet.capacity_group", group_args(moto, pool_network))
    wider = group_args(moto, pool_network, max_size=6, spot_share=50, tags={"gpufleet:role": "gpu"})
    checked = run_module("gpufleet.fleet.capacity_group", wider, check=True)
    assert checked["changed"] and not checked["created"]
    assert checked["diff"]["before"]["max_size"] == 4
    assert checked["diff"]["after"]["max_size"] == 6
    assert checked["diff"]["after"]["tags"] == {
        "gpufleet:role": "gpu",
        "gpufleet:on-demand-base": "1",
    }
    (group,) = described(moto)
    assert group["MaxSize"] == 4
    run_module("gpufleet.fleet.capacity_group", wider)
    (group,) = described(moto)
    assert group["MaxSize"] == 6
    assert (
        group["MixedInstancesPolicy"]["InstancesDistribution"][
            "OnDemandPercentageAboveBaseCapacity"
        ]
        == 50
    )
    assert sorted(t["Key"] for t in group["Tags"]) == ["gpufleet:on-demand-base", "gpufleet:role"]


def test_keeps_the_on_demand_standing_in_for_spot_above_the_pools_base(moto, pool_network):
    """The LBs' spot fallback raised the base and desired capacity by one: kept; a new base
    for the pool moves the group's by as much, the stand-in still above it."""
    run_module("gpufleet.fleet.capacity_group", group_args(moto, pool_network))
    (group,) = described(moto)
    policy = group["MixedInstancesPolicy"]
    policy["InstancesDistribution"]["OnDemandBaseCapacity"] = 2
    policy["LaunchTemplate"]["LaunchTemplateSpecification"].pop("LaunchTemplateId")
    aws(moto, "autoscaling").update_auto_scaling_group(
        AutoScalingGroupName="gpufleet-lab-chat", DesiredCapacity=2, MixedInstancesPolicy=policy
    )
    kept = run_module("gpufleet.fleet.capacity_group", group_args(moto, pool_network))
    assert not kept["changed"], kept
    assert kept["group"]["on_demand_base"] == 2 and kept["group"]["desired_capacity"] == 2
    raised = run_module(
        "gpufleet.fleet.capacity_group", group_args(moto, pool_network, on_demand_base=2)
    )
    assert raised["changed"] and raised["group"]["on_demand_base"] == 3
    distribution = described(moto)[0]["MixedInstancesPolicy"]["InstancesDistribution"]
    assert distribution["OnDemandBaseCapacity"] == 3


def test_keeps_the_desired_capacity_a_scaler_set_moving_it_only_into_range(moto, pool_network):
    run_module("gpufleet.fleet.capacity_group", group_args(moto, pool_network))
    aws(moto, "autoscaling").set_desired_capacity(
        AutoScalingGroupName="gpufleet-lab-chat", DesiredCapacity=3
    )
    kept = run_module("gpufleet.fleet.capacity_group", group_args(moto, pool_network))
    assert not kept["changed"] and kept["group"]["desired_capacity"] == 3
    narrower = run_module(
        "gpufleet.fleet.capacity_group", group_args(moto, pool_network, max_size=2)
    )
    assert narrower["changed"] and narrower["group"]["desired_capacity"] == 2
    assert described(moto)[0]["DesiredCapacity"] == 2


def test_refuses_an_impossible_group_naming_the_option(moto, pool_network):
    refused = run_module(
        "gpufleet.fleet.capacity_group",
        group_args(moto, pool_network, min_size=3, max_size=2, on_demand_base=5),
    )
    assert refused.get("failed"), refused
    assert "max_size (2) must be at least min_size (3)" in refused["msg"]
    assert "on_demand_base (5)" in refused["msg"]
    assert described(moto) == []


def drain_hooks(moto) -> list[tuple[str, str, int, str]]:
    hooks = aws(moto, "autoscaling").describe_lifecycle_hooks(
        AutoScalingGroupName="gpufleet-lab-chat"
    )["LifecycleHooks"]
    return [
        (
            h["LifecycleHookName"],
            h["LifecycleTransition"],
            h["HeartbeatTimeout"],
            h["DefaultResult"],
        )
        for h in hooks
    ]


def test_keeps_a_termination_hook_that_holds_instances_while_they_drain(moto, pool_network):
    hooked = group_args(moto, pool_network, drain_hook_timeout=300)
    created = run_module("gpufleet.fleet.capacity_group", hooked)
    assert created["group"]["drain_hook_timeout"] == 300, created
    assert drain_hooks(moto) == [
        ("gpufleet-drain", "autoscaling:EC2_INSTANCE_TERMINATING", 300, "CONTINUE")
    ]
    assert not run_module("gpufleet.fleet.capacity_group", hooked)["changed"]
    longer = run_module("gpufleet.fleet.capacity_group", {**hooked, "drain_hook_timeout": 600})
    assert longer["changed"] and drain_hooks(moto)[0][2] == 600, longer
    gone = run_module("gpufleet.fleet.capacity_group", group_args(moto, pool_network))
    assert gone["changed"] and drain_hooks(moto) == [], gone
    refused = run_module(
        "gpufleet.fleet.capacity_group", group_args(moto, pool_network, drain_hook_timeout=10)
    )
    assert "drain_hook_timeout (10) must be 0 (no hook) or 30 to 7200 seconds" in refused["msg"]
