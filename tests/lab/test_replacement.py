"""A pool's Auto Scaling group keeps its capacity on the lab: capacity.yml makes the group on
the run's baked image, the lab's EC2 API launches its instance, and the lab's keeper boots it
as a host (gpufleet.lab.instance_keeper). Under streaming load from the official client, the
host gets a spot interruption notice: its agent drains it, the instance is reclaimed at the
end of the (compressed) notice, the group launches a replacement, and the LB's membership
service takes the replacement in. Then Ollama is killed on the group's host for good: the LB
marks it down, its membership service marks the instance Unhealthy in the group past
lb_membership_unhealthy_after (10 s in the lab), and the group replaces it. No playbook runs
after capacity.yml."""

import json
import time

import pytest
from fleet import QWEN, playbook, servers, target, wait_for
from labctl import ec2_client, gpufleet, on_host

from gpufleet.lab import lab as lab_life
from gpufleet.lab.instance_keeper import notice_seconds
from gpufleet.lab.load import Load
from gpufleet.lab.topology import LabPaths

pytestmark = pytest.mark.lab_after_scenarios
GROUP = "gpufleet-lab-chat"
PARAMETER = "/gpufleet/gpu/ami/latest"
BACKEND = f"be_model_{QWEN}"
OLLAMA = 11434


@pytest.fixture(scope="module")
def pool(lab, baked):
    """The pool chat as a group of one instance on the run's image, published as a bake in
    CI publishes it; the LB was put back by the launch tests."""
    assert baked["image"], "the bake kept no image"
    ec2_client(lab, "ssm").put_parameter(
        Name=PARAMETER, Value=baked["image"], Type="String", Overwrite=True
    )
    lab_vpc = ec2_client(lab).describe_vpcs(Filters=[{"Name": "cidr", "Values": [lab["subnet"]]}])
    subnets = ec2_client(lab).describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [lab_vpc["Vpcs"][0]["VpcId"]]}]
    )["Subnets"]
    pools = {
        "chat": {
            "model": QWEN,
            "alias": "chat",
            "subnets": [s["SubnetId"] for s in sorted(subnets, key=lambda s: s["CidrBlock"])],
            "min": 1,
            "max": 2,
            # moto's group launches none of a spot share that rounds down: one on demand.
            "on_demand_base": 1,
            "min_azs": 2,
        }
    }
    playbook(lab, "capacity.yml", "-e", json.dumps({"capacity_pools": pools}))
    return {"lb": next(h["address"] for h in lab["hosts"] if h["name"] == "lb-1")}


def group_instances(lab: dict) -> dict[str, tuple[str, str]]:
    """The group's instances: each one's lab host (empty until booted) and address."""
    group = ec2_client(lab, "autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[GROUP]
    )["AutoScalingGroups"][0]
    ids = [i["InstanceId"] for i in group["Instances"]]
    if not ids:
        return {}
    reservations = ec2_client(lab).describe_instances(InstanceIds=ids)["Reservations"]
    return {
        i["InstanceId"]: (
            next((t["Value"] for t in i.get("Tags", []) if t["Key"] == "gpufleet:lab-host"), ""),
            i["PrivateIpAddress"],
        )
        for r in reservations
        for i in r["Instances"]
    }


def slot_of(address: str) -> dict[str, str]:
    """The LB's row of the backend slot that holds the address; empty if none does."""
    rows = [row for (proxy, _), row in servers().items() if proxy == BACKEND]
    return next((row for row in rows if row["addr"] == f"{address}:{OLLAMA}"), {})


def serving(lab: dict) -> tuple[str, str, str] | None:
    """The group's one instance, once its host is booted and UP in the LB: id, host, address."""
    found = group_instances(lab)
    if len(found) != 1:
        return None
    ((instance_id, (host, address)),) = found.items()
    up = slot_of(address).get("status", "").startswith("UP")
    return (instance_id, host, address) if host and up else None


def test_a_spot_notice_ends_with_the_groups_replacement_serving_and_no_request_lost(lab, pool):
    booted = wait_for(lambda: serving(lab) is not None, 240)
    first_id, first_host, first_address = serving(lab)
    print(f"the group's first instance served through the LB {booted:.1f} s after capacity.yml")

    load = Load(target(pool), [QWEN], concurrency=20, tokens=40).start()
    time.sleep(3)
    noticed = time.monotonic()
    gpufleet("lab", "spot-notice", first_host)
    # The agent drains the host before the instance is reclaimed.
    wait_for(lambda: slot_of(first_address).get("status", "").startswith("DRAIN"), notice_seconds())

    def replaced() -> bool:
        now = serving(lab)
        return now is not None and now[0] != first_id

    wait_for(replaced, 240)
    replacement_serving = time.monotonic() - noticed
    _, second_host, second_address = serving(lab)
    before = int(slot_of(second_address)["stot"])
    wait_for(lambda: int(slot_of(second_address)["stot"]) > before, 60)
    report = load.stop()

    summary = report.summary()
    assert summary["failed"] == 0 and summary["truncated"] == 0, report.problems()[:5]
    assert summary["served"] >= 20, summary
    state = ec2_client(lab).describe_instances(InstanceIds=[first_id])["Reservations"][0]
    assert state["Instances"][0]["State"]["Name"] == "terminated"
    names = [h.name for h in lab_life.load(LabPaths.from_environment()).hosts]
    assert first_host not in names and second_host in names, names
    print(
        f"spot notice on {first_host} to {second_host} serving through the LB: "
        f"{replacement_serving:.1f} s (notice compressed to {notice_seconds():.0f} s); "
        f"{summary['served']} streams served, 0 failed, 0 truncated"
    )


def test_a_host_whose_ollama_stays_dead_is_replaced_losing_only_its_own_streams(lab, pool):
    wait_for(lambda: serving(lab) is not None, 240)
    dead_id, dead_host, _ = serving(lab)
    with Load(target(pool), [QWEN], concurrency=20, tokens=40) as running:
        time.sleep(3)
        # Killed, and kept from coming back: systemd's restarts cannot run the binary.
        on_host(dead_host, "sudo chmod a-x /usr/bin/ollama && sudo systemctl kill -s KILL ollama")
        killed_by = time.monotonic()

        def replaced() -> bool:
            now = serving(lab)
            return now is not None and now[0] != dead_id

        wait_for(replaced, 240)
        replacement_serving = time.monotonic() - killed_by
        _, new_host, new_address = serving(lab)
        before = int(slot_of(new_address)["stot"])
        wait_for(lambda: int(slot_of(new_address)["stot"]) > before, 60)
    report = running.report

    # Only streams the dead host had begun answering are lost, at most its maxconn (4).
    failed = report.problems()
    assert all(o.verdict == "truncated" and o.started < killed_by for o in failed), failed[:5]
    assert len(failed) <= 4, failed[:5]
    assert report.summary()["served"] >= 20, report.summary()
    state = ec2_client(lab).describe_instances(InstanceIds=[dead_id])["Reservations"][0]
    assert state["Instances"][0]["State"]["Name"] == "terminated"
    print(
        f"Ollama dead on {dead_host} to {new_host} serving through the LB: "
        f"{replacement_serving:.1f} s (unhealthy after 10 s down); {report.summary()}"
    )
