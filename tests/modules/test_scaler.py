"""gpufleet-scaler against a real HAProxy on loopback (read through its read-only TCP runtime
API, as on every LB) and a real moto server: a queue held above the threshold grows the
pool's group, an empty one drains an instance and terminates it only once no stream is left,
a restart in the middle finishes that scale-in and starts no second one, a config or a pool
that is wrong is refused in one line naming the variable, and an LB that does not answer
holds every pool. Lifecycle actions, which moto lacks, against botocore's stubber."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from moto_region import aws
from running_haproxy import free_port
from scaler_fleet import (
    BACKEND,
    POOL,
    backend_row,
    desired,
    failing,
    instances,
    release,
    requests,
    rows,
    scaler,
    scaler_fleet,
    scaler_pass,
    tagged,
    wait_for,
)

from gpufleet.lab.ec2 import CREDENTIALS

# The lab's groups, which take an update of the on-demand base alone as EC2's do.
pytestmark = pytest.mark.usefixtures("groups_as_ec2s")


@pytest.fixture
def fleet(tmp_path, moto, monkeypatch) -> Iterator[dict]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    with scaler_fleet(moto, tmp_path) as found:
        yield found


def test_a_queue_held_above_the_threshold_grows_the_pool_once_until_it_serves(fleet):
    held = requests(fleet, 6)
    wait_for(lambda: int(backend_row(fleet)["qcur"]) == 4, "4 requests queued", fleet)
    memory = scaler.Memory()
    first = scaler_pass(fleet, memory)
    assert "decision=hold" in first[0] and "queue=4" in first[0], first
    time.sleep(1.1)
    grown = scaler_pass(fleet, memory)
    assert "decision=out+1" in grown[0] and "group desired 3" in grown[0], grown
    assert desired(fleet["moto"]) == 3
    # The window starts over on the new size; after it, the new instance is not among the
    # LB's servers yet: it is launching, and the pool holds.
    assert "of 1" in scaler_pass(fleet, memory)[0]
    time.sleep(1.1)
    waiting = scaler_pass(fleet, memory)
    assert "not serving" in waiting[0], waiting
    assert desired(fleet["moto"]) == 3
    text = scaler.metrics_text(memory)
    assert 'gpufleet_scaler_queue{pool="chat"} 4' in text
    assert 'gpufleet_scaler_decisions_total{pool="chat",action="out",kind="queue_over"} 1' in text
    release(fleet, held)


def test_scale_in_drains_an_instance_and_terminates_it_once_no_stream_is_left(fleet):
    memory = scaler.Memory()
    scaler_pass(fleet, memory)
    time.sleep(1.1)
    chose = scaler_pass(fleet, memory)
    assert "decision=in-1" in chose[0], chose
    [leaving] = tagged(fleet["moto"])
    address = fleet["members"][leaving]
    # A stream on each server; the leaving one is still UP, as before its agent drains it.
    held = requests(fleet, 2)
    wait_for(lambda: int(backend_row(fleet)["scur"]) == 2, "a stream on each server", fleet)
    assert 'still taking requests"' in scaler_pass(fleet, memory)[0]
    # Its agent's drain, as HAProxy applies it.
    server = next(r["svname"] for r in rows(fleet) if r["addr"].startswith(address + ":"))
    scaler.haproxy_runtime.command(
        str(fleet["admin"]), f"set server {BACKEND}/{server} state drain"
    )
    # A scaler restarted here (a new memory) continues the same scale-in, and no second.
    memory = scaler.Memory()
    left = scaler_pass(fleet, memory)
    assert f"draining {leaving} at {address} for scale-in: 1 stream(s) left" in left[0], left
    assert tagged(fleet["moto"]) == [leaving]
    assert desired(fleet["moto"]) == 2
    release(fleet, held)
    wait_for(lambda: int(backend_row(fleet)["scur"]) == 0, "the streams to end", fleet)
    done = scaler_pass(fleet, memory)
    assert "drained on every LB" in done[0] and "decision=in " in done[0], done
    assert desired(fleet["moto"]) == 1
    assert leaving not in instances(fleet["moto"])
    # At min now: after a whole window again, it holds.
    scaler_pass(fleet, memory)
    time.sleep(1.1)
    assert "at min 1" in scaler_pass(fleet, memory)[0]


def test_a_scale_in_is_given_up_when_the_queue_comes_back(fleet):
    memory = scaler.Memory()
    scaler_pass(fleet, memory)
    time.sleep(1.1)
    scaler_pass(fleet, memory)
    [leaving] = tagged(fleet["moto"])
    held = requests(fleet, 6)
    wait_for(lambda: int(backend_row(fleet)["qcur"]) == 4, "4 requests queued", fleet)
    given_up = scaler_pass(fleet, memory)
    assert f"scale-in of {leaving}" in given_up[0] and "back above 2" in given_up[0], given_up
    assert tagged(fleet["moto"]) == []
    assert desired(fleet["moto"]) == 2
    release(fleet, held)


def group(fleet) -> dict:
    return aws(fleet["moto"], "autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"][0]


def base_and_tags(fleet) -> tuple[int, str, str]:
    found = group(fleet)
    tags = {t["Key"]: t["Value"] for t in found["Tags"]}
    base = found["MixedInstancesPolicy"]["InstancesDistribution"]["OnDemandBaseCapacity"]
    return base, tags["gpufleet:on-demand-base"], tags.get("gpufleet:error-backup", "")


def test_errors_with_every_host_serving_add_an_on_demand_backup_given_back_first(fleet):
    memory = scaler.Memory()
    scaler_pass(fleet, memory)
    failing(fleet, 30)
    time.sleep(1.1)
    added = scaler_pass(fleet, memory)
    assert "decision=out+1" in added[0] and "100% of responses 5xx" in added[0], added
    assert "on-demand base 2, group desired 3" in added[0], added
    assert (desired(fleet["moto"]), *base_and_tags(fleet)) == (3, 2, "2", "1")
    # The errors stop; the quiet pool gives the backup back first: the newest on-demand
    # instance, its base with it (an instance no LB lists has no stream to wait for).
    newest = max(instances(fleet["moto"]))
    time.sleep(1.1)
    memory = scaler.Memory()
    scaler_pass(fleet, memory)
    time.sleep(1.1)
    chose = scaler_pass(fleet, memory)
    assert "decision=in-1" in chose[0], chose
    assert tagged(fleet["moto"]) == [newest] or len(tagged(fleet["moto"])) == 1, chose
    done = scaler_pass(fleet, memory)
    assert "drained on every LB" in done[0], done
    assert (desired(fleet["moto"]), *base_and_tags(fleet)) == (2, 1, "1", "0")


def test_an_lb_that_does_not_answer_holds_every_pool_and_says_so_once(fleet):
    fleet["settings"]["read_port"] = free_port()
    memory = scaler.Memory()
    memory.clocks["chat"] = scaler.scaling.Clock(over_since=0.0)
    first = scaler_pass(fleet, memory)
    assert len(first) == 1 and first[0].startswith("holding every pool, nothing read:"), first
    assert memory.clocks["chat"].over_since is None
    assert scaler_pass(fleet, memory) == []
    assert "gpufleet_scaler_up 0" in scaler.metrics_text(memory)
    assert desired(fleet["moto"]) == 2


def test_a_dry_run_says_its_decisions_and_changes_nothing(fleet):
    held = requests(fleet, 6)
    wait_for(lambda: int(backend_row(fleet)["qcur"]) == 4, "4 requests queued", fleet)
    clients = {s: aws(fleet["moto"], s) for s in ("ec2", "autoscaling")}
    memory = scaler.Memory()
    scaler.one_pass(clients, fleet["settings"], memory, dry_run=True)
    time.sleep(1.1)
    said = scaler.one_pass(clients, fleet["settings"], memory, dry_run=True)
    assert said[0].startswith("would: ") and "decision=out+1" in said[0], said
    assert desired(fleet["moto"]) == 2 and tagged(fleet["moto"]) == []
    assert "gpufleet_scaler_dry_run 1" in scaler.metrics_text(memory)
    release(fleet, held)


def test_an_ec2_api_that_does_not_answer_holds_every_pool(fleet):
    clients = {s: aws(f"http://127.0.0.1:{free_port()}", s) for s in ("ec2", "autoscaling")}
    for client in clients.values():
        client.meta.config.retries = {"max_attempts": 1}
    said = scaler.one_pass(clients, fleet["settings"], scaler.Memory(), dry_run=False)
    assert len(said) == 1 and said[0].startswith("holding every pool, nothing read:"), said
    assert desired(fleet["moto"]) == 2


def refusal(tmp_path: Path, capsys, settings: dict, *options: str) -> str:
    """The one line a refused start says, after checking it exits 78 (EX_CONFIG), which its
    unit does not restart on."""
    path = tmp_path / "scaler.json"
    path.write_text(json.dumps(settings))
    with pytest.raises(SystemExit) as refused:
        scaler.main(["--config", str(path), *options])
    assert refused.value.code == 78
    return capsys.readouterr().err.rstrip("\n")


def test_a_pool_ec2_does_not_have_is_refused_at_start_naming_it(fleet, tmp_path, capsys):
    settings = fleet["settings"] | {"pools": {"chat": {}, "batch": {}}}
    message = refusal(tmp_path, capsys, settings, "--check")
    assert message.startswith("gpufleet-scaler: refused: scaler_pools.batch: no pool group")
    assert "\n" not in message


def test_settings_the_group_cannot_take_or_prices_missing_are_refused(fleet, tmp_path, capsys):
    settings = fleet["settings"] | {"pools": {"chat": {"max": 8}}}
    message = refusal(tmp_path, capsys, settings)
    assert "scaler_pools.chat: min 1 and max 8 must lie within" in message
    settings = fleet["settings"] | {"max_dollars_per_hour": 10, "hourly_prices": {"g5.xlarge": 1}}
    assert "scaler_hourly_prices lacks g6.xlarge" in refusal(tmp_path, capsys, settings)


def test_thresholds_out_of_order_are_refused_before_any_api_call(tmp_path, capsys):
    settings = {
        "region": "us-east-1",
        "env": "prod",
        "read_port": 9999,
        "interval": 10,
        "max_instances": 0,
        "max_dollars_per_hour": 0,
        "drain_timeout": 900,
        "pool_defaults": POOL | {"scale_out_window": 120, "scale_in_window": 600},
        "pools": {"chat": {"scale_in_queue": 12, "scale_out_queue": 10}},
    }
    message = refusal(tmp_path, capsys, settings)
    assert message == (
        "gpufleet-scaler: refused: scaler_pools.chat.scale_in_queue (12) must be below "
        "scale_out_queue (10)"
    )


def member(instance_id: str, lifecycle: str, launched: str, **tags: str):
    return scaler.Member(instance_id, "10.0.0.1", lifecycle, launched, tags)


def view(members: list, base: int) -> object:
    group = {
        "AutoScalingGroupName": "gpufleet-prod-chat",
        "DesiredCapacity": len(members),
        "MixedInstancesPolicy": {"InstancesDistribution": {"OnDemandBaseCapacity": base}},
        "tags": {"gpufleet:on-demand-base": str(base)},
    }
    return scaler.PoolView(scaler.scaling.Pool("chat", 1, 4, 10, 120, 2, 600), group, members, [])


def test_scale_in_removes_the_oldest_spot_else_the_newest_on_demand_above_the_base():
    od1, od2 = (
        member("i-od1", "on-demand", "2026-12-01"),
        member("i-od2", "on-demand", "2026-12-03"),
    )
    spot1, spot2 = member("i-s1", "spot", "2026-12-02"), member("i-s2", "spot", "2026-12-04")
    assert scaler.removal_choice(view([od1, spot2, spot1], base=1)).instance_id == "i-s1"
    assert scaler.removal_choice(view([od1, od2], base=1)).instance_id == "i-od2"
    assert scaler.removal_choice(view([od1, od2], base=2)) is None
    stand_in = member("i-od3", "on-demand", "2026-12-05", **{"gpufleet:give-back": "draining"})
    assert scaler.removal_choice(view([od1, od2, stand_in], base=1)).instance_id == "i-od2"


def test_a_group_termination_in_its_lifecycle_hook_completes_once_no_lb_has_a_stream():
    autoscaling = boto3.client("autoscaling", region_name="us-east-1", **CREDENTIALS)
    ec2 = boto3.client("ec2", region_name="us-east-1", **CREDENTIALS)
    group = {
        "AutoScalingGroupName": "gpufleet-prod-chat",
        "MinSize": 1,
        "MaxSize": 4,
        "DesiredCapacity": 2,
        "DefaultCooldown": 300,
        "AvailabilityZones": ["us-east-1a"],
        "HealthCheckType": "EC2",
        "CreatedTime": "2026-12-07T10:00:00Z",
        "Tags": [
            {"Key": "gpufleet:env", "Value": "prod"},
            {"Key": "gpufleet:on-demand-base", "Value": "1"},
        ],
        "Instances": [
            {
                "InstanceId": instance_id,
                "LifecycleState": state,
                "AvailabilityZone": "us-east-1a",
                "HealthStatus": "Healthy",
                "ProtectedFromScaleIn": False,
            }
            for instance_id, state in (("i-0a", "Terminating:Wait"), ("i-0b", "InService"))
        ],
    }
    hook = {
        "LifecycleHookName": "gpufleet-drain",
        "AutoScalingGroupName": "gpufleet-prod-chat",
        "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
    }
    lbs = scaler.LbStats(
        {
            "i-lb": [
                {
                    "pxname": BACKEND,
                    "svname": "s1",
                    "address": "10.0.0.7",
                    "status": "MAINT",
                    "scur": "0",
                    "qcur": "0",
                }
            ]
        }
    )
    with Stubber(autoscaling) as asg_stub, Stubber(ec2) as ec2_stub:
        asg_stub.add_response("describe_auto_scaling_groups", {"AutoScalingGroups": [group]}, {})
        ec2_stub.add_response(
            "describe_instances",
            {
                "Reservations": [
                    {"Instances": [{"InstanceId": "i-0a", "PrivateIpAddress": "10.0.0.7"}]}
                ]
            },
            {"InstanceIds": ["i-0a"]},
        )
        asg_stub.add_response(
            "describe_lifecycle_hooks",
            {"LifecycleHooks": [hook]},
            {"AutoScalingGroupName": "gpufleet-prod-chat"},
        )
        asg_stub.add_response(
            "complete_lifecycle_action",
            {},
            {
                "LifecycleHookName": "gpufleet-drain",
                "AutoScalingGroupName": "gpufleet-prod-chat",
                "InstanceId": "i-0a",
                "LifecycleActionResult": "CONTINUE",
            },
        )
        groups = scaler.env_groups(autoscaling, {"env": "prod"})
        lines = scaler.lifecycle_steps({"autoscaling": autoscaling, "ec2": ec2}, groups, lbs, False)
        asg_stub.assert_no_pending_responses()
    assert lines == [
        "gpufleet-prod-chat: i-0a at 10.0.0.7 drained on every LB; lifecycle action "
        "gpufleet-drain completed (CONTINUE)"
    ]


def test_a_group_termination_waits_while_an_lb_has_a_stream_on_it():
    lbs = scaler.LbStats(
        {
            "i-lb": [
                {
                    "pxname": BACKEND,
                    "svname": "s1",
                    "address": "10.0.0.7",
                    "status": "DRAIN",
                    "scur": "1",
                    "qcur": "0",
                }
            ]
        }
    )
    assert lbs.in_flight("10.0.0.7") == 1
    up = scaler.LbStats(
        {"i-lb": [{"pxname": BACKEND, "address": "10.0.0.7", "status": "UP", "scur": "0"}]}
    )
    assert up.in_flight("10.0.0.7") == -1
