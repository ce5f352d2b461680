"""`gpufleet lab scaler-drill`: the scaler sizes the pool chat's group on the LB's queue, under
the official clients' load, on the lab's pool as the earlier steps left it.

The spike is sized on what serves the pool's model now: its servers' slots at the LB (each
host's `maxconn`) C and the lab's threshold T. The steady load is S = ceil((C + T + 1) / 10)
streams and the spike 10 S, so the spike's queue is above T by 1 to 10 requests, which one
to three more hosts absorb. Where the group's max leaves less room, capacity.yml gives it
that room (min 1, max its desired capacity plus the hosts needed); loadbalancer.yml puts
the scaler on lb-1 with the pool chat, its min and max the group's (the lab's windows are
seconds: group_vars of the lab's inventory). Then:

- the spike: S streams, then 10 S, asking for the pool's model. The queue of the model's
  backend, the group's desired capacity and the hosts serving are sampled every second from
  the LB's read-only runtime API (the controller is the lab's monitoring host) and the EC2
  API, until the queue is back at or under the threshold with the new host(s) serving;
- a scale-in with the scaler killed in the middle: the spike ends, 3 long streams go on
  (they keep the drained host busy without a queue); once the scaler has tagged an instance
  to drain and its agent has drained it at the LB, the scaler is killed (SIGKILL) and
  systemd restarts it. The drill waits for that instance to be terminated, then checks that
  it was the only one, that no instance is left tagged, and that the desired capacity went
  down by one, never below min.

Every request the clients made is counted: served, failed (any non-2xx, 404 included) or
truncated (a stream without its end). The scaler is stopped at the end, so the lab's later
steps find the pool as the drill left it.
"""

from __future__ import annotations

import math
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from gpufleet.lab import LabError, collection_module_util, ec2, front_door
from gpufleet.lab.capacity_drill import (
    GROUP,
    POOL,
    group_hosts,
    keep_the_pool,
    run_playbook,
    wait,
)
from gpufleet.lab.inventory import SCALER_POOL_DEFAULTS
from gpufleet.lab.topology import LabPaths, LabTopology

# The haproxy role's read-only runtime API, which the scaler reads too.
READ_PORT = 9999
DRAIN_TAG = "gpufleet:drain"
# The spike is this many times the steady load.
SPIKE_FACTOR = 10
# Long streams during the scale-in: the drained host has streams to finish.
DRAIN_STREAMS, DRAIN_TOKENS = 3, 200
SPIKE_SECONDS = 180.0
# Requests a lab host takes at once at the LB (the haproxy role's maxconn, Ollama's parallel).
PER_HOST = 4


def stats(balancer_address: str) -> list[dict[str, str]]:
    """The LB's `show stat` rows with each server's address, as the scaler reads them."""
    runtime = collection_module_util("haproxy_runtime")
    where = f"{balancer_address}:{READ_PORT}"
    rows = runtime.parse_stat(runtime.command(where, "show stat", timeout=5.0))
    addresses = runtime.server_addresses(where)
    for row in rows:
        row["address"] = addresses.get((row.get("pxname", ""), row.get("svname", "")), "")
    return rows


def model_backend(model: str) -> str:
    return collection_module_util("fleet_backends").fleet_backend(model)


def queue(rows: list[dict[str, str]], backend: str) -> int:
    return sum(
        int(r.get("qcur") or 0) for r in rows if r["pxname"] == backend and r["svname"] == "BACKEND"
    )


def serving(rows: list[dict[str, str]], backend: str, addresses: set[str]) -> set[str]:
    """The addresses UP in the backend with their agent's answer, as the scaler counts them."""
    serving_row = collection_module_util("haproxy_runtime").serving
    return {
        r["address"]
        for r in rows
        if r["pxname"] == backend and r["address"] in addresses and serving_row(r)
    }


def group(topology: LabTopology) -> dict[str, Any]:
    return ec2.client(topology, "autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[GROUP]
    )["AutoScalingGroups"][0]


