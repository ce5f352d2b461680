"""The AMI rollout's plan: which group instances are on another image than the published one,
whether each batch has room to launch before it terminates, each old host beside its
replacement in the report, and the report's table."""

from __future__ import annotations

import repo_scripts

rollout = repo_scripts.load("plugins/filter/ami_rollout.py")
NEW, OLD = "ami-0000000000000000a", "ami-0000000000000000b"


def group(name: str, ids: list[str], desired: int = 2, max_size: int = 4) -> dict:
    return {
        "auto_scaling_group_name": name,
        "desired_capacity": desired,
        "max_size": max_size,
        "instances": [{"instance_id": i, "lifecycle_state": "InService"} for i in ids],
    }


def instance(iid: str, image: str, state: str = "running", lifecycle: str | None = None) -> dict:
    found = {
        "instance_id": iid,
        "image_id": image,
        "state": {"name": state},
        "private_ip_address": f"10.0.0.{len(iid)}",
        "tags": {"gpufleet:pool": "chat", "gpufleet:model": "qwen2.5:7b", "Name": f"h-{iid}"},
    }
    if lifecycle:
        found["instance_lifecycle"] = lifecycle
    return found


def test_only_live_instances_on_another_image_are_old_and_each_names_its_host():
    groups = {"chat": group("gpufleet-prod-chat", ["i-1", "i-2", "i-3", "i-4"])}
    instances = [
        instance("i-1", OLD),
        instance("i-2", NEW),
        instance("i-3", OLD, lifecycle="spot"),
        instance("i-4", OLD, state="shutting-down"),
    ]
    plan = rollout.ami_rollout_plan(groups, instances, NEW, {"i-1": "gpu-1", "i-3": "gpu-3"})
    assert plan["problems"] == []
    assert [(o["host"], o["lifecycle"]) for o in plan["old"]] == [
        ("gpu-1", "on-demand"),
        ("gpu-3", "spot"),
    ]
    assert plan["on_image"] == {"chat": 1}


def test_a_pool_without_a_group_or_an_instance_the_inventory_lacks_is_refused_by_name():
    groups = {"chat": group("gpufleet-prod-chat", ["i-1"]), "code": {}}
    plan = rollout.ami_rollout_plan(groups, [instance("i-1", OLD)], NEW, {})
    assert plan["problems"] == [
        "pool chat: instance i-1 of gpufleet-prod-chat is in no host of the inventory "
        "(read it again, or check its filters)",
        "pool code has no Auto Scaling group (capacity.yml makes it)",
    ]


def test_a_pool_already_on_the_image_has_nothing_to_do():
    groups = {"chat": group("gpufleet-prod-chat", ["i-2"])}
    plan = rollout.ami_rollout_plan(groups, [instance("i-2", NEW)], NEW, {"i-2": "gpu-2"})
    assert plan == {"old": [], "problems": [], "on_image": {"chat": 1}}


def test_a_batch_with_no_room_in_its_group_is_refused_naming_the_pool_and_the_variable():
    groups = {"chat": group("gpufleet-prod-chat", ["i-1", "i-3"], desired=3, max_size=4)}
    plan = rollout.ami_rollout_plan(
        groups,
        [instance("i-1", OLD), instance("i-3", OLD)],
        NEW,
        {"i-1": "gpu-1", "i-3": "gpu-3"},
    )
    assert rollout.ami_rollout_batch_problems([["gpu-1"], ["gpu-3"]], plan["old"], groups) == []
    (problem,) = rollout.ami_rollout_batch_problems([["gpu-1", "gpu-3"]], plan["old"], groups)
    assert problem.startswith("ami_rollout_serial: batch 1 replaces 2 instance(s) of pool chat")
    assert "would need 5 instances, above its max_size 4" in problem
    # The sizes capacity.yml gives the group first: the pools file's max, desired moved into it.
    narrower = {"chat": {"min": 1, "max": 3}}
    found = rollout.ami_rollout_batch_problems(
        [["gpu-1"], ["gpu-3"]], plan["old"], groups, narrower
    )
    assert [p.split(" replaces")[0] for p in found] == [
        "ami_rollout_serial: batch 1",
        "ami_rollout_serial: batch 2",
    ]
    assert "need 4 instances, above its max_size 3" in found[0]
    wider = {"chat": {"min": 1, "max": 5}}
    assert (
        rollout.ami_rollout_batch_problems([["gpu-1", "gpu-3"]], plan["old"], groups, wider) == []
    )


def test_a_batch_counts_its_on_demand_hosts_per_pool():
    old = [
        {
            "pool": "chat",
            "group": "g",
            "host": "gpu-1",
            "instance_id": "i-1",
            "lifecycle": "on-demand",
        },
        {"pool": "chat", "group": "g", "host": "gpu-3", "instance_id": "i-3", "lifecycle": "spot"},
        {"pool": "code", "group": "c", "host": "gpu-5", "instance_id": "i-5", "lifecycle": "spot"},
    ]
    batch = rollout.ami_rollout_batch(["gpu-1", "gpu-3"], old)
    assert batch == {
        "chat": {
            "group": "g",
            "hosts": ["gpu-1", "gpu-3"],
            "instance_ids": ["i-1", "i-3"],
            "on_demand": 1,
        }
    }


