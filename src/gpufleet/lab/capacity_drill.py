"""`gpufleet lab capacity-drill`: a pool's Auto Scaling group on the lab keeps its capacity
through a spot interruption, under streaming load, with no playbook after capacity.yml.

The image is published to the SSM parameter capacity.yml reads (as a bake in CI publishes
it), capacity.yml makes the pool's group of one instance in the lab's subnets, and the lab's
instance keeper boots it. Once it serves through the LB (its slot UP, taken in by the LB's
membership service), 20 streams of the official clients ask for its model, the host gets a
spot interruption notice, and the drill waits until the group's replacement serves through
the LB, then for one request served there. It reports the time from the notice to the
replacement's first served request and what the clients saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpufleet.lab import LabError, collection_module_util, ec2, front_door
from gpufleet.lab.instance_keeper import notice_seconds
from gpufleet.lab.standins import imds
from gpufleet.lab.system import wait_until
from gpufleet.lab.topology import LabPaths, LabTopology

REPO = Path(__file__).resolve().parents[3]
POOL = "chat"
GROUP = f"gpufleet-{ec2.LAB_ENV}-{POOL}"
PARAMETER = "/gpufleet/gpu/ami/latest"
OLLAMA_PORT = 11434
RUNTIME_SOCKET = "/run/haproxy/admin.sock"
WAIT_SECONDS = 240.0


@dataclass(frozen=True)
class GroupHost:
    """A group's instance and the lab host standing for it (empty until the keeper boots it)."""

    instance_id: str
    host: str
    address: str
    lifecycle: str = "on-demand"


def pools(topology: LabTopology, model: str, spot: int = 0, room: int = 1) -> dict[str, Any]:
    """The lab's pool chat as capacity.yml takes it: one instance on demand, and `spot` spot
    instances above it, in the lab's subnets; room for `room` more."""
    return {
        POOL: {
            "model": model,
            "alias": POOL,
            "subnets": ec2.subnet_ids(topology),
            "min": 1 + spot,
            "max": 1 + spot + room,
            "on_demand_base": 1,
            "spot_share": 100,
            "min_azs": 2,
        }
    }


def publish(topology: LabTopology, image: str) -> None:
    """Publish the image to the SSM parameter, as a bake in CI publishes it."""
    ec2.client(topology, "ssm").put_parameter(
        Name=PARAMETER, Value=image, Type="String", Overwrite=True
    )


def publish_and_keep_the_pool(
    paths: LabPaths, topology: LabTopology, image: str, model: str, spot: int = 0
) -> None:
    """Publish the image, then run capacity.yml for the pool (pools())."""
    publish(topology, image)
    keep_the_pool(paths, topology, model, spot)


def keep_the_pool(
    paths: LabPaths, topology: LabTopology, model: str, spot: int = 0, room: int = 1
) -> None:
    """capacity.yml for the pool (pools()), on the image published; the group keeps its
    desired capacity."""
    run_playbook(paths, "capacity.yml", {"capacity_pools": pools(topology, model, spot, room)})