def drain_tagged(topology: LabTopology) -> list[str]:
    """The running instances tagged to drain."""
    reservations = ec2.client(topology).describe_instances(
        Filters=[
            {"Name": "tag-key", "Values": [DRAIN_TAG]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    return [i["InstanceId"] for r in reservations for i in r["Instances"]]


def on_lb(paths: LabPaths, balancer_address: str, command: str) -> str:
    result = subprocess.run(
        ["ssh", "-F", str(paths.ssh_config), balancer_address, command],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return result.stdout


def start_scaler(paths: LabPaths, pools: dict[str, Any]) -> None:
    """loadbalancer.yml with the scaler's pools: the operator's way to run it."""
    run_playbook(paths, "loadbalancer.yml", {"scaler_pools": pools})


def slots(rows: list[dict[str, str]], backend: str) -> int:
    """Requests the backend's UP servers take at once (their maxconn, `slim`)."""
    return sum(
        int(r.get("slim") or 0)
        for r in rows
        if r["pxname"] == backend and r["svname"] != "BACKEND" and r["status"].startswith("UP")
    )


@dataclass(frozen=True)
class SpikeSize:
    """The spike for what serves now: slots C, steady streams S, and the hosts it needs."""

    slots: int
    steady: int
    hosts_needed: int

    @property
    def streams(self) -> int:
        return SPIKE_FACTOR * self.steady


def spike_size(slots_now: int, threshold: int, per_host: int) -> SpikeSize:
    """S = ceil((C + T + 1) / 10): the spike's queue 10 S - C is T + 1 to T + 10, and the
    hosts that bring it back to T are ceil((10 S - C - T) / per_host)."""
    steady = math.ceil((slots_now + threshold + 1) / SPIKE_FACTOR)
    over = SPIKE_FACTOR * steady - slots_now - threshold
    return SpikeSize(slots_now, steady, math.ceil(over / per_host))


def spike(
    paths: LabPaths,
    topology: LabTopology,
    balancer_address: str,
    model: str,
    threshold: int,
    size: SpikeSize,
) -> dict[str, Any]:
    """S streams, then 10 S; the queue, desired and serving every second until the queue is
    back at or under the threshold with every instance the scaler added serving."""
    from gpufleet.lab.load import Load

    target = front_door.lb_target(paths, balancer_address)
    backend = model_backend(model)
    before = group(topology)["DesiredCapacity"]
    samples: list[dict[str, Any]] = []
    steady = Load(target, [model], concurrency=size.steady, tokens=40).start()
    try:
        time.sleep(5)
        started = time.monotonic()
        burst = Load(target, [model], concurrency=size.streams - size.steady, tokens=40).start()
        try:
            events = watch_spike(topology, balancer_address, backend, threshold, before, samples)
        finally:
            burst_report = burst.stop()
    finally:
        steady_report = steady.stop()
    outcomes = steady_report.outcomes + burst_report.outcomes
    return {
        "streams": [size.steady, size.streams],
        "slots_before": size.slots,
        "desired": [before, group(topology)["DesiredCapacity"]],
        "events_s": {event: round(at - started, 1) for event, at in events.items()},
        "queue_over_time": [(round(s["at"] - started), s["queue"]) for s in samples],
        "latency_s": latency(outcomes, started),
        "load": {
            v: sum(o.verdict == v for o in outcomes) for v in ("served", "failed", "truncated")
        },
        "problems": [o for o in outcomes if o.verdict != "served"],
    }


def watch_spike(
    topology: LabTopology,
    balancer_address: str,
    backend: str,
    threshold: int,
    before: int,
    samples: list[dict[str, Any]],
) -> dict[str, float]:
    """The spike's moments (monotonic): the queue first above the threshold, the group's
    desired capacity raised, the added instances serving, the queue back at or under."""
    events: dict[str, float] = {}
    deadline = time.monotonic() + SPIKE_SECONDS
    while time.monotonic() < deadline:
        rows = stats(balancer_address)
        found = group(topology)
        members = {h.address for h in group_hosts(topology) if h.address}
        now = time.monotonic()
        waiting = queue(rows, backend)
        up = serving(rows, backend, members)
        samples.append({"at": now, "queue": waiting, "desired": found["DesiredCapacity"]})
        if waiting > threshold:
            events.setdefault("queue_above_threshold", now)
        if found["DesiredCapacity"] > before:
            events.setdefault("scaled_out", now)
        if "scaled_out" in events and len(up) >= found["DesiredCapacity"]:
            events.setdefault("added_serving", now)
            if waiting <= threshold:
                events["queue_back_under"] = now
                return events
        time.sleep(1.0)
    raise LabError(
        f"the spike: the queue of {backend} not back under {threshold} in time: {events}"
    )


def latency(outcomes: list[Any], started: float) -> dict[str, dict[str, float]]:
    """p50 and p95 of the requests' whole time, before the spike and in each 20 s after."""
    buckets: dict[str, list[float]] = {}
    for outcome in outcomes:
        if outcome.verdict != "served":
            continue
        offset = outcome.started - started
        name = (
            "before" if offset < 0 else f"{int(offset // 20) * 20}-{int(offset // 20) * 20 + 20}s"
        )
        buckets.setdefault(name, []).append(outcome.ended - outcome.started)
    return {
        name: {"p50": percentile(times, 50), "p95": percentile(times, 95), "n": len(times)}
        for name, times in sorted(buckets.items(), key=lambda kv: (kv[0] != "before", kv[0]))
    }


def percentile(values: list[float], point: int) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * point / 100))], 2)