def test_replacements_are_the_instances_not_known_before_named_by_their_name_tag_or_id():
    launched = [
        {
            "item": {"key": "chat", "value": {"group": "gpufleet-prod-chat"}},
            "instances": [
                instance("i-1", OLD),
                instance("i-9", NEW, lifecycle="spot"),
                {**instance("i-8", NEW), "tags": {"gpufleet:pool": "chat"}},
            ],
        }
    ]
    found = rollout.ami_rollout_replacements(launched, ["i-1"])
    assert [(r["host"], r["lifecycle"], r["group"]) for r in found] == [
        ("h-i-9", "spot", "gpufleet-prod-chat"),
        ("i-8", "on-demand", "gpufleet-prod-chat"),
    ]
    assert found[0]["model"] == "qwen2.5:7b" and found[1]["model"] == ""


def test_each_old_host_is_reported_beside_a_replacement_of_its_lifecycle():
    old = [
        {
            "pool": "chat",
            "host": "gpu-1",
            "instance_id": "i-1",
            "image_id": OLD,
            "lifecycle": "spot",
        },
        {
            "pool": "chat",
            "host": "gpu-2",
            "instance_id": "i-2",
            "image_id": OLD,
            "lifecycle": "on-demand",
        },
    ]
    new = [
        {
            "pool": "chat",
            "host": "gpu-8",
            "instance_id": "i-8",
            "image_id": NEW,
            "lifecycle": "on-demand",
        },
        {
            "pool": "chat",
            "host": "gpu-9",
            "instance_id": "i-9",
            "image_id": NEW,
            "lifecycle": "spot",
        },
    ]
    rows = rollout.ami_rollout_rows(old, new, {"i-8": 41.5, "i-9": 30.0}, {"gpu-1": "2.5"})
    assert [
        (r["old_host"], r["new_host"], r["launch_to_serving_s"], r["drain_wait_s"]) for r in rows
    ] == [
        ("gpu-1", "gpu-9", 30.0, 2.5),
        ("gpu-2", "gpu-8", 41.5, None),
    ]
    gone = rollout.ami_rollout_rows(old, new[:1], {}, {}, {"i-8": "gpu-8"}, ["gpu-1"])
    assert [(r["old_host"], r["new_host"], r["outcome"]) for r in gone] == [
        ("gpu-1", None, "gone before its turn"),
        ("gpu-2", "gpu-8", "replaced"),
    ]
    stopped = rollout.ami_rollout_stopped_rows(old[:1], new[1:], {"gpu-9": True})
    assert stopped[0]["outcome"] == "kept; new terminated"
    assert (
        rollout.ami_rollout_stopped_rows(old[:1], new[1:], {})[0]["outcome"]
        == "kept; new left running"
    )


def test_the_table_has_a_row_per_host_and_the_totals():
    report = {
        "image": NEW,
        "replaced": 1,
        "failed": 0,
        "wall_s": 80.2,
        "requests": {"total": {"served": 120, "failed": 0, "truncated": 0}},
        "hosts": [
            {
                "pool": "chat",
                "old_host": "gpu-1",
                "old_image": OLD,
                "new_host": "gpu-9",
                "new_image": NEW,
                "outcome": "replaced",
                "launch_to_serving_s": 30.04,
                "drain_wait_s": 2.5,
            }
        ],
    }
    lines = rollout.ami_rollout_table(report)
    assert lines[0].startswith("pool")
    assert "gpu-9" in lines[1] and "30.0" in lines[1] and "2.5" in lines[1]
    assert lines[-1] == (
        f"image {NEW}: 1 replaced, 0 failed, 80.2 s; "
        "through the LBs: 120 served, 0 failed, 0 truncated"
    )


def test_a_capacity_point_reads_either_module_s_group():
    info = group("gpufleet-prod-chat", ["i-1", "i-2"], desired=2)
    assert rollout.ami_rollout_capacity_point(info, "start")["instances"] == 2
    sizes = {"name": "gpufleet-prod-chat", "desired_capacity": 3}
    point = rollout.ami_rollout_capacity_point(sizes, "replacements asked for")
    assert (point["group"], point["desired"], "instances" in point) == (
        "gpufleet-prod-chat",
        3,
        False,
    )
    assert rollout.ami_rollout_groups([{"item": "chat", "results": []}]) == {"chat": {}}


def test_a_failure_reads_as_its_failed_items_message_and_its_tries():
    waited = {
        "msg": "One or more items failed",
        "results": [
            {"failed": False},
            {"failed": True, "msg": "Task failed: Action failed: Unknown error.", "attempts": 43},
        ],
    }
    assert rollout.ami_rollout_failure(waited) == "still not so after 43 tries."
    assert rollout.ami_rollout_failure({"msg": "refused"}) == "refused."
