"""group_capacity against a real moto server: a pool's group, kept by capacity_group, raised
by one on demand and given its base back, the spot fallback's stand-ins kept; its replacement
of Unhealthy instances suspended and resumed; unchanged when as asked; a desired capacity
outside the group refused by name.

The server's groups take an update of the on-demand base alone as EC2's do, as the lab's EC2
API has them take it (gpufleet.lab.ec2_groups); moto's own refuse a policy without its
launch template."""

import pytest
from ansible_run import run_module
from moto_region import aws
from test_capacity_group import described, group_args, network_and_template

from gpufleet.lab.ec2 import CREDENTIALS

# The lab's groups, which take an update of the on-demand base alone as EC2's do.
pytestmark = pytest.mark.usefixtures("groups_as_ec2s")


@pytest.fixture
def pool_network(moto):
    return network_and_template(moto)


def sizes(moto, **asked):
    return {
        "name": "gpufleet-lab-chat",
        "region": "us-east-1",
        "endpoint_url": moto,
        "access_key": CREDENTIALS["aws_access_key_id"],
        "secret_key": CREDENTIALS["aws_secret_access_key"],
        **asked,
    }


def base_and_tag(moto) -> tuple[int, str, int]:
    (group,) = described(moto)
    tags = {t["Key"]: t["Value"] for t in group["Tags"]}
    base = group["MixedInstancesPolicy"]["InstancesDistribution"]["OnDemandBaseCapacity"]
    return base, tags["gpufleet:on-demand-base"], group["DesiredCapacity"]


def test_raises_the_desired_capacity_and_the_pools_own_base_then_gives_the_base_back(
    moto,
    pool_network,
):
    run_module("gpufleet.fleet.capacity_group", group_args(moto, pool_network))
    read = run_module("gpufleet.fleet.group_capacity", sizes(moto))
    assert not read["changed"] and read["group"]["desired_capacity"] == 1, read
    raised = run_module(
        "gpufleet.fleet.group_capacity", sizes(moto, desired_capacity=2, on_demand_base=2)
    )
    assert raised["changed"] and raised["before"]["on_demand_base"] == 1, raised
    assert base_and_tag(moto) == (2, "2", 2)
    again = run_module(
        "gpufleet.fleet.group_capacity", sizes(moto, desired_capacity=2, on_demand_base=2)
    )
    assert not again["changed"], again
    back = run_module("gpufleet.fleet.group_capacity", sizes(moto, on_demand_base=1))
    assert back["changed"] and back["group"]["desired_capacity"] == 2
    assert base_and_tag(moto) == (1, "1", 2)


def test_keeps_the_stand_ins_above_the_pools_base_and_changes_nothing_in_check_mode(
    moto,
    pool_network,
):
    run_module("gpufleet.fleet.capacity_group", group_args(moto, pool_network))
    policy = described(moto)[0]["MixedInstancesPolicy"]
    policy["InstancesDistribution"]["OnDemandBaseCapacity"] = 2
    policy["LaunchTemplate"]["LaunchTemplateSpecification"].pop("LaunchTemplateId")
    aws(moto, "autoscaling").update_auto_scaling_group(
        AutoScalingGroupName="gpufleet-lab-chat", DesiredCapacity=2, MixedInstancesPolicy=policy
    )
    checked = run_module(
        "gpufleet.fleet.group_capacity",
        sizes(moto, desired_capacity=3, on_demand_base=2),
        check=True,
    )
    assert checked["changed"] and checked["group"]["fallback"] == 1
    assert base_and_tag(moto) == (2, "1", 2)
    run_module("gpufleet.fleet.group_capacity", sizes(moto, desired_capacity=3, on_demand_base=2))
    assert base_and_tag(moto) == (3, "2", 3)


def test_suspends_the_replacement_of_unhealthy_instances_then_resumes_it_sizes_untouched(
    moto,
    pool_network,
):
    run_module("gpufleet.fleet.capacity_group", group_args(moto, pool_network))

    def suspended() -> list[str]:
        return [p["ProcessName"] for p in described(moto)[0]["SuspendedProcesses"]]

    held = run_module("gpufleet.fleet.group_capacity", sizes(moto, replace_unhealthy=False))
    assert held["changed"] and held["before"]["replace_unhealthy"], held
    assert suspended() == ["ReplaceUnhealthy"] and base_and_tag(moto) == (1, "1", 1)
    again = run_module("gpufleet.fleet.group_capacity", sizes(moto, replace_unhealthy=False))
    assert not again["changed"], again
    back = run_module(
        "gpufleet.fleet.group_capacity",
        sizes(moto, replace_unhealthy=True, desired_capacity=2),
    )
    assert back["changed"] and back["group"]["replace_unhealthy"], back
    assert suspended() == [] and base_and_tag(moto) == (1, "1", 2)


def test_refuses_a_desired_capacity_outside_the_group_naming_it(moto, pool_network):
    run_module("gpufleet.fleet.capacity_group", group_args(moto, pool_network))
    refused = run_module("gpufleet.fleet.group_capacity", sizes(moto, desired_capacity=5))
    assert refused.get("failed"), refused
    assert refused["msg"] == (
        "group_capacity: desired_capacity 5 is outside the group gpufleet-lab-chat's min_size 1 "
        "to max_size 4. Nothing was changed."
    )
    assert described(moto)[0]["DesiredCapacity"] == 1
    missing = run_module("gpufleet.fleet.group_capacity", {**sizes(moto), "name": "nope"})
    assert missing["msg"] == "group_capacity: the Auto Scaling group nope does not exist"


def test_instances_launch_with_their_templates_metadata_options(moto, pool_network):
    """The lab's groups as EC2's: the scaler's drain tag reaches an agent through the
    instance metadata only where the template allows tags there, as capacity.yml's do."""
    ec2 = aws(moto, "ec2")
    options = {"HttpTokens": "required", "InstanceMetadataTags": "enabled"}
    ec2.create_launch_template_version(
        LaunchTemplateName="gpufleet-lab-chat",
        SourceVersion="1",
        LaunchTemplateData={"MetadataOptions": options},
    )
    run_module("gpufleet.fleet.capacity_group", group_args(moto, pool_network))
    ids = [i["InstanceId"] for i in described(moto)[0]["Instances"]]
    reservations = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    launched = [i["MetadataOptions"] for r in reservations for i in r["Instances"]]
    assert launched and all(
        (o["HttpTokens"], o["InstanceMetadataTags"]) == ("required", "enabled") for o in launched
    ), launched