def run_playbook(paths: LabPaths, playbook: str, extra_vars: dict[str, Any]) -> None:
    """One of the playbooks on the lab's inventory, as an operator runs it; LabError with the
    end of its output when it fails."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(paths.inventory_dir),
            f"playbooks/{playbook}",
            "-e",
            json.dumps(extra_vars),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise LabError(f"{playbook} exited {result.returncode}: {result.stdout[-2000:]}")


def group_hosts(topology: LabTopology, group: str = GROUP) -> list[GroupHost]:
    found = ec2.client(topology, "autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[group]
    )["AutoScalingGroups"]
    ids = [i["InstanceId"] for g in found for i in g["Instances"]]
    if not ids:
        return []
    reservations = ec2.client(topology).describe_instances(InstanceIds=ids)["Reservations"]
    hosts = []
    for instance in (i for r in reservations for i in r["Instances"]):
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        hosts.append(
            GroupHost(
                instance["InstanceId"],
                tags.get(ec2.LAB_HOST_TAG, ""),
                instance["PrivateIpAddress"],
                instance.get("InstanceLifecycle", "on-demand"),
            )
        )
    return hosts


def lb_rows(paths: LabPaths, balancer_address: str, model: str, address: str) -> list[dict]:
    """The `show stat` rows of the model's backend for the address, read on the LB host
    through its runtime API and parsed by the collection's own parser."""
    answer = subprocess.run(
        [
            "ssh",
            "-F",
            str(paths.ssh_config),
            balancer_address,
            f"echo 'show stat -1 4 -1' | sudo socat -t 5 stdio UNIX-CONNECT:{RUNTIME_SOCKET}",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    rows = collection_module_util("haproxy_runtime").parse_stat(answer)
    backend, addr = f"be_model_{model}", f"{address}:{OLLAMA_PORT}"
    return [r for r in rows if r.get("pxname") == backend and r.get("addr") == addr]


def serving_hosts(
    paths: LabPaths, topology: LabTopology, balancer_address: str, model: str
) -> list[GroupHost]:
    """The group's instances whose hosts are booted and UP in the model's backend."""
    found = []
    for member in group_hosts(topology):
        rows = lb_rows(paths, balancer_address, model, member.address) if member.host else []
        if rows and rows[0].get("status", "").startswith("UP"):
            found.append(member)
    return found


def serving_host(
    paths: LabPaths, topology: LabTopology, balancer_address: str, model: str
) -> GroupHost | None:
    """The group's one instance once its host is booted and UP in the model's backend."""
    found = group_hosts(topology)
    serving = serving_hosts(paths, topology, balancer_address, model)
    return serving[0] if len(found) == 1 and len(serving) == 1 else None


def served_on(paths: LabPaths, balancer_address: str, model: str, address: str) -> int:
    return sum(int(r.get("stot") or 0) for r in lb_rows(paths, balancer_address, model, address))


def wait(condition: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS) -> Any:
    """What condition() returns once it is true; LabError naming `what` at the timeout."""
    found = None

    def check() -> bool:
        nonlocal found
        found = condition()
        return bool(found)

    if not wait_until(check, timeout, 0.5):
        raise LabError(f"{what}: not within {timeout:.0f} s")
    return found


def spot_notice_drill(
    paths: LabPaths, topology: LabTopology, balancer_address: str, model: str
) -> dict[str, Any]:
    """The drill on a pool already kept by capacity.yml; its figures."""
    from gpufleet.lab.load import Load

    first = wait(
        lambda: serving_host(paths, topology, balancer_address, model),
        "the group's instance serving through the LB",
    )
    target = front_door.lb_target(paths, balancer_address)
    running = Load(target, [model], concurrency=20, tokens=40).start()
    time.sleep(3)
    noticed = time.monotonic()
    imds.give_notice(paths.imds_dir / "notices", first.address, "spot")

    def replacement() -> GroupHost | None:
        now = serving_host(paths, topology, balancer_address, model)
        return now if now is not None and now.instance_id != first.instance_id else None

    def drained() -> bool:
        rows = lb_rows(paths, balancer_address, model, first.address)
        return bool(rows) and all(r.get("status", "").startswith("DRAIN") for r in rows)

    try:
        wait(drained, f"{first.host} draining at the LB after its notice")
        drained_s = time.monotonic() - noticed
        second = wait(replacement, "the group's replacement serving through the LB")
        before = served_on(paths, balancer_address, model, second.address)
        wait(
            lambda: served_on(paths, balancer_address, model, second.address) > before,
            f"a request served by {second.host}",
        )
        seconds = time.monotonic() - noticed
    finally:
        report = running.stop()
    return {
        "noticed": first.host,
        "replacement": second.host,
        "notice_to_serving_s": round(seconds, 1),
        "notice_to_drain_s": round(drained_s, 1),
        "notice_s": notice_seconds(),
        "load": report.summary(),
        "problems": report.problems(),
    }


def spot_shortage_drill(
    paths: LabPaths, topology: LabTopology, balancer_address: str, model: str
) -> dict[str, Any]:
    """On the pool with a spot instance above its on-demand base, under 20 streams: spot is
    refused and the spot host gets a notice; once it is reclaimed, the LB's spot fallback has
    an on-demand instance stand in; then spot is allowed again, a spot instance serves, and
    the stand-in is drained and given back. The figures, and the group's end state."""
    from gpufleet.lab import ec2_groups
    from gpufleet.lab.load import Load

    def pool(spot: int, on_demand: int) -> list[GroupHost] | None:
        serving = serving_hosts(paths, topology, balancer_address, model)
        lifecycles = [h.lifecycle for h in serving]
        everyone = group_hosts(topology)
        wanted = (lifecycles.count("spot"), lifecycles.count("on-demand"), len(everyone))
        return serving if wanted == (spot, on_demand, spot + on_demand) else None

    before = wait(lambda: pool(1, 1), "the pool's on-demand and spot instances serving")
    (spot_host,) = [h for h in before if h.lifecycle == "spot"]
    target = front_door.lb_target(paths, balancer_address)
    running = Load(target, [model], concurrency=20, tokens=40).start()
    try:
        time.sleep(3)
        ec2_groups.refuse_spot(paths.ec2_dir, True)
        try:
            imds.give_notice(paths.imds_dir / "notices", spot_host.address, "spot")
            noticed = time.monotonic()
            wait(lambda: pool(0, 1), f"{spot_host.host} reclaimed at the end of its notice")
            reclaimed = time.monotonic()
            stand_in = wait(lambda: pool(0, 2), "an on-demand instance standing in for spot")
            standing = time.monotonic()
        finally:
            ec2_groups.refuse_spot(paths.ec2_dir, False)
        after = wait(lambda: pool(1, 1), "spot serving again and the stand-in given back")
        given_back = time.monotonic()
    finally:
        report = running.stop()
    added = {h.instance_id for h in stand_in} - {h.instance_id for h in before}
    group = ec2.client(topology, "autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[GROUP]
    )["AutoScalingGroups"][0]
    return {
        "noticed": spot_host.host,
        "stand_in": [h.host for h in stand_in if h.instance_id in added],
        "stand_in_kept": [h.host for h in after if h.instance_id in added],
        "notice_to_reclaimed_s": round(reclaimed - noticed, 1),
        "reclaimed_to_stand_in_serving_s": round(standing - reclaimed, 1),
        "spot_allowed_to_given_back_s": round(given_back - standing, 1),
        "desired": group["DesiredCapacity"],
        "on_demand_base": group["MixedInstancesPolicy"]["InstancesDistribution"][
            "OnDemandBaseCapacity"
        ],
        "load": report.summary(),
        "problems": report.problems(),
    }
