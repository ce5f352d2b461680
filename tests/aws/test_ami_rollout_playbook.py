"""playbooks/ami_rollout.yml's checks against a real moto server: a pool already on the
published image has nothing to do (exit 0, no change); a parameter that names no gpufleet GPU
image, an unknown pool, a pool without a group, an instance the inventory lacks and a batch
the group has no room for are refused before any change, naming the pool and the variable.
The rollout itself is proven on the lab (tests/lab/test_rollout.py)."""

from __future__ import annotations

import json

import pytest
from moto_region import aws, baked_image, subnets_in
from test_capacity_playbook import PARAMETER, play, pools, publish_image, recap_changed

GROUP = "gpufleet-lab-chat"


@pytest.fixture
def region(moto):
    """Subnets in two zones and a baked GPU image published, as for capacity.yml's tests."""
    subnets = subnets_in(moto, "10.41.0.0/16", ["us-east-1a", "us-east-1b"])
    return {"subnets": subnets, "image": publish_image(moto, "gpufleet-gpu-1")}


def inventory(tmp_path, moto, hosts: dict[str, str]) -> str:
    """An inventory as the EC2 plugin makes one: GPU hosts with their instance ids, an LB."""
    listed = {
        "all": {
            "children": {
                "role_gpu": {"hosts": {h: {"ec2_instance_id": i} for h, i in hosts.items()}},
                "role_lb": {"hosts": {"lb-1": {"ansible_host": "127.0.0.2"}}},
            }
        }
    }
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(listed))
    return str(path)


def group_instances(moto) -> list[str]:
    (group,) = aws(moto, "autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])[
        "AutoScalingGroups"
    ]
    return sorted(i["InstanceId"] for i in group["Instances"])


def rollout(moto, registry, tmp_path, capacity_pools, hosts, *options):
    reports = {"ami_rollout_report_dir": str(tmp_path / "reports")}
    return play(
        moto,
        registry,
        tmp_path,
        capacity_pools,
        "-e",
        json.dumps(reports),
        *options,
        playbook="playbooks/ami_rollout.yml",
        inventory=inventory(tmp_path, moto, hosts),
    )


def kept_pool(moto, registry, tmp_path, region, **chat):
    """The pool chat as capacity.yml keeps it, on the image published now, its instances
    named as the inventory names them (moto's mixed groups may launch fewer than desired)."""
    rc, output = play(moto, registry, tmp_path, pools(region, desired=2, **chat))
    assert rc == 0, output[-3000:]
    ids = group_instances(moto)
    return {f"gpu-{n}": i for n, i in enumerate(ids, start=1)}


def template_versions(moto) -> int:
    return len(
        aws(moto, "ec2").describe_launch_template_versions(LaunchTemplateName=GROUP)[
            "LaunchTemplateVersions"
        ]
    )


def test_a_pool_on_the_image_has_nothing_to_do_and_nothing_changes(
    moto, registry, tmp_path, region
):
    hosts = kept_pool(moto, registry, tmp_path, region)
    rc, output = rollout(moto, registry, tmp_path, pools(region, desired=2), hosts)
    assert rc == 0 and recap_changed(output) == 0, output[-3000:]
    on_image = f"pool chat: its {len(hosts)} instance(s) run {region['image']} already"
    assert f"{on_image}; nothing to do" in output
    (report,) = (tmp_path / "reports").glob("ami-rollout-*.json")
    assert json.loads(report.read_text())["outcome"] == "nothing to do"


def refused(moto, registry, tmp_path, capacity_pools, hosts, *options) -> str:
    """The run's output, after checking it failed and changed neither groups nor templates."""
    groups = aws(moto, "autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]
    versions = template_versions(moto) if groups else 0
    rc, output = rollout(moto, registry, tmp_path, capacity_pools, hosts, *options)
    assert rc != 0 and "Nothing was changed" in output, output[-3000:]
    assert aws(moto, "autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"] == groups
    assert (template_versions(moto) if groups else 0) == versions
    return output


def test_a_parameter_naming_no_gpu_image_is_refused(moto, registry, tmp_path, region):
    hosts = kept_pool(moto, registry, tmp_path, region)
    not_gpu = baked_image(moto, "gpufleet-lb-1", role="lb")
    aws(moto, "ssm").put_parameter(Name=PARAMETER, Value=not_gpu, Type="String", Overwrite=True)
    output = refused(moto, registry, tmp_path, pools(region, desired=2), hosts)
    assert f"names {not_gpu}, which is not an available image tagged gpufleet:role=gpu" in output


def test_an_unknown_pool_and_a_pool_without_a_group_are_refused(moto, registry, tmp_path, region):
    hosts = {"gpu-1": "i-0123456789abcdef0"}
    output = refused(
        moto, registry, tmp_path, pools(region), hosts, "-e", '{"ami_rollout_pools": ["code"]}'
    )
    assert "ami_rollout_pools names code, not in capacity_pools (chat)" in output
    output = refused(moto, registry, tmp_path, pools(region), hosts)
    assert "pool chat has no Auto Scaling group (capacity.yml makes it)" in output


def test_an_instance_the_inventory_lacks_and_a_batch_without_room_are_refused(
    moto, registry, tmp_path, region
):
    # On demand only: moto's groups launch a mixed group's full desired capacity only so.
    chat = {"max": 3, "spot_share": 0}
    hosts = kept_pool(moto, registry, tmp_path, region, **chat)
    publish_image(moto, "gpufleet-gpu-2")
    first, second = hosts.items()
    output = refused(moto, registry, tmp_path, pools(region, desired=2, **chat), dict([first]))
    assert f"pool chat: instance {second[1]} of {GROUP} is in no host of the inventory" in output
    output = refused(
        moto,
        registry,
        tmp_path,
        pools(region, desired=2, **chat),
        hosts,
        "-e",
        '{"ami_rollout_serial": 0}',
    )
    assert (
        "ami_rollout_serial: batch 1 replaces 2 instance(s) of pool chat at once, so its group "
        f"{GROUP} would need 4 instances, above its max_size 3" in output
    )
