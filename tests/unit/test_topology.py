import re
from pathlib import Path

import pytest

from gpufleet.lab import LabError
from gpufleet.lab.bake_host import default_models
from gpufleet.lab.ec2 import LAB_HOST_TAG, host_tags
from gpufleet.lab.topology import LabTopology, plan


def test_default_plan_has_three_gpu_hosts_and_one_lb_over_two_azs():
    topology = plan(3, 1, "10.77.0.0/24", "us-east-1")
    assert [h.name for h in topology.hosts] == ["gpu-1", "gpu-2", "gpu-3", "lb-1"]
    assert [h.address for h in topology.hosts] == [
        "10.77.0.10",
        "10.77.0.138",
        "10.77.0.11",
        "10.77.0.139",
    ]
    assert {h.az_index for h in topology.hosts} == {0, 1}
    assert topology.gateway == "10.77.0.1"


def test_gpu_hosts_vary_in_type_lifecycle_and_model():
    hosts = plan(3, 1, "10.77.0.0/24", "us-east-1").hosts
    assert {h.instance_type for h in hosts} == {"g4dn.xlarge", "g5.xlarge", "t3.medium"}
    assert {h.lifecycle for h in hosts} == {"spot", "on-demand"}
    assert {h.model for h in hosts if h.role == "gpu"} == {"llama3.1:8b", "qwen2.5:7b"}
    assert all(h.model == "" for h in hosts if h.role == "lb")


def test_addresses_stay_in_their_az_half_of_the_subnet():
    topology = plan(20, 5, "10.99.0.0/24", "eu-west-1")
    for host in topology.hosts:
        last = int(host.address.rsplit(".", 1)[1])
        assert (last >= 128) == (host.az_index == 1), host
    assert len({h.address for h in topology.hosts}) == 25


def test_topology_survives_a_round_trip_through_its_state_file():
    topology = plan(2, 1, "10.77.0.0/24", "us-east-1")
    assert LabTopology.from_json(topology.to_json()) == topology


@pytest.mark.parametrize(
    ("gpu", "lb", "subnet", "message"),
    [
        (0, 0, "10.77.0.0/24", "at least one host"),
        (-1, 1, "10.77.0.0/24", "at least one host"),
        (3, 1, "10.77.0.0/33", "not an IPv4 network"),
        (3, 1, "8.8.8.0/24", "private IPv4 network"),
        (3, 1, "10.77.0.0/28", "private IPv4 network of /26 or larger"),
        (60, 60, "10.77.0.0/25", "too small for 120 hosts"),
    ],
)
def test_bad_topology_is_refused_with_the_option_named(gpu, lb, subnet, message):
    with pytest.raises(LabError, match=message):
        plan(gpu, lb, subnet, "us-east-1")


def test_unknown_host_names_the_hosts_the_lab_has():
    topology = plan(1, 1, "10.77.0.0/24", "us-east-1")
    with pytest.raises(LabError, match=r"no lab host named 'gpu-9' \(the lab has: gpu-1, lb-1\)"):
        topology.host("gpu-9")


def test_gpu_hosts_get_nvme_disks_cycled_and_load_balancers_none():
    hosts = plan(4, 1, "10.77.0.0/24", "us-east-1").hosts
    assert [(h.name, h.nvme_disks) for h in hosts] == [
        ("gpu-1", 2),
        ("gpu-2", 1),
        ("gpu-3", 0),
        ("gpu-4", 2),
        ("lb-1", 0),
    ]
    assert {h.nvme_disks for h in plan(2, 0, "10.77.0.0/24", "us-east-1", (3,)).hosts} == {3}


def test_bake_hosts_come_last_and_move_no_other_host():
    fleet = plan(3, 1, "10.77.0.0/24", "us-east-1").hosts
    with_bake = plan(3, 1, "10.77.0.0/24", "us-east-1", bake_hosts=1).hosts
    assert with_bake[:-1] == fleet
    bake = with_bake[-1]
    assert (bake.name, bake.role, bake.address) == ("bake-1", "bake", "10.77.0.12")
    assert (bake.pool, bake.model, bake.nvme_disks) == ("", "", 0)
    with pytest.raises(LabError, match="--bake-hosts must be 0 or more"):
        plan(3, 1, "10.77.0.0/24", "us-east-1", bake_hosts=-1)


def test_a_bake_host_is_tagged_as_packer_tags_its_build_instance():
    """Packer's run_tags: a name and gpufleet:role=bake, no gpufleet:env, which every fleet
    inventory (the lab's `tag:gpufleet:env: lab` included) filters on."""
    gpu, *_others, bake = plan(3, 1, "10.77.0.0/24", "us-east-1", bake_hosts=1).hosts
    assert host_tags(bake) == {
        "Name": "gpufleet-bake bake-1",
        "gpufleet:role": "bake",
        LAB_HOST_TAG: "bake-1",
    }
    assert host_tags(gpu)["gpufleet:env"] == "lab"
    packer = (Path(__file__).parents[2] / "packer" / "sources.pkr.hcl").read_text()
    run_tags = re.search(r"run_tags = \{(.*?)\n  \}", packer, re.S)
    assert run_tags and set(re.findall(r'"([^"]+)"\s+=', run_tags.group(1))) == {
        "Name",
        "gpufleet:role",
    }


@pytest.mark.parametrize(
    ("disks", "size", "message"),
    [
        ((9,), "4G", "--nvme-disks needs counts from 0 to 8"),
        ((), "4G", "--nvme-disks needs counts from 0 to 8"),
        ((1,), "100M", "--nvme-size 100M is below the 300M XFS needs"),
        ((1,), "4 GB", "--nvme-size '4 GB' is not a size such as 4G or 512M"),
    ],
)
def test_nvme_disks_that_cannot_be_are_named(disks, size, message):
    with pytest.raises(LabError, match=re.escape(message)):
        plan(3, 1, "10.77.0.0/24", "us-east-1", disks, size)


def test_a_bake_host_preloads_every_served_model_and_a_gpu_host_its_own():
    topology = plan(3, 1, "10.77.0.0/24", "us-east-1", bake_hosts=1)
    assert default_models(topology, "bake-1") == ["llama3.1:8b", "qwen2.5:7b"]
    assert default_models(topology, "gpu-3") == ["qwen2.5:7b"]
