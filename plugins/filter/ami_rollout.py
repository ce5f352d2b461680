"""Filters for the AMI rollout (playbooks/ami_rollout.yml): which instances of each pool's
group run another image than the published one, whether each batch fits in its groups, and
the report's table."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.gpufleet.fleet.plugins.module_utils.report_table import (
    table_header,
    table_row,
)

LIVE_STATES = ("pending", "running")
REPORT_COLUMNS = (
    ("pool", 8),
    ("old host", 10),
    ("old image", 23),
    ("new host", 10),
    ("new image", 23),
    ("outcome", 16),
    ("to_serving_s", 14),
    ("drain_wait_s", 14),
)


def _tags(instance: Mapping[str, Any]) -> dict[str, str]:
    """An instance's tags, as amazon.aws.ec2_instance_info gives them (a dict)."""
    return dict(instance.get("tags") or {})


def ami_rollout_groups(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pool -> its group, from amazon.aws.autoscaling_group_info's results in a loop over the
    pools' names; {} for a pool that has none."""
    return {r["item"]: (r.get("results") or [{}])[0] for r in results}


def ami_rollout_capacity_point(group: Mapping[str, Any], step: str) -> dict[str, Any]:
    """A group's capacity at a step of the rollout, for the report's capacity over time, from
    amazon.aws.autoscaling_group_info's group or gpufleet.fleet.group_capacity's."""
    point = {
        "at": round(time.time(), 1),
        "step": step,
        "group": group.get("name") or group.get("auto_scaling_group_name"),
        "desired": int(group["desired_capacity"]),
    }
    if "instances" in group:
        point["instances"] = len(group["instances"])
    return point


def ami_rollout_plan(
    groups: Mapping[str, Mapping[str, Any]],
    instances: Sequence[Mapping[str, Any]],
    image_id: str,
    inventory_hosts: Mapping[str, str],
) -> dict[str, Any]:
    """Each pool's group instances that run another image than image_id, as the rollout
    replaces them, pool by pool; the problems that stop it before any change.

    groups: pool -> its group as amazon.aws.autoscaling_group_info describes it (or {} when
    the pool has none); instances: amazon.aws.ec2_instance_info's instances of those groups;
    inventory_hosts: instance id -> the inventory's host for it."""
    by_id = {i["instance_id"]: i for i in instances}
    old, problems, current = [], [], {}
    for pool, group in groups.items():
        if not group:
            problems.append(f"pool {pool} has no Auto Scaling group (capacity.yml makes it)")
            continue
        members = [
            by_id[m["instance_id"]]
            for m in group.get("instances", [])
            if m["instance_id"] in by_id and by_id[m["instance_id"]]["state"]["name"] in LIVE_STATES
        ]
        current[pool] = sum(1 for m in members if m["image_id"] == image_id)
        for member in members:
            if member["image_id"] == image_id:
                continue
            host = inventory_hosts.get(member["instance_id"])
            if host is None:
                problems.append(
                    f"pool {pool}: instance {member['instance_id']} of "
                    f"{group['auto_scaling_group_name']} is in no host of the inventory "
                    "(read it again, or check its filters)"
                )
                continue
            old.append(
                {
                    "pool": pool,
                    "group": group["auto_scaling_group_name"],
                    "host": host,
                    "instance_id": member["instance_id"],
                    "image_id": member["image_id"],
                    "address": member.get("private_ip_address", ""),
                    "lifecycle": member.get("instance_lifecycle") or "on-demand",
                }
            )
    return {"old": old, "problems": problems, "on_image": current}


def ami_rollout_batch_problems(
    batches: Sequence[Sequence[str]],
    old: Sequence[Mapping[str, Any]],
    groups: Mapping[str, Mapping[str, Any]],
    pools: Mapping[str, Mapping[str, Any]] | None = None,
    variable: str = "ami_rollout_serial",
) -> list[str]:
    """Why a batch cannot be launched before its old instances are terminated: its pool's
    group would need more instances than its max_size, which would leave it below its
    minimum of serving hosts while the batch is replaced. With `pools` (capacity_pools), the
    group's sizes are those capacity.yml gives it before the batches: its max, and its desired
    capacity moved into its min to max."""
    pool_of = {o["host"]: o["pool"] for o in old}
    problems = []
    for number, batch in enumerate(batches, start=1):
        for pool, count in sorted(Counter(pool_of[h] for h in batch if h in pool_of).items()):
            group = groups[pool]
            desired, most = int(group["desired_capacity"]), int(group["max_size"])
            if pools and pool in pools:
                most = int(pools[pool]["max"])
                desired = min(max(desired, int(pools[pool]["min"])), most)
            if desired + count > most:
                problems.append(
                    f"{variable}: batch {number} replaces {count} instance(s) of pool {pool} at "
                    f"once, so its group {group['auto_scaling_group_name']} would need "
                    f"{desired + count} instances, above its max_size {most}; launching fewer "
                    "first would leave the pool below its minimum"
                )
    return problems


def ami_rollout_batch(hosts: Sequence[str], old: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A batch's pools: each one's group, old hosts and instances, and how many leave on
    demand (their replacements must launch on demand to keep the pool's base)."""
    pools: dict[str, dict[str, Any]] = {}
    for row in old:
        if row["host"] not in hosts:
            continue
        pool = pools.setdefault(
            row["pool"], {"group": row["group"], "hosts": [], "instance_ids": [], "on_demand": 0}
        )
        pool["hosts"].append(row["host"])
        pool["instance_ids"].append(row["instance_id"])
        pool["on_demand"] += row["lifecycle"] != "spot"
    return pools


def ami_rollout_replacements(
    launched: Sequence[Mapping[str, Any]], known_ids: Sequence[str]
) -> list[dict[str, Any]]:
    """The instances the batch's groups launched, not known before: each one's host name (its
    Name tag, else its id), address, image and place in the fleet, from its tags. launched:
    amazon.aws.ec2_instance_info's results in a loop over the batch's pools."""
    found = []
    for result in launched:
        for instance in result["instances"]:
            if instance["instance_id"] in known_ids:
                continue
            tags = _tags(instance)
            found.append(
                {
                    "host": tags.get("Name") or instance["instance_id"],
                    "instance_id": instance["instance_id"],
                    "image_id": instance["image_id"],
                    "address": instance.get("private_ip_address", ""),
                    "lifecycle": instance.get("instance_lifecycle") or "on-demand",
                    "group": result["item"]["value"]["group"],
                    "pool": tags.get("gpufleet:pool", result["item"]["key"]),
                    "model": tags.get("gpufleet:model", ""),
                    "alias": tags.get("gpufleet:alias", ""),
                }
            )
    return found


def ami_rollout_names(instances: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Instance id -> its Name tag, for those that have one (amazon.aws.ec2_instance_info's
    instances): a replacement may get its name after the rollout first saw it."""
    return {i["instance_id"]: _tags(i)["Name"] for i in instances if _tags(i).get("Name")}


def ami_rollout_rows(
    old: Sequence[Mapping[str, Any]],
    new: Sequence[Mapping[str, Any]],
    serving: Mapping[str, float],
    drain_waits: Mapping[str, Any],
    names: Mapping[str, str] | None = None,
    gone: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The report's rows of a replaced batch: each old host beside a replacement of its pool
    (on demand for on demand where the group launched one), named by `names` where it has a
    name, its time from launch to serving and the old host's drain wait; an old host in `gone`
    was terminated before its turn (its group replaced it) and has no replacement of its own."""
    unpaired = list(new)
    rows = []
    for row in old:
        mates = [] if row["host"] in gone else [n for n in unpaired if n["pool"] == row["pool"]]
        alike = [n for n in mates if n["lifecycle"] == row["lifecycle"]]
        mate = (alike or mates or [None])[0]
        waited = drain_waits.get(row["host"])
        if mate is not None:
            unpaired.remove(mate)
        rows.append(
            {
                "pool": row["pool"],
                "old_host": row["host"],
                "old_instance": row["instance_id"],
                "old_image": row["image_id"],
                "lifecycle": row["lifecycle"],
                "new_host": (names or {}).get(mate["instance_id"], mate["host"]) if mate else None,
                "new_instance": mate["instance_id"] if mate else None,
                "new_image": mate["image_id"] if mate else None,
                "outcome": "gone before its turn" if row["host"] in gone else "replaced",
                "launch_to_serving_s": serving.get(mate["instance_id"]) if mate else None,
                "drain_wait_s": None if waited is None else float(waited),
            }
        )
    return rows


def ami_rollout_stopped_rows(
    old: Sequence[Mapping[str, Any]],
    new: Sequence[Mapping[str, Any]],
    taken_back: Mapping[str, bool],
    names: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The report's rows of the batch the rollout stopped at: each old host kept serving,
    beside the replacement that did not serve, terminated or left running (taken_back: by
    the replacement's host in the inventory)."""
    rows = ami_rollout_rows(old, new, {}, {}, names)
    host_of = {n["instance_id"]: n["host"] for n in new}
    for row in rows:
        row["outcome"] = "kept"
        if row["new_instance"]:
            gone = taken_back.get(host_of[row["new_instance"]], False)
            row["outcome"] = "kept; new " + ("terminated" if gone else "left running")
    return rows


def ami_rollout_failure(result: Mapping[str, Any]) -> str:
    """What a failed task's result says, in a sentence: a loop's first failed item's message
    (the loop's own says only that an item failed); for a wait (until) that ran out, how many
    tries it made (its message then says nothing more)."""
    failed = [r for r in result.get("results", []) if r.get("failed")]
    found = failed[0] if failed else result
    if "attempts" in found:
        return f"still not so after {found['attempts']} tries."
    return str(found.get("msg") or "failed").strip().rstrip(".") + "."


def ami_rollout_table(report: Mapping[str, Any]) -> list[str]:
    """The report as lines of a fixed-width table, one row per old host, then the totals."""
    lines = [table_header(REPORT_COLUMNS)]
    for row in report["hosts"]:
        cells = [
            row["pool"],
            row["old_host"],
            row["old_image"],
            row.get("new_host") or "-",
            row.get("new_image") or "-",
            row["outcome"],
            _seconds(row.get("launch_to_serving_s")),
            _seconds(row.get("drain_wait_s")),
        ]
        lines.append(table_row(cells, REPORT_COLUMNS))
    requests = report.get("requests", {}).get("total", {})
    lines.append(
        f"image {report['image']}: {report['replaced']} replaced, {report['failed']} failed, "
        f"{report['wall_s']} s; through the LBs: {requests.get('served', 0)} served, "
        f"{requests.get('failed', 0)} failed, {requests.get('truncated', 0)} truncated"
    )
    return lines


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "ami_rollout_groups": ami_rollout_groups,
            "ami_rollout_capacity_point": ami_rollout_capacity_point,
            "ami_rollout_plan": ami_rollout_plan,
            "ami_rollout_batch_problems": ami_rollout_batch_problems,
            "ami_rollout_batch": ami_rollout_batch,
            "ami_rollout_replacements": ami_rollout_replacements,
            "ami_rollout_names": ami_rollout_names,
            "ami_rollout_rows": ami_rollout_rows,
            "ami_rollout_stopped_rows": ami_rollout_stopped_rows,
            "ami_rollout_failure": ami_rollout_failure,
            "ami_rollout_table": ami_rollout_table,
        }
