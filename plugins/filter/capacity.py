"""Filters for the pools' capacity (playbooks/capacity.yml): each pool's settings checked
before any change, and the instance types that hold its model."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.gpufleet.fleet.plugins.module_utils import ec2_gpus, model_names

VARIABLE = "capacity_pools"
# A pool's name goes into its launch template's and group's names and into a tag.
POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
SETTINGS = {
    "model",
    "alias",
    "subnets",
    "min",
    "max",
    "desired",
    "on_demand_base",
    "spot_share",
    "instance_types",
    "min_azs",
}
REQUIRED = ("model", "subnets", "min", "max")
COUNTS = ("min", "max", "desired", "on_demand_base", "min_azs")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _strings(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(item, str) and item for item in value)
    )


def _shape_problems(where: str, pool: Mapping[str, Any]) -> list[str]:
    problems = [
        f"{where} has no setting {key!r} (known: {', '.join(sorted(SETTINGS))})"
        for key in sorted(set(pool) - SETTINGS, key=str)
    ]
    problems += [f"{where}.{key} is required" for key in REQUIRED if key not in pool]
    problems += [
        f"{where}.{key} must be a whole number of instances, 0 or more, not {pool[key]!r}"
        for key in COUNTS
        if key in pool and not _is_count(pool[key])
    ]
    if "model" in pool:
        problem = model_names.name_problem(pool["model"], tag_required=True)
        if problem:
            problems.append(f"{where}.model: {problem}")
    for key in ("subnets", "instance_types"):
        if key in pool and not _strings(pool[key]):
            problems.append(f"{where}.{key} must be a list of names, not {pool[key]!r}")
    share = pool.get("spot_share", 0)
    if not (_is_count(share) and share <= 100):
        problems.append(f"{where}.spot_share must be a percentage from 0 to 100, not {share!r}")
    return problems


def _size_problems(where: str, pool: Mapping[str, Any]) -> list[str]:
    low, high = pool["min"], pool["max"]
    problems = []
    if high < 1:
        problems.append(f"{where}.max must be 1 or more, not {high}")
    if high < low:
        problems.append(f"{where}.max ({high}) is below {where}.min ({low})")
    desired = pool.get("desired", low)
    if not low <= desired <= high:
        problems.append(f"{where}.desired ({desired}) is outside min {low} to max {high}")
    base = pool.get("on_demand_base", 0)
    if base > high:
        problems.append(f"{where}.on_demand_base ({base}) is above {where}.max ({high})")
    return problems


def _zone_problems(where: str, pool: Mapping[str, Any], zones: Mapping[str, str]) -> list[str]:
    unknown = [s for s in pool["subnets"] if s not in zones]
    if unknown:
        return [f"{where}.subnets: {', '.join(unknown)} not found in the region"]
    in_zones = sorted({zones[s] for s in pool["subnets"]})
    wanted = pool.get("min_azs", 1)
    if len(in_zones) < wanted:
        return [
            f"{where}.subnets are in {len(in_zones)} availability zone(s) ({', '.join(in_zones)}); "
            f"{where}.min_azs asks for {wanted}"
        ]
    return []


def _type_problems(
    where: str, pool: Mapping[str, Any], types: Sequence[str], model_bytes: int, margin: float
) -> list[str]:
    if ec2_gpus.types_that_hold(types, model_bytes, margin):
        return []
    needed = ec2_gpus.needed_bytes(model_bytes, margin) / ec2_gpus.GIB
    source = f"{where}.instance_types" if "instance_types" in pool else "capacity_instance_types"
    return [
        f"{where}: no instance type in {source} ({', '.join(types)}) holds {pool['model']}, which "
        f"needs {needed:.1f} GiB of GPU memory with the {margin:.0%} margin "
        "(capacity_vram_margin)"
    ]


def capacity_problems(
    pools: Any,
    subnet_zones: Mapping[str, str] | None = None,
    model_bytes: Mapping[str, int] | None = None,
    instance_types: Sequence[str] = (),
    margin: float = 0.2,
) -> list[str]:
    """Why the pools cannot be put in place, one sentence each naming the pool and the
    variable; empty when they can. The subnets' zones and the models' sizes, when given
    (read from EC2 and the registry), are checked too."""
    if not isinstance(pools, Mapping) or not pools:
        return [f"{VARIABLE} must map each pool's name to its settings, not {pools!r}"]
    problems: list[str] = []
    for name, pool in pools.items():
        where = f"{VARIABLE}.{name}"
        if not isinstance(name, str) or not POOL_NAME.match(name):
            problems.append(
                f"{VARIABLE}: pool name {name!r} must be lower-case letters, digits and '-', "
                "at most 40"
            )
            continue
        if not isinstance(pool, Mapping):
            problems.append(f"{where} must be a mapping of settings, not {pool!r}")
            continue
        shape = _shape_problems(where, pool)
        problems += shape
        if shape:
            continue
        problems += _size_problems(where, pool)
        if subnet_zones is not None:
            problems += _zone_problems(where, pool, subnet_zones)
        if model_bytes is not None and pool["model"] in model_bytes:
            types = pool.get("instance_types", instance_types)
            problems += _type_problems(where, pool, types, model_bytes[pool["model"]], margin)
    return problems


def capacity_instance_types(
    pool: Mapping[str, Any], instance_types: Sequence[str], model_bytes: int, margin: float = 0.2
) -> list[str]:
    """The pool's instance types (its own, else instance_types) that hold its model."""
    return ec2_gpus.types_that_hold(pool.get("instance_types", instance_types), model_bytes, margin)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "capacity_problems": capacity_problems,
            "capacity_instance_types": capacity_instance_types,
        }
