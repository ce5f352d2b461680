"""The pools' capacity settings checked before any change, and the sizing of instance types by
their GPU memory against a model's weights and margin."""

from __future__ import annotations

import pytest
import repo_scripts

capacity = repo_scripts.load("plugins/filter/capacity.py")
from ansible_collections.gpufleet.fleet.plugins.module_utils import ec2_gpus  # noqa: E402

GIB = 2**30
# llama3.1:8b's Q4 weights are 4.9 GB; a 70B model's are about 40 GB.
LLAMA_8B, LLAMA_70B = int(4.9e9), int(40e9)
ZONES = {"subnet-a": "us-east-1a", "subnet-b": "us-east-1b", "subnet-a2": "us-east-1a"}
CHAT = {
    "model": "llama3.1:8b",
    "subnets": ["subnet-a", "subnet-b"],
    "min": 2,
    "max": 6,
    "desired": 3,
    "on_demand_base": 2,
    "spot_share": 30,
    "min_azs": 2,
}


def problems(pools, **checks):
    return capacity.capacity_problems(pools, **checks)


def test_a_pool_as_the_seeds_run_it_passes_every_check():
    assert (
        problems(
            {"chat": CHAT},
            subnet_zones=ZONES,
            model_bytes={"llama3.1:8b": LLAMA_8B},
            instance_types=["g4dn.xlarge", "g5.xlarge"],
        )
        == []
    )


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"max": 1}, "capacity_pools.chat.max (1) is below capacity_pools.chat.min (2)"),
        (
            {"on_demand_base": 7},
            "capacity_pools.chat.on_demand_base (7) is above capacity_pools.chat.max (6)",
        ),
        ({"desired": 9}, "capacity_pools.chat.desired (9) is outside min 2 to max 6"),
        (
            {"max": 0, "min": 0, "desired": 0, "on_demand_base": 0},
            "capacity_pools.chat.max must be 1 or more",
        ),
        (
            {"min": -1},
            "capacity_pools.chat.min must be a whole number of instances, 0 or more, not -1",
        ),
        ({"min": True}, "capacity_pools.chat.min must be a whole number of instances"),
        (
            {"min": "2"},
            "capacity_pools.chat.min must be a whole number of instances, 0 or more, not '2'",
        ),
        (
            {"spot_share": 130},
            "capacity_pools.chat.spot_share must be a percentage from 0 to 100, not 130",
        ),
        ({"model": "Llama 3"}, "capacity_pools.chat.model: "),
        (
            {"subnets": "subnet-a"},
            "capacity_pools.chat.subnets must be a list of names, not 'subnet-a'",
        ),
        ({"subnets": []}, "capacity_pools.chat.subnets must be a list of names, not []"),
        ({"dsired": 3}, "capacity_pools.chat has no setting 'dsired' (known: "),
    ],
)
def test_a_bad_setting_is_named_with_its_pool_and_variable(change, named):
    found = problems({"chat": {**CHAT, **change}})
    assert any(named in problem for problem in found), found


@pytest.mark.parametrize("missing", ["model", "subnets", "min", "max"])
def test_a_missing_required_setting_is_named(missing):
    pool = {k: v for k, v in CHAT.items() if k != missing}
    assert f"capacity_pools.chat.{missing} is required" in problems({"chat": pool})


@pytest.mark.parametrize("pools", [None, {}, [], "chat"])
def test_pools_that_are_not_a_mapping_of_pools_are_refused(pools):
    assert problems(pools) == [
        f"capacity_pools must map each pool's name to its settings, not {pools!r}"
    ]


@pytest.mark.parametrize("name", ["Chat", "chat pool", "-chat", "x" * 41, 7])
def test_a_pool_name_that_cannot_name_a_group_is_refused(name):
    (problem,) = problems({name: CHAT})
    assert problem.startswith(f"capacity_pools: pool name {name!r} must be lower-case")


def test_subnets_in_one_zone_are_refused_when_the_pool_asks_for_more():
    pool = {**CHAT, "subnets": ["subnet-a", "subnet-a2"]}
    assert problems({"chat": pool}, subnet_zones=ZONES) == [
        "capacity_pools.chat.subnets are in 1 availability zone(s) (us-east-1a); "
        "capacity_pools.chat.min_azs asks for 2"
    ]
    # One zone is what a pool asks for when it says nothing.
    single = {k: v for k, v in pool.items() if k != "min_azs"}
    assert problems({"chat": single}, subnet_zones=ZONES) == []


def test_a_subnet_the_region_does_not_have_is_named():
    pool = {**CHAT, "subnets": ["subnet-a", "subnet-gone"]}
    assert problems({"chat": pool}, subnet_zones=ZONES) == [
        "capacity_pools.chat.subnets: subnet-gone not found in the region"
    ]


def test_a_model_no_instance_type_holds_is_refused_naming_the_list_it_came_from():
    pool = {**CHAT, "model": "llama3.1:70b"}
    sizes = {"llama3.1:70b": LLAMA_70B}
    (problem,) = problems(
        {"chat": pool}, model_bytes=sizes, instance_types=["g4dn.xlarge", "g5.xlarge"]
    )
    assert problem.startswith(
        "capacity_pools.chat: no instance type in capacity_instance_types (g4dn.xlarge, g5.xlarge) "
        "holds llama3.1:70b, which needs 44.7 GiB of GPU memory with the 20% margin"
    )
    own = {**pool, "instance_types": ["g5.xlarge"]}
    (problem,) = problems({"chat": own}, model_bytes=sizes)
    assert "in capacity_pools.chat.instance_types (g5.xlarge)" in problem
    assert problems({"chat": {**own, "instance_types": ["g6e.xlarge"]}}, model_bytes=sizes) == []


def test_the_seeds_table_7_to_8b_models_fit_a_t4_and_an_a10g_with_their_margin():
    # g4ad's GPU is AMD's, which the image's NVIDIA driver does not drive; m5 has no GPU.
    types = ["g4dn.xlarge", "g5.xlarge", "g6.xlarge", "g4ad.xlarge", "m5.xlarge"]
    assert capacity.capacity_instance_types({}, types, LLAMA_8B) == [
        "g4dn.xlarge",
        "g5.xlarge",
        "g6.xlarge",
    ]
    # A larger margin drops the 16 GiB T4 first.
    assert capacity.capacity_instance_types({}, types, LLAMA_8B, margin=2.6) == [
        "g5.xlarge",
        "g6.xlarge",
    ]
    assert capacity.capacity_instance_types(
        {"instance_types": ["g5.12xlarge"]}, types, LLAMA_70B
    ) == ["g5.12xlarge"]


def test_gpu_memory_counts_every_gpu_of_the_type():
    assert ec2_gpus.gpu_memory_bytes("g5.12xlarge") == 4 * 24 * GIB
    assert ec2_gpus.gpu_memory_bytes("p4d.24xlarge") == 8 * 40 * GIB
    assert ec2_gpus.gpu_memory_bytes("m5.large") == 0
    assert ec2_gpus.gpu_profile("g4dn.xlarge") == (1, "NVIDIA T4", 16)


def test_a_model_the_registry_lacks_is_refused_naming_the_pool():
    found = problems(
        {"chat": {**CHAT, "model": "nosuch:1b"}},
        missing_models={"nosuch:1b": "HTTP Error 404: Not Found"},
    )
    assert found == [
        "capacity_pools.chat.model: nosuch:1b is not in the registry (HTTP Error 404: Not Found)"
    ]
