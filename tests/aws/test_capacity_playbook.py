"""playbooks/capacity.yml against a real moto server and the lab's model registry: each pool's
launch template on the published image and its group with an on-demand base and spot above
it; a second run changes nothing; check mode shows the diff; bad pools are refused before any
change, naming the pool and the variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from moto_region import aws, baked_image, subnets_in

from gpufleet.lab.ec2 import CREDENTIALS

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
PARAMETER = "/gpufleet/gpu/ami/latest"


@pytest.fixture
def region(moto):
    """Subnets in two zones and a third beside the first, and a baked GPU image published."""
    subnets = subnets_in(moto, "10.41.0.0/16", ["us-east-1a", "us-east-1b", "us-east-1a"])
    return {"subnets": subnets, "image": publish_image(moto, "gpufleet-gpu-1")}


def publish_image(moto, name):
    """A GPU image as a bake leaves it, published to the parameter."""
    image = baked_image(moto, name)
    aws(moto, "ssm").put_parameter(Name=PARAMETER, Value=image, Type="String", Overwrite=True)
    return image


def pools(region, **chat):
    return {
        "chat": {
            "model": "llama3.1:8b",
            "alias": "chat",
            "subnets": region["subnets"][:2],
            "min": 1,
            "max": 4,
            "on_demand_base": 1,
            "min_azs": 2,
            **chat,
        }
    }


def play(
    moto,
    registry,
    tmp_path,
    capacity_pools,
    *options,
    playbook="playbooks/capacity.yml",
    inventory="localhost,",
):
    extra = {
        "capacity_pools": capacity_pools,
        "capacity_region": REGION,
        "capacity_env": "lab",
        "capacity_registry": registry,
        "capacity_report_dir": str(tmp_path / "reports"),
        "capacity_aws_endpoint_url": moto,
        "capacity_aws_access_key": CREDENTIALS["aws_access_key_id"],
        "capacity_aws_secret_key": CREDENTIALS["aws_secret_access_key"],
        "ansible_python_interpreter": sys.executable,
    }
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            inventory,
            playbook,
            "-e",
            json.dumps(extra),
            *options,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**environment, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "NO_COLOR": "1"},
        timeout=300,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def recap_changed(output: str) -> int:
    recap = output[output.index("PLAY RECAP") :]
    return int(recap.split("changed=")[1].split()[0])


def template_data(moto):
    versions = aws(moto, "ec2").describe_launch_template_versions(
        LaunchTemplateName="gpufleet-lab-chat"
    )["LaunchTemplateVersions"]
    return max(versions, key=lambda v: v["VersionNumber"])


def test_each_pool_gets_its_template_and_group_and_a_second_run_changes_nothing(
    moto, registry, tmp_path, region
):
    rc, output = play(moto, registry, tmp_path, pools(region))
    assert rc == 0, output[-3000:]
    latest = template_data(moto)
    data = latest["LaunchTemplateData"]
    assert data["ImageId"] == region["image"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    # The agent reads the scaler's drain tag from the instance metadata.
    assert data["MetadataOptions"]["InstanceMetadataTags"] == "enabled"
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    tagged = {spec["ResourceType"]: spec["Tags"] for spec in data["TagSpecifications"]}
    assert {"instance", "volume"} <= set(tagged)
    assert {t["Key"]: t["Value"] for t in tagged["instance"]} == {
        "gpufleet:role": "gpu",
        "gpufleet:pool": "chat",
        "gpufleet:model": "llama3.1:8b",
        "gpufleet:alias": "chat",
        "gpufleet:env": "lab",
    }
    (group,) = aws(moto, "autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=["gpufleet-lab-chat"]
    )["AutoScalingGroups"]
    distribution = group["MixedInstancesPolicy"]["InstancesDistribution"]
    assert (
        distribution["OnDemandBaseCapacity"],
        distribution["OnDemandPercentageAboveBaseCapacity"],
    ) == (1, 70)
    overrides = group["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]
    # The registry's llama3.1:8b is small: every NVIDIA type of the sizing table holds it.
    assert [o["InstanceType"] for o in overrides][:2] == ["g4dn.xlarge", "g5.xlarge"]
    assert group["CapacityRebalance"] is True
    hooks = aws(moto, "autoscaling").describe_lifecycle_hooks(
        AutoScalingGroupName="gpufleet-lab-chat"
    )["LifecycleHooks"]
    assert [(h["LifecycleHookName"], h["HeartbeatTimeout"]) for h in hooks] == [
        ("gpufleet-drain", 300)
    ]
    (report,) = (tmp_path / "reports").glob("capacity-*.json")
    assert json.loads(report.read_text())["pools"][0]["group_created"] is True

    rc, output = play(moto, registry, tmp_path, pools(region))
    assert rc == 0 and recap_changed(output) == 0, output
    assert template_data(moto)["VersionNumber"] == latest["VersionNumber"]


def test_check_mode_shows_the_diff_and_changes_nothing(moto, registry, tmp_path, region):
    assert play(moto, registry, tmp_path, pools(region))[0] == 0
    version = template_data(moto)["VersionNumber"]
    newer = publish_image(moto, "gpufleet-gpu-2")
    rc, output = play(moto, registry, tmp_path, pools(region, max=6), "--check", "--diff")
    assert rc == 0, output
    assert '-    "max_size": 4,' in output and '+    "max_size": 6,' in output, output
    assert f'-    "image_id": "{region["image"]}",' in output, output
    assert f'+    "image_id": "{newer}",' in output, output
    assert "check mode: nothing was changed" in output
    assert template_data(moto)["VersionNumber"] == version
    (group,) = aws(moto, "autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=["gpufleet-lab-chat"]
    )["AutoScalingGroups"]
    assert group["MaxSize"] == 4


def refused(moto, registry, tmp_path, capacity_pools, *options):
    """The run's output, after checking it failed and changed nothing."""
    rc, output = play(moto, registry, tmp_path, capacity_pools, *options)
    assert rc != 0 and "Nothing was changed" in output, output[-3000:]
    assert aws(moto, "ec2").describe_launch_templates()["LaunchTemplates"] == []
    assert aws(moto, "autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"] == []
    return output