def scale_in_with_kill(
    paths: LabPaths, topology: LabTopology, balancer_address: str, model: str
) -> dict[str, Any]:
    """Long streams without a queue; the scaler killed once the instance it drains is drained
    at the LB; its restart (by systemd) finishes that scale-in and starts no second."""
    from gpufleet.lab.load import Load

    target = front_door.lb_target(paths, balancer_address)
    backend = model_backend(model)
    before = group(topology)
    members = {h.instance_id: h for h in group_hosts(topology)}
    started = time.monotonic()
    light = Load(target, [model], concurrency=DRAIN_STREAMS, tokens=DRAIN_TOKENS).start()
    try:
        found = wait(lambda: drain_tagged(topology), "the scaler tagging an instance to drain")
        if len(found) != 1:
            raise LabError(f"the scaler tagged {len(found)} instances to drain at once: {found}")
        leaving = found[0]
        tagged = time.monotonic()
        address = members[leaving].address

        def drained() -> bool:
            own = [r for r in stats(balancer_address) if r["address"] == address]
            return bool(own) and all(r["status"].startswith(("DRAIN", "MAINT")) for r in own)

        wait(drained, f"{leaving} drained at the LB by its agent")
        agent_drained = time.monotonic()
        on_lb(paths, balancer_address, "sudo systemctl kill --signal=KILL gpufleet-scaler")
        killed = time.monotonic()
        wait(
            lambda: leaving not in {h.instance_id for h in group_hosts(topology)},
            f"{leaving} terminated after the scaler's restart",
        )
        terminated = time.monotonic()
    finally:
        report = light.stop()
    after = group(topology)
    gone = sorted(set(members) - {h.instance_id for h in group_hosts(topology)})
    restarts = on_lb(paths, balancer_address, "systemctl show --property NRestarts gpufleet-scaler")
    return {
        "leaving": leaving,
        "lifecycle": members[leaving].lifecycle,
        "removed": gone,
        "left_tagged": drain_tagged(topology),
        "desired": [before["DesiredCapacity"], after["DesiredCapacity"]],
        "min": before["MinSize"],
        "restarts": restarts.strip().removeprefix("NRestarts="),
        "window_to_tag_s": round(tagged - started, 1),
        "tag_to_drained_s": round(agent_drained - tagged, 1),
        "kill_to_terminated_s": round(terminated - killed, 1),
        "queue_now": queue(stats(balancer_address), backend),
        "load": report.summary(),
        "problems": report.problems(),
    }


def scaler_drill(
    paths: LabPaths, topology: LabTopology, balancer_address: str, model: str
) -> dict[str, Any]:
    """The spike sized on what serves the model now, the group given room for it, the scaler
    on lb-1 for the pool chat within its group's sizes; the spike, then the scale-in with the
    kill; the scaler stopped at the end. Its figures."""
    threshold = SCALER_POOL_DEFAULTS["scale_out_queue"]
    size = spike_size(slots(stats(balancer_address), model_backend(model)), threshold, PER_HOST)
    before = group(topology)
    if before["MaxSize"] < before["DesiredCapacity"] + size.hosts_needed:
        room = before["DesiredCapacity"] - 1 + size.hosts_needed
        keep_the_pool(paths, topology, model, room=room)
    found = group(topology)
    since = int(time.time())
    start_scaler(paths, {POOL: {"min": found["MinSize"], "max": found["MaxSize"]}})
    try:
        grown = spike(paths, topology, balancer_address, model, threshold, size)
        shrunk = scale_in_with_kill(paths, topology, balancer_address, model)
        journal = on_lb(
            paths,
            balancer_address,
            f"sudo journalctl --unit gpufleet-scaler --since @{since} --output cat "
            "--grep 'decision=(out|in)'",
        )
    finally:
        on_lb(paths, balancer_address, "sudo systemctl stop gpufleet-scaler")
    return {"spike": grown, "scale_in": shrunk, "decisions": journal.strip().splitlines()}
