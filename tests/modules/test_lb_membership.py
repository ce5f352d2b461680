"""gpufleet-lb-membership against a real HAProxy on loopback and a real moto server: launched
GPU instances take free slots of their backends, terminated ones leave, the slots survive a
restart through the server-state file, and an EC2 failure changes nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import repo_scripts
from moto_region import aws, subnets_in
from running_haproxy import ADMIN_AND_HTTP, free_port, running_haproxy

from gpufleet.lab.ec2 import CREDENTIALS

REPO = Path(__file__).resolve().parents[2]
QWEN, LLAMA = "qwen2.5:7b", "llama3.1:8b"
BE_QWEN, BE_LLAMA, BE_CHAT = "be_model_qwen2.5:7b", "be_model_llama3.1:8b", "be_alias_chat"
STATIC = "10.42.0.10"

# On the LB host the collection's haproxy_runtime is installed beside the program, so named.
repo_scripts.load("plugins/module_utils/haproxy_runtime.py", "gpufleet_haproxy_runtime")
repo_scripts.load("plugins/module_utils/fleet_backends.py", "gpufleet_fleet_backends")
repo_scripts.load("plugins/module_utils/spot_fallback.py", "gpufleet_spot_fallback")
repo_scripts.load("plugins/module_utils/fleet_instances.py", "gpufleet_fleet_instances")
membership = repo_scripts.load("roles/lb_membership/files/gpufleet_lb_membership.py")


def backend(name: str, model: str = "", slots: int = 3) -> str:
    """A backend as the haproxy role renders it: its configured host, then the slots."""
    agent = f' agent-send "{model}\\n"' if model else ""
    return (
        f"backend {name}\n"
        "    balance leastconn\n"
        f"    server gpu-1 {STATIC}:11434 maxconn 4{agent}\n"
        f"    server-template gpufleet-slot 1-{slots} gpufleet-slot.invalid:11434"
        f" init-addr last,0.0.0.0 disabled maxconn 4{agent}\n"
    )


@pytest.fixture
def lb(tmp_path, moto, monkeypatch):
    """A running HAProxy with the default, two model and an alias backend, the program's
    config, and a subnet for the fleet's instances."""
    admin, state = tmp_path / "admin.sock", tmp_path / "server-state"
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        ADMIN_AND_HTTP.format(socket=admin).replace(
            "global\n", f"global\n    server-state-file {state}\n", 1
        )
        + "    load-server-state-from-file global\n"
        + f"frontend fe\n    bind 127.0.0.1:{free_port()}\n    default_backend be_default\n"
        + backend("be_default")
        + backend(BE_QWEN, QWEN)
        + backend(BE_CHAT, "chat")
        + backend(BE_LLAMA, LLAMA, slots=1)
    )
    settings = tmp_path / "lb-membership.json"
    settings.write_text(
        json.dumps(
            {
                "region": "us-east-1",
                "env": "prod",
                "endpoint_url": moto,
                "socket": str(admin),
                "default_backend": "be_default",
                "port": 11434,
            }
        )
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    subnet = subnets_in(moto, "10.42.0.0/16", ["us-east-1a"])[0]
    with running_haproxy(config, admin):
        yield {
            "config": config,
            "admin": admin,
            "state": state,
            "settings": settings,
            "subnet": subnet,
            "moto": moto,
        }


def launch(lb, address: str, model: str, pool: str, env: str = "prod", alias: str = "") -> str:
    tags = {
        "gpufleet:role": "gpu",
        "gpufleet:env": env,
        "gpufleet:pool": pool,
        "gpufleet:model": model,
    }
    if alias:
        tags["gpufleet:alias"] = alias
    ec2 = aws(lb["moto"], "ec2")
    image = sorted(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])[0]
    return ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        SubnetId=lb["subnet"],
        PrivateIpAddress=address,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ],
    )["Instances"][0]["InstanceId"]


def weights(lb) -> dict[tuple[str, str], int]:
    """Each filled slot's weight (srv_uweight), by backend and address."""
    rows = membership.haproxy_runtime.command(str(lb["admin"]), "show servers state")
    return {
        (fields[1], fields[4]): int(fields[7])
        for fields in (row.split() for row in rows.splitlines())
        if len(fields) > 7
        and fields[3].startswith(membership.SLOT_PREFIX)
        and fields[4] != membership.EMPTY
    }


def slots(lb) -> dict[str, set[str]]:
    """Each backend's filled slots' addresses."""
    found: dict[str, set[str]] = {}
    for server in membership.servers_state(str(lb["admin"])):
        if server.name.startswith("gpufleet-slot") and server.address != membership.EMPTY:
            found.setdefault(server.backend, set()).add(server.address)
    return found