def test_impossible_sizes_are_refused_at_once_naming_each_pool(moto, registry, tmp_path, region):
    output = refused(
        moto,
        registry,
        tmp_path,
        {**pools(region, min=3, max=2), "batch": pools(region, on_demand_base=5)["chat"]},
        "-e",
        "capacity_drain_hook_timeout=10",
    )
    assert "capacity_pools.chat.max (2) is below capacity_pools.chat.min (3)" in output
    assert "capacity_drain_hook_timeout (10) must be 0 (no hook) or 30 to 7200" in output
    assert "capacity_pools.batch.on_demand_base (5) is above capacity_pools.batch.max (4)" in output


def test_pools_the_region_registry_or_sizing_cannot_serve_are_refused(
    moto, registry, tmp_path, region
):
    one_zone = [region["subnets"][0], region["subnets"][2]]
    output = refused(
        moto,
        registry,
        tmp_path,
        {
            "chat": pools(region, subnets=one_zone)["chat"],
            "amd": pools(region, instance_types=["g4ad.xlarge"])["chat"],
            "gone": pools(region, model="nosuch:1b")["chat"],
        },
    )
    assert "capacity_pools.chat.subnets are in 1 availability zone(s) (us-east-1a)" in output
    assert "capacity_pools.amd: no instance type in capacity_pools.amd.instance_types" in output
    assert "capacity_pools.gone.model: nosuch:1b is not in the registry" in output


def test_a_parameter_without_an_image_is_refused(moto, registry, tmp_path, region):
    aws(moto, "ssm").delete_parameter(Name=PARAMETER)
    output = refused(moto, registry, tmp_path, pools(region))
    assert f"capacity_ami_parameter {PARAMETER} in {REGION} holds no image" in output
