"""gpufleet-scaler against a real HAProxy on loopback (read through its read-only TCP runtime
API, as on every LB) and a real moto server: a queue held above the threshold grows the
pool's group, an empty one drains an instance and terminates it only once no stream is left,
a restart in the middle finishes that scale-in and starts no second one, a config or a pool
that is wrong is refused in one line naming the variable, and an LB that does not answer
holds every pool. Lifecycle actions, which moto lacks, against botocore's stubber."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
import repo_scripts
from botocore.stub import Stubber
from moto_region import aws
from running_haproxy import ADMIN_AND_HTTP, free_port, running_haproxy

from gpufleet.lab.ec2 import CREDENTIALS

for name in ("haproxy_runtime", "fleet_backends", "spot_fallback", "fleet_instances", "scaling"):
    repo_scripts.load(f"plugins/module_utils/{name}.py", f"gpufleet_{name}")
scaler = repo_scripts.load("roles/scaler/files/gpufleet_scaler.py")

BACKEND = "be_model_qwen2.5:7b"
POOL_TAGS = {
    "gpufleet:role": "gpu",
    "gpufleet:env": "prod",
    "gpufleet:pool": "chat",
    "gpufleet:model": "qwen2.5:7b",
    "gpufleet:on-demand-base": "1",
}
# Windows of a second, checked every second: the rule's timing is test_scaling's.
POOL = {
    "min": 1,
    "max": 4,
    "scale_out_queue": 2,
    "scale_out_window": 1,
    "scale_in_queue": 1,
    "scale_in_window": 1,
    "step_factor": 3,
}


class HeldRequests:
    """An Ollama host's stand-in for the LB: each request is held until released."""

    def __init__(self, address: str, port: int) -> None:
        self.release = threading.Event()
        release = self.release

        class Held(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/health":
                    release.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer((address, port), Held)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fleet(tmp_path, moto, monkeypatch) -> Iterator[dict]:
    """An LB instance at 127.0.0.1 running HAProxy, and the pool chat's group of 2 (on-demand
    base 1) whose instances, at 127.0.0.x, are the model backend's servers."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    ec2, autoscaling = aws(moto, "ec2"), aws(moto, "autoscaling")
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.0.0/24", AvailabilityZone="us-east-1a")
    subnet_id = subnet["Subnet"]["SubnetId"]
    image = sorted(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])[0]
    lb_tags = [{"Key": "gpufleet:role", "Value": "lb"}, {"Key": "gpufleet:env", "Value": "prod"}]
    ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet_id,
        PrivateIpAddress="127.0.0.1",
        TagSpecifications=[{"ResourceType": "instance", "Tags": lb_tags}],
    )
    ec2.create_launch_template(
        LaunchTemplateName="gpufleet-prod-chat",
        LaunchTemplateData={"ImageId": image, "InstanceType": "g5.xlarge"},
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="gpufleet-prod-chat",
        MinSize=1,
        MaxSize=4,
        DesiredCapacity=2,
        VPCZoneIdentifier=subnet_id,
        MixedInstancesPolicy={
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {"LaunchTemplateName": "gpufleet-prod-chat"},
                "Overrides": [{"InstanceType": "g5.xlarge"}, {"InstanceType": "g6.xlarge"}],
            },
            "InstancesDistribution": {
                "OnDemandBaseCapacity": 1,
                "OnDemandPercentageAboveBaseCapacity": 0,
            },
        },
        Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": True} for k, v in POOL_TAGS.items()],
    )
    members = instances(moto)
    port, read_port, frontend = free_port(), free_port(), free_port()
    admin, config = tmp_path / "admin.sock", tmp_path / "haproxy.cfg"
    servers = "".join(
        f"    server m{n} {address}:{port} maxconn 1 check inter 200ms\n"
        for n, address in enumerate(sorted(members.values()))
    )
    config.write_text(
        ADMIN_AND_HTTP.format(socket=admin)
        .replace("global\n", f"global\n    stats socket ipv4@127.0.0.1:{read_port} level user\n", 1)
        .replace("timeout server 5s", "timeout server 30s")
        + f"    timeout queue 30s\nfrontend fe\n    bind 127.0.0.1:{frontend}\n"
        + f"    default_backend {BACKEND}\nbackend {BACKEND}\n    option httpchk GET /health\n"
        + servers
    )
    hosts = [HeldRequests(address, port) for address in members.values()]
    settings = {
        "region": "us-east-1",
        "env": "prod",
        "endpoint_url": moto,
        "read_port": read_port,
        "interval": 1,
        "max_instances": 0,
        "max_dollars_per_hour": 0,
        "drain_timeout": 60,
        "pool_defaults": POOL,
        "pools": {"chat": {}},
    }
    try:
        with running_haproxy(config, admin):
            fleet = {"moto": moto, "admin": admin, "frontend": frontend, "hosts": hosts}
            fleet |= {"settings": settings, "members": members}
            wait_for(lambda: count_status(fleet, "UP") == 2, "both servers UP")
            yield fleet
    finally:
        for host in hosts:
            host.stop()


def instances(moto: str) -> dict[str, str]:
    """The group's instances not on their way out: id -> private address."""
    group = aws(moto, "autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"][0]
    ids = [i["InstanceId"] for i in group["Instances"] if i["LifecycleState"] == "InService"]
    pages = aws(moto, "ec2").describe_instances(InstanceIds=ids)["Reservations"]
    return {i["InstanceId"]: i["PrivateIpAddress"] for r in pages for i in r["Instances"]}


def desired(moto: str) -> int:
    group = aws(moto, "autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"][0]
    return group["DesiredCapacity"]


def tagged(moto: str) -> list[str]:
    """The instances tagged to drain."""
    pages = aws(moto, "ec2").describe_instances(
        Filters=[{"Name": "tag-key", "Values": [scaler.DRAIN_TAG]}]
    )["Reservations"]
    return [
        i["InstanceId"] for r in pages for i in r["Instances"] if i["State"]["Name"] == "running"
    ]


def rows(fleet) -> list[dict[str, str]]:
    answer = scaler.haproxy_runtime.command(str(fleet["admin"]), "show stat")
    return scaler.haproxy_runtime.parse_stat(answer)


def count_status(fleet, status: str) -> int:
    return sum(1 for r in rows(fleet) if r["pxname"] == BACKEND and r["status"] == status)


def backend_row(fleet) -> dict[str, str]:
    return next(r for r in rows(fleet) if r["pxname"] == BACKEND and r["svname"] == "BACKEND")


def wait_for(condition, what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds} s for {what}")
        time.sleep(0.1)


def requests(fleet, count: int) -> list[threading.Thread]:
    """count requests through the LB, each held until its host releases it."""
    url = f"http://127.0.0.1:{fleet['frontend']}/api/generate"

    def one() -> None:
        with urllib.request.urlopen(url, timeout=40) as response:
            response.read()

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def release(fleet, threads: list[threading.Thread]) -> None:
    for host in fleet["hosts"]:
        host.release.set()
    for thread in threads:
        thread.join(timeout=10)


def scaler_pass(fleet, memory) -> list[str]:
    aws_clients = {s: aws(fleet["moto"], s) for s in ("ec2", "autoscaling")}
    return scaler.one_pass(aws_clients, fleet["settings"], memory, dry_run=False)


def test_a_queue_held_above_the_threshold_grows_the_pool_once_until_it_serves(fleet):
    held = requests(fleet, 6)
    wait_for(lambda: int(backend_row(fleet)["qcur"]) == 4, "4 requests queued")
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
    wait_for(lambda: int(backend_row(fleet)["scur"]) == 2, "a stream on each server")
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
    wait_for(lambda: int(backend_row(fleet)["scur"]) == 0, "the streams to end")
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
    wait_for(lambda: int(backend_row(fleet)["qcur"]) == 4, "4 requests queued")
    given_up = scaler_pass(fleet, memory)
    assert f"scale-in of {leaving}" in given_up[0] and "back above 2" in given_up[0], given_up
    assert tagged(fleet["moto"]) == []
    assert desired(fleet["moto"]) == 2
    release(fleet, held)


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


def refusal(tmp_path: Path, settings: dict, *options: str) -> str:
    path = tmp_path / "scaler.json"
    path.write_text(json.dumps(settings))
    with pytest.raises(SystemExit) as refused:
        scaler.main(["--config", str(path), *options])
    return str(refused.value)


def test_a_pool_ec2_does_not_have_is_refused_at_start_naming_it(fleet, tmp_path):
    settings = fleet["settings"] | {"pools": {"chat": {}, "batch": {}}}
    message = refusal(tmp_path, settings, "--check")
    assert message.startswith("gpufleet-scaler: refused: scaler_pools.batch: no pool group")
    assert "\n" not in message


def test_settings_the_group_cannot_take_or_prices_missing_are_refused(fleet, tmp_path):
    settings = fleet["settings"] | {"pools": {"chat": {"max": 8}}}
    assert "scaler_pools.chat: min 1 and max 8 must lie within" in refusal(tmp_path, settings)
    settings = fleet["settings"] | {"max_dollars_per_hour": 10, "hourly_prices": {"g5.xlarge": 1}}
    assert "scaler_hourly_prices lacks g6.xlarge" in refusal(tmp_path, settings)


def test_thresholds_out_of_order_are_refused_before_any_api_call(tmp_path):
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
    message = refusal(tmp_path, settings)
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
        lines = scaler.lifecycle_steps(
            {"autoscaling": autoscaling, "ec2": ec2}, {"env": "prod"}, lbs, False
        )
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