def sync(lb, capsys, *options: str) -> tuple[int, list[str]]:
    status = membership.main(["--config", str(lb["settings"]), *options])
    return status, capsys.readouterr().out.splitlines()


def test_launched_instances_take_slots_in_their_backends_once(lb, capsys):
    qwen = launch(lb, "10.42.0.21", QWEN, "chat", alias="chat")
    launch(lb, "10.42.0.22", LLAMA, "batch")
    launch(lb, "10.42.0.23", QWEN, "chat", env="staging")
    # A host the configuration already has takes no slot.
    launch(lb, STATIC, QWEN, "chat", alias="chat")
    status, lines = sync(lb, capsys)
    assert status == 0, lines
    assert slots(lb) == {
        "be_default": {"10.42.0.21", "10.42.0.22"},
        BE_QWEN: {"10.42.0.21"},
        BE_CHAT: {"10.42.0.21"},
        BE_LLAMA: {"10.42.0.22"},
    }
    assert f"{BE_QWEN}/gpufleet-slot1: {qwen} at 10.42.0.21 joins" in lines
    # No request until the instance's fleet agent answers and gives the slot its weight.
    assert set(weights(lb).values()) == {0}, weights(lb)
    assert sync(lb, capsys) == (0, [])


def test_a_terminated_instance_leaves_and_its_slot_is_taken_again(lb, capsys):
    first = launch(lb, "10.42.0.21", LLAMA, "batch")
    sync(lb, capsys)
    aws(lb["moto"], "ec2").terminate_instances(InstanceIds=[first])
    status, lines = sync(lb, capsys)
    assert status == 0
    assert f"{BE_LLAMA}/gpufleet-slot1: 10.42.0.21 left the fleet, slot emptied" in lines
    assert slots(lb) == {}
    launch(lb, "10.42.0.31", LLAMA, "batch")
    launch(lb, "10.42.0.32", LLAMA, "batch")
    status, lines = sync(lb, capsys)
    assert slots(lb)[BE_LLAMA] == {"10.42.0.31"}
    assert any(line.startswith(f"{BE_LLAMA}: no free slot for i-") for line in lines), lines


def test_the_slots_survive_a_restart_through_the_server_state_file(lb, capsys):
    launch(lb, "10.42.0.21", QWEN, "chat")
    sync(lb, capsys)
    # What the haproxy role's gpufleet-haproxy-save-state does before a reload or stop.
    lb["state"].write_text(
        membership.haproxy_runtime.command(str(lb["admin"]), "show servers state")
    )
    before = slots(lb)
    subprocess.run(["pkill", "-f", f"haproxy -f {lb['config']}"], check=True)
    lb["admin"].unlink()
    with running_haproxy(lb["config"], lb["admin"]):
        assert slots(lb) == before
        assert sync(lb, capsys) == (0, [])


def test_an_ec2_failure_changes_nothing_and_is_said_once(lb, capsys, monkeypatch):
    launch(lb, "10.42.0.21", QWEN, "chat")
    sync(lb, capsys)
    settings = json.loads(lb["settings"].read_text())
    settings["endpoint_url"] = f"http://127.0.0.1:{free_port()}"
    lb["settings"].write_text(json.dumps(settings))
    aws(lb["moto"], "ec2").terminate_instances(
        InstanceIds=[
            i.instance_id for i in membership.running_gpu_instances(aws(lb["moto"], "ec2"), "prod")
        ]
    )
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    status, lines = sync(lb, capsys)
    assert status == 1
    assert len(lines) == 1 and lines[0].startswith("EC2 API failed, servers left as they were")
    assert slots(lb)[BE_QWEN] == {"10.42.0.21"}


def test_a_config_that_lacks_a_setting_is_one_line(tmp_path):
    settings = tmp_path / "lb-membership.json"
    settings.write_text(json.dumps({"region": "us-east-1"}))
    with pytest.raises(SystemExit) as refused:
        membership.main(["--config", str(settings)])
    assert str(refused.value) == (
        f"gpufleet-lb-membership: {settings} lacks env, socket, default_backend, port"
    )


