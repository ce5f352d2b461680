"""Filters for the pools' capacity (playbooks/capacity.yml): each pool's settings checked
before any change, and the instance types that hold its model."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.gpufleet.fleet.plugins.module_utils import ec2_gpus, model_names
from ansible_collections.gpufleet.fleet.plugins.module_utils.report_table import (
    table_header,
    table_row,
)

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
    missing_models: Mapping[str, str] | None = None,
) -> list[str]:
    """Why the pools cannot be put in place, one sentence each naming the pool and the
    variable; empty when they can. The subnets' zones and the models' sizes, when given
    (read from EC2 and the registry), are checked too, and models the registry lacks
    (missing_models: model -> why) refused."""
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
        if pool["model"] in (missing_models or {}):
            why = missing_models[pool["model"]]
            problems.append(f"{where}.model: {pool['model']} is not in the registry ({why})")
        if model_bytes is not None and pool["model"] in model_bytes:
            types = pool.get("instance_types", instance_types)
            problems += _type_problems(where, pool, types, model_bytes[pool["model"]], margin)
    return problems


def capacity_instance_types(
    pool: Mapping[str, Any], instance_types: Sequence[str], model_bytes: int, margin: float = 0.2
) -> list[str]:
    """The pool's instance types (its own, else instance_types) that hold its model."""
    return ec2_gpus.types_that_hold(pool.get("instance_types", instance_types), model_bytes, margin)


def capacity_tags(pool: Mapping[str, Any], env: str) -> dict[str, str]:
    """The tags of a pool's instances, volumes, template and group (pool: an item of
    capacity_pools | dict2items): the ones the inventory groups GPU hosts by."""
    settings = pool["value"]
    tags = {
        "gpufleet:role": "gpu",
        "gpufleet:pool": pool["key"],
        "gpufleet:model": settings["model"],
        "gpufleet:env": env,
    }
    if settings.get("alias"):
        tags["gpufleet:alias"] = settings["alias"]
    return tags


def capacity_report_pools(
    templates: Sequence[Mapping[str, Any]], groups: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One report row per pool from the template and group tasks' loop results."""
    rows = []
    for template, group in zip(templates, groups, strict=True):
        settings = group.get("group", {})
        rows.append(
            {
                "pool": template["item"]["key"],
                "template_version": template.get("latest_version", "new"),
                "template_changed": template.get("changed", False),
                "group_changed": group.get("changed", False),
                "group_created": group.get("created", False),
                **{
                    key: settings.get(key)
                    for key in (
                        "min_size",
                        "max_size",
                        "desired_capacity",
                        "on_demand_base",
                        "spot_share",
                        "instance_types",
                    )
                },
            }
        )
    return rows


def _tags(tags: Any) -> dict[str, str]:
    if isinstance(tags, Mapping):
        return dict(tags)
    return {t["key"]: t["value"] for t in tags or []}


def capacity_template_settings(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """What capacity.yml sets in a launch template, from its data in snake case (as
    amazon.aws.ec2_launch_template takes it and ec2_launch_template_info returns it), in one
    form for a diff; {} for no template."""
    if not data:
        return {}
    profile = data.get("iam_instance_profile") or ""
    if isinstance(profile, Mapping):
        profile = profile.get("arn") or profile.get("name") or ""
    metadata = data.get("metadata_options") or {}
    volumes = {m["device_name"]: m.get("ebs", {}) for m in data.get("block_device_mappings") or []}
    tagged = {
        spec["resource_type"]: _tags(spec.get("tags"))
        for spec in data.get("tag_specifications") or []
    }
    return {
        "image_id": data.get("image_id"),
        "instance_profile": profile.rsplit("/", 1)[-1],
        "key_name": data.get("key_name") or "",
        "security_group_ids": sorted(data.get("security_group_ids") or []),
        "imds_tokens": metadata.get("http_tokens"),
        "imds_hop_limit": int(metadata.get("http_put_response_hop_limit") or 1),
        "volumes": {
            device: {
                "size_gib": int(ebs["volume_size"]) if ebs.get("volume_size") else None,
                **{k: ebs.get(k) for k in ("volume_type", "encrypted", "delete_on_termination")},
            }
            for device, ebs in volumes.items()
        },
        "instance_tags": tagged.get("instance", {}),
        "volume_tags": tagged.get("volume", {}),
    }


REPORT_COLUMNS = (
    ("pool", 14),
    ("template", 10),
    ("group", 10),
    ("min", 5),
    ("max", 5),
    ("desired", 9),
    ("on-demand", 11),
    ("spot %", 8),
    ("instance types", 40),
)


def _change(changed: bool, created: bool = False) -> str:
    return "created" if created else "changed" if changed else "ok"


def capacity_table(report: Mapping[str, Any]) -> list[str]:
    """The report as lines of a fixed-width table, one row per pool."""
    lines = [table_header(REPORT_COLUMNS)]
    for row in report["pools"]:
        cells = [
            row["pool"],
            f"v{row['template_version']} {_change(row['template_changed'])}",
            _change(row["group_changed"], row["group_created"]),
            str(row["min_size"]),
            str(row["max_size"]),
            str(row["desired_capacity"]),
            str(row["on_demand_base"]),
            str(row["spot_share"]),
            ", ".join(row["instance_types"] or []),
        ]
        lines.append(table_row(cells, REPORT_COLUMNS))
    mode = " (check mode: nothing was changed)" if report["check_mode"] else ""
    lines.append(f"image {report['image']} in {report['region']}; {report['wall_s']} s{mode}")
    return lines


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "capacity_problems": capacity_problems,
            "capacity_instance_types": capacity_instance_types,
            "capacity_tags": capacity_tags,
            "capacity_template_settings": capacity_template_settings,
            "capacity_report_pools": capacity_report_pools,
            "capacity_table": capacity_table,
        }
