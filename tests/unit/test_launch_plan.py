"""`gpufleet lab launch` checks its request against the image and the lab before it makes
anything: one line naming the image, the model or the pool. The instance keeper makes a host
of a group's instance, ends spot notices on the lab's clock, and replaces an Unhealthy
instance as its group would."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from gpufleet.lab import LabError, images
from gpufleet.lab.images import Image
from gpufleet.lab.instance_keeper import (
    Member,
    host_for,
    notice_is_over,
    notice_seconds,
    replaced_as_unhealthy,
)
from gpufleet.lab.launch import LaunchRequest, plan_hosts
from gpufleet.lab.standins import imds
from gpufleet.lab.topology import LabPaths, plan

TOPOLOGY = plan(3, 1, "10.77.0.0/24", "us-east-1")
IMAGE = Image(
    image_id="ami-0123456789abcdef0",
    name="gpufleet-gpu-debian-12-20261206",
    source_host="gpu-3",
    models=["qwen2.5:7b", "nomic-embed-text"],
    audit="clean",
    baked_at="2026-12-06T08:00:00Z",
    rootfs="/var/cache/gpufleet-lab/rootfs",
)


def test_hosts_get_the_next_names_and_free_addresses_in_both_azs():
    launched = plan_hosts(
        TOPOLOGY, IMAGE, LaunchRequest(IMAGE.image_id, count=3, nvme_disks=(1, 0))
    )
    assert [h.name for h in launched] == ["gpu-4", "gpu-5", "gpu-6"]
    taken = {h.address for h in TOPOLOGY.hosts}
    addresses = [h.address for h in launched]
    assert len(set(addresses)) == 3 and not taken & set(addresses)
    assert {h.az_index for h in launched} == {0, 1}
    assert [h.nvme_disks for h in launched] == [1, 0, 1]
    assert all(h.image == IMAGE.image_id and h.model == "qwen2.5:7b" for h in launched)
    assert all(h.pool == "chat" and h.alias == "chat" for h in launched)


def test_a_model_with_or_without_its_tag_is_the_images_model():
    request = LaunchRequest(IMAGE.image_id, model="nomic-embed-text:latest")
    assert plan_hosts(TOPOLOGY, IMAGE, request)[0].model == "nomic-embed-text:latest"


@pytest.mark.parametrize(
    ("image", "request_", "message"),
    [
        (
            IMAGE,
            LaunchRequest(IMAGE.image_id, model="mistral:7b"),
            "image ami-0123456789abcdef0 does not carry mistral:7b (it carries qwen2.5:7b, "
            "nomic-embed-text); nothing launched",
        ),
        (
            IMAGE,
            LaunchRequest(IMAGE.image_id, pool="vision"),
            "--pool 'vision': the lab's GPU pools are chat",
        ),
        (
            IMAGE,
            LaunchRequest(IMAGE.image_id, model="Bad Name"),
            "--model 'Bad Name':",
        ),
        (
            Image(
                **{**IMAGE.__dict__, "audit": "failed: /etc/ssh/ssh_host_rsa_key: an SSH host key"}
            ),
            LaunchRequest(IMAGE.image_id),
            "image ami-0123456789abcdef0 failed its audit (failed: /etc/ssh/ssh_host_rsa_key",
        ),
    ],
)
def test_a_launch_the_image_cannot_serve_is_refused_naming_it(image, request_, message):
    with pytest.raises(LabError) as refused:
        plan_hosts(TOPOLOGY, image, request_)
    assert message in str(refused.value)
    assert str(refused.value).endswith("nothing launched")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"count": 0}, "--count 0"),
        ({"lifecycle": "reserved"}, "--lifecycle 'reserved': spot or on-demand"),
        ({"nvme_disks": (9,)}, "--nvme-disks"),
    ],
)
def test_a_request_out_of_bounds_is_refused_before_anything(fields, message):
    with pytest.raises(LabError, match=message):
        LaunchRequest(IMAGE.image_id, **fields)


def test_an_image_the_lab_does_not_have_is_refused_naming_it_and_those_it_has(tmp_path):
    paths = LabPaths(state=tmp_path / "state", cache=tmp_path / "cache")
    with pytest.raises(LabError) as refused:
        images.find(paths, "ami-0ffffffffffffffff")
    assert str(refused.value) == (
        "the lab has no image 'ami-0ffffffffffffffff' (its images: none: `gpufleet lab bake` "
        "makes one); nothing launched"
    )
    record = images.images_dir(paths) / IMAGE.image_id / "image.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps(IMAGE.__dict__))
    with pytest.raises(LabError, match=f"its images: {IMAGE.image_id}\\)"):
        images.find(paths, "ami-0ffffffffffffffff")
    assert images.find(paths, IMAGE.image_id) == IMAGE


def test_a_groups_instance_becomes_a_host_at_its_own_address_with_its_tags():
    """The lab's instance keeper: EC2 chose the address; the template gave the tags."""
    instance = {
        "InstanceId": "i-0123456789abcdef0",
        "ImageId": IMAGE.image_id,
        "InstanceType": "g5.xlarge",
        "PrivateIpAddress": "10.77.0.200",
        "tags": {
            "gpufleet:role": "gpu",
            "gpufleet:pool": "chat",
            "gpufleet:model": "qwen2.5:7b",
            "gpufleet:alias": "chat",
            "aws:autoscaling:groupName": "gpufleet-lab-chat",
        },
    }
    host = host_for(TOPOLOGY, instance)
    assert (host.name, host.address, host.az_index) == ("gpu-4", "10.77.0.200", 1)
    # A terminated instance's name is not given again.
    assert host_for(TOPOLOGY, instance, ["gpu-7", "lb-1", ""]).name == "gpu-8"
    assert (host.pool, host.model, host.alias) == ("chat", "qwen2.5:7b", "chat")
    assert (host.image, host.instance_type, host.lifecycle) == (
        IMAGE.image_id,
        "g5.xlarge",
        "on-demand",
    )
    assert host.nvme_disks == 1


def test_a_spot_notice_is_over_after_its_two_minutes_divided_by_the_labs_factor(
    tmp_path, monkeypatch
):
    paths = LabPaths(state=tmp_path, cache=tmp_path)
    instance = {"PrivateIpAddress": "10.77.0.200", "State": {"Name": "running"}}
    assert not notice_is_over(paths, instance)
    notice = imds.notice_path(paths.imds_dir / "notices", "10.77.0.200", "spot")
    notice.parent.mkdir(parents=True)
    notice.write_text("{}")
    assert not notice_is_over(paths, instance)
    later = notice.stat().st_mtime + notice_seconds()
    monkeypatch.setattr(time, "time", lambda: later)
    assert notice_is_over(paths, instance) and notice_seconds() == 15


@pytest.mark.parametrize(
    ("member", "launched_ago", "replaced"),
    [
        (Member("chat", "Unhealthy", grace=30), 31, True),
        (Member("chat", "Unhealthy", grace=30), 29, False),
        (Member("chat", "Healthy", grace=30), 31, False),
        (Member("chat", "Unhealthy", grace=30, replaces_unhealthy=False), 31, False),
    ],
    ids=["unhealthy-past-grace", "within-grace", "healthy", "replace-unhealthy-suspended"],
)
def test_an_unhealthy_instance_is_replaced_past_its_grace_unless_its_group_suspends_it(
    member, launched_ago, replaced
):
    instance = {"LaunchTime": datetime.now(UTC) - timedelta(seconds=launched_ago)}
    assert replaced_as_unhealthy(instance, member) is replaced