def test_only_a_group_instance_down_everywhere_past_the_limit_is_unhealthy():
    """HAProxy's `lastchg` says how long: down past unhealthy_after in every server of the
    default backend; maintenance, a drain, a recent fall, a slot down since before the
    instance was launched into it, or no group is never marked."""
    place = {"pool": "chat", "model": QWEN, "alias": ""}

    def instance(number: int, group: str = "gpufleet-prod-chat", age: float = 3600):
        return membership.Instance(f"i-{number}", f"10.42.0.{number}", place, group, age)

    def row(number: int, status: str, lastchg: int, server: str = "gpufleet-slot1") -> dict:
        address = f"10.42.0.{number}:11434"
        return {"pxname": "be_default", "svname": server, "addr": address, "status": status,
                "lastchg": str(lastchg)}  # fmt: skip

    instances = [instance(n) for n in range(1, 7)] + [instance(7, group=""), instance(8, age=12)]
    rows = [
        row(1, "DOWN", 40),
        row(2, "DOWN", 5),
        row(3, "MAINT", 400),
        row(4, "DRAIN", 400),
        row(5, "DOWN (agent)", 60),
        row(5, "UP", 60, server="gpufleet-slot2"),
        row(6, "DOWN (agent)", 31),
        row(7, "DOWN", 400),
        {**row(1, "UP", 400), "pxname": BE_QWEN},
        row(8, "DOWN (agent)", 513),
    ]
    found = membership.unhealthy(instances, rows, "be_default", 11434, 30)
    assert [(i.instance_id, seconds) for i, seconds in found] == [("i-1", 40), ("i-6", 31)]


class Recorded:
    """An API client that records the calls made to it."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def __getattr__(self, name: str):
        return lambda **kwargs: self.calls.append((name, kwargs))


def test_a_stand_in_is_terminated_only_once_every_lb_has_drained_it(monkeypatch):
    """Two LBs: this one drains its servers, says it has no stream once scur is 0 (its drain
    settled past the agent's ready window); the base is lowered only once the other LB has
    said so too, then the stand-in is released and terminated, the desired capacity
    decremented."""
    calls: list = []
    aws = {"ec2": Recorded(calls), "autoscaling": Recorded(calls)}
    commands: list = []
    monkeypatch.setattr(membership.haproxy_runtime, "command", lambda _s, c: commands.append(c))
    config = {"socket": "admin.sock", "instance_id": "i-lb1"}
    group = {
        "AutoScalingGroupName": "gpufleet-prod-chat",
        "MixedInstancesPolicy": {"InstancesDistribution": {"OnDemandBaseCapacity": 2}},
    }
    servers = [membership.Server("be_default", "gpufleet-slot1", "10.42.0.9")]
    drained, give_back = "gpufleet:drained-by:", "gpufleet:give-back"

    def steps(tags: dict, status: str, scur: int, lastchg: int = 20) -> list[str]:
        leaving = membership.Member("i-9", "10.42.0.9", "on-demand", "", tags)
        row = {"pxname": "be_default", "svname": "gpufleet-slot1", "status": status,
               "scur": str(scur), "lastchg": str(lastchg)}  # fmt: skip
        found = membership.give_back_steps(
            aws, config, group, leaving, servers, [row], ["i-lb1", "i-lb2"]
        )
        calls.clear()
        commands.clear()
        for step in found:
            step.make()
        return [step.line for step in found]

    assert len(steps({give_back: "draining"}, "UP", 3)) == 1
    assert commands == ["set server be_default/gpufleet-slot1 state drain"] and not calls
    assert steps({give_back: "draining"}, "DRAIN", 2) == []
    # Not yet past the agent's ready window, in which a `ready` could undo the drain.
    assert steps({give_back: "draining"}, "DRAIN", 0, lastchg=5) == []
    steps({give_back: "draining"}, "DRAIN", 0)
    assert calls == [("create_tags", {"Resources": ["i-9"], "Tags": [
        {"Key": f"{drained}i-lb1", "Value": "yes"}]})]  # fmt: skip
    assert steps({give_back: "draining", f"{drained}i-lb1": "yes"}, "DRAIN", 0) == []
    # The other LB has drained it: this LB's own drain ends the give-back in the same pass.
    steps({give_back: "draining", f"{drained}i-lb2": "yes"}, "DRAIN", 0)
    assert [call[0] for call in calls] == [
        "create_tags",
        "update_auto_scaling_group",
        "create_tags",
        "terminate_instance_in_auto_scaling_group",
    ]
    assert calls[1][1]["MixedInstancesPolicy"] == {
        "InstancesDistribution": {"OnDemandBaseCapacity": 1}
    }
    assert calls[2][1]["Tags"] == [{"Key": give_back, "Value": "released"}]
    assert calls[3][1] == {"InstanceId": "i-9", "ShouldDecrementDesiredCapacity": True}
    # Stopped after the release: the next pass, here or on another LB, terminates it.
    both = {f"{drained}i-lb1": "yes", f"{drained}i-lb2": "yes"}
    steps({**both, give_back: "released"}, "DRAIN", 0)
    assert calls == [
        (
            "terminate_instance_in_auto_scaling_group",
            {"InstanceId": "i-9", "ShouldDecrementDesiredCapacity": True},
        )
    ]
