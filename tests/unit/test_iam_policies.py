"""The IAM policies gpufleet ships (docs/iam/) against the AWS calls its code makes: every
action names a real operation (botocore's service models), every call a tool makes is allowed
by that tool's policy, and nothing more than describe is given to the inventory. The launch
template settings are checked against EC2's own request shape."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import botocore.session
import pytest
from botocore.validate import ParamValidator

REPO = Path(__file__).resolve().parents[2]
IAM = REPO / "docs" / "iam"
SERVICES = ("ec2", "ssm", "kms", "sts", "autoscaling", "iam")
SNAKE = re.compile(r"\b[a-z]+(?:_[a-z0-9]+)+\b")
# amazon.aws.ec2_tag, as model_swap uses it (purge_tags false): its module_utils read the
# instance's tags (describe_tags) and add the new one (create_tags).
EC2_TAG_MODULE_CALLS = {"ec2:DescribeTags", "ec2:CreateTags"}
# IAM actions that are permissions, not operations: KMS's ReEncrypt needs both; PassRole is
# checked when a launch hands a role to an instance.
PERMISSION_ONLY = {"kms:ReEncryptFrom", "kms:ReEncryptTo", "iam:PassRole"}


@cache
def operations() -> dict[str, str]:
    """snake_case operation -> IAM action, for the services gpufleet calls."""
    session = botocore.session.get_session()
    found = {}
    for service in SERVICES:
        model = session.get_service_model(service)
        for name in model.operation_names:
            found.setdefault(botocore.xform_name(name), f"{service}:{name}")
    return found


def allowed(policy: str) -> set[str]:
    document = json.loads((IAM / policy).read_text())
    assert document["Version"] == "2012-10-17"
    return {
        action
        for statement in document["Statement"]
        if statement["Effect"] == "Allow"
        for action in statement["Action"]
    }


def calls_of(service: str, source: str) -> set[str]:
    """The operations of one service a Python source names (its client is that service's)."""
    model = botocore.session.get_session().get_service_model(service)
    names = {botocore.xform_name(name): name for name in model.operation_names}
    found = SNAKE.findall((REPO / source).read_text())
    return {f"{service}:{names[name]}" for name in found if name in names}


def calls_in(*sources: str) -> set[str]:
    """The AWS operations a Python source names (client methods, paginators)."""
    text = "\n".join((REPO / source).read_text() for source in sources)
    return {operations()[name] for name in SNAKE.findall(text) if name in operations()}


def source(module) -> str:
    """A module's file, relative to the repository, as calls_in reads it."""
    return str(Path(module.__file__).relative_to(REPO))


@pytest.mark.parametrize("policy", sorted(p.name for p in IAM.glob("*-policy.json")))
def test_every_action_is_a_real_operation(policy):
    session = botocore.session.get_session()
    real = PERMISSION_ONLY | {
        f"{service}:{name}"
        for service in SERVICES
        for name in session.get_service_model(service).operation_names
    }
    unknown = {a for a in allowed(policy) if a.split(":")[0] in SERVICES and a not in real}
    assert unknown == set(), f"{policy}: no such operation: {sorted(unknown)}"


def test_the_inventory_is_allowed_its_calls_and_describes_only():
    from ansible_collections.amazon.aws.plugins.plugin_utils import inventory as aws_base

    # Its base, amazon.aws's, lists the regions when none are given.
    sources = ("plugins/inventory/gpufleet_ec2.py", aws_base.__file__)
    calls = calls_in(*sources) - {"sts:AssumeRole"}
    assert calls == {"ec2:DescribeInstances", "ec2:DescribeImages", "ec2:DescribeRegions"}
    assert calls == allowed("inventory-policy.json")


def test_the_image_tools_are_allowed_their_calls():
    calls = calls_in("src/gpufleet/ami.py", "src/gpufleet/bake.py")
    assert calls, "no AWS call found: the scan of the sources is broken"
    assert calls - allowed("bake-policy.json") == set()


def test_the_model_swap_may_only_add_the_model_tag_to_gpu_instances():
    assert allowed("model-swap-policy.json") == EC2_TAG_MODULE_CALLS
    serve = (REPO / "roles/model_swap/tasks/serve.yml").read_text()
    assert "amazon.aws.ec2_tag:" in serve and "purge_tags" not in serve
    statement = next(
        s
        for s in json.loads((IAM / "model-swap-policy.json").read_text())["Statement"]
        if "ec2:CreateTags" in s["Action"]
    )
    assert statement["Resource"] == "arn:aws:ec2:*:*:instance/*"
    assert statement["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"] == ["gpufleet:model"]


def test_the_launch_template_requires_imdsv2_and_encrypted_volumes():
    data = json.loads((IAM / "launch-template.json").read_text())
    model = botocore.session.get_session().get_service_model("ec2")
    shape = model.operation_model("CreateLaunchTemplate").input_shape
    report = ParamValidator().validate(
        {"LaunchTemplateName": "gpufleet-gpu", "LaunchTemplateData": data}, shape
    )
    assert not report.has_errors(), report.generate_report()
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert all(m["Ebs"]["Encrypted"] for m in data["BlockDeviceMappings"])


def test_capacity_is_allowed_its_calls_and_nothing_to_delete():
    from ansible_collections.amazon.aws.plugins.lookup import ssm_parameter
    from ansible_collections.amazon.aws.plugins.modules import (
        ec2_ami_info,
        ec2_launch_template,
        ec2_vpc_subnet_info,
    )

    group = calls_of("autoscaling", "plugins/modules/capacity_group.py")
    assert "autoscaling:DeleteTags" in group, "no group call found: the scan is broken"
    # capacity.yml's amazon.aws tasks: the template's versions (never state absent), the
    # subnets, the image (without its attributes) and the parameter (by name, not by path).
    unused = {
        "ec2:DeleteLaunchTemplate",
        "ec2:DeleteLaunchTemplateVersions",
        "ec2:DescribeImageAttribute",
        "ssm:GetParametersByPath",
    }
    amazon = calls_in(
        *map(source, (ec2_launch_template, ec2_vpc_subnet_info, ec2_ami_info, ssm_parameter))
    )
    # A profile by name is found with ListInstanceProfiles; groups pass the hosts' role.
    launching = {"iam:ListInstanceProfiles", "ec2:RunInstances", "ec2:CreateTags", "iam:PassRole"}
    needed = group | (amazon - unused) | launching
    policy = allowed("capacity-policy.json")
    assert needed - policy == set()
    assert policy - needed == {"iam:CreateServiceLinkedRole"}
    # Deletes only its own: tags on the groups and the groups' drain hook.
    own = {"autoscaling:DeleteTags", "autoscaling:DeleteLifecycleHook"}
    assert {a for a in policy if "Delete" in a} == own


def program_calls(*sources: str) -> set[str]:
    """The EC2 and Auto Scaling calls of an LB host's program and the files installed beside it."""
    return {call for s in sources for call in calls_of("ec2", s) | calls_of("autoscaling", s)}


def test_the_lb_membership_service_lists_marks_health_and_keeps_the_spot_fallback_only():
    calls = program_calls(
        "roles/lb_membership/files/gpufleet_lb_membership.py",
        "plugins/module_utils/fleet_instances.py",
    )
    assert calls == {
        "ec2:DescribeInstances",
        "ec2:CreateTags",
        "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:SetInstanceHealth",
        "autoscaling:UpdateAutoScalingGroup",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
    }
    assert allowed("lb-membership-policy.json") == calls


def test_the_scaler_sizes_groups_drains_through_one_tag_and_ends_termination_waits():
    calls = program_calls(
        "roles/scaler/files/gpufleet_scaler.py", "plugins/module_utils/fleet_instances.py"
    )
    # The scan reads names: the program's one delete_tags is EC2's (the drain tag taken back).
    calls -= {"autoscaling:DeleteTags"}
    assert calls == {
        "ec2:DescribeInstances",
        "ec2:CreateTags",
        "ec2:DeleteTags",
        "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:DescribeLifecycleHooks",
        "autoscaling:SetDesiredCapacity",
        "autoscaling:UpdateAutoScalingGroup",
        "autoscaling:CreateOrUpdateTags",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
        "autoscaling:CompleteLifecycleAction",
    }
    assert allowed("scaler-policy.json") == calls
    tagging = next(
        s
        for s in json.loads((IAM / "scaler-policy.json").read_text())["Statement"]
        if "ec2:DeleteTags" in s["Action"]
    )
    assert tagging["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"] == ["gpufleet:drain"]


def test_the_ami_rollout_is_allowed_capacitys_calls_and_those_it_replaces_instances_with():
    from ansible_collections.amazon.aws.plugins.module_utils import autoscaling
    from ansible_collections.amazon.aws.plugins.modules import (
        autoscaling_group_info,
        autoscaling_instance,
        ec2_instance_info,
    )

    # Its own module, and the amazon.aws ones: the group's instances and their images, and a
    # termination in the group (autoscaling_instance reads its instances first); the groups'
    # replacement of Unhealthy instances held while a stopped batch is taken back.
    found = calls_of("autoscaling", "plugins/modules/group_capacity.py") | calls_in(
        *map(source, (autoscaling_group_info, autoscaling_instance, ec2_instance_info, autoscaling))
    )
    rollout = {
        "ec2:DescribeInstances",
        "autoscaling:DescribeAutoScalingInstances",
        "autoscaling:DescribeLifecycleHooks",
        "autoscaling:SetDesiredCapacity",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
        "autoscaling:SuspendProcesses",
        "autoscaling:ResumeProcesses",
    }
    assert rollout <= found, rollout - found
    assert allowed("ami-rollout-policy.json") == allowed("capacity-policy.json") | rollout
