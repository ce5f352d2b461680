#!/usr/bin/python3
"""gpufleet-lb-membership: keep an LB's backends in step with the fleet the EC2 API lists.

Runs as a service on each LB host, one pass every few seconds (--every). The running GPU
instances of the LB's environment (tags gpufleet:role=gpu, gpufleet:env) are read from the
EC2 API with the host's instance role; each belongs in the default backend and in the
backends of the names its pool serves (its models and alias), by the same rule the LB's
config is written by (fleet_backends). An instance no server of such a backend has yet
takes a free `server-template` slot there (address set, weight 0, state ready: it takes
traffic once its fleet agent's check gives it a weight); a slot whose instance is no longer
listed is put in maintenance and emptied. Servers the configuration names (the inventory's
hosts at the last loadbalancer.yml) are left to it.

An instance of an Auto Scaling group whose servers in the default backend have all been DOWN
(Ollama not answering its checks) for unhealthy_after seconds or more, as HAProxy's own
`lastchg` counts them, is marked Unhealthy in its group (respecting the group's grace period
after launch), which replaces it; HAProxy already sends it nothing. A host in maintenance or
draining is not DOWN, and is never marked.

Spot fallback (spot_fallback_after seconds, 0: off): a pool group kept by capacity.yml whose
spot instances have been missing that long (spot capacity errors: EC2 launches none) gets
on-demand stand-ins, by raising its on-demand base and desired capacity together; once its
whole spot share serves through the LB again, the newest on-demand instance is given back,
drained on every LB first (module_utils/spot_fallback.py has the rule and its state, all in
the API's tags, so any LB continues what another began).

Only HAProxy's memory changes, through its runtime API; the haproxy role saves the servers'
state before every reload and stop, and the slots' `init-addr last` reads it back. When the
EC2 API or HAProxy fails, nothing changes and one journal line says so (and one when they
answer again); a single pass (no --every) then exits 1.

    gpufleet-lb-membership [--config /etc/gpufleet/lb-membership.json] [--every 5] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import gpufleet_haproxy_runtime as haproxy_runtime
import gpufleet_spot_fallback as spot_fallback
from botocore.exceptions import BotoCoreError, ClientError
from gpufleet_fleet_backends import fleet_backends
from gpufleet_fleet_instances import TAGS, Member, group_members, pool_groups, running

CONFIG = Path("/etc/gpufleet/lb-membership.json")
# An empty slot's address, as the haproxy role's server-template starts it.
EMPTY = "0.0.0.0"  # noqa: S104
# The haproxy role's server-template names its slots gpufleet-slot1, gpufleet-slot2, ...
SLOT_PREFIX = "gpufleet-slot"
# A GPU host without a pool tag is in this pool, as the inventory's fleet filters read it.
DEFAULT_POOL = "default"
REQUIRED = ("region", "env", "socket", "default_backend", "port")
# A stand-in counts as drained on this LB once its servers have been DRAIN this long with no
# stream: longer than the fleet agent's ready window (10 s), in which its `ready` cancels a
# drain set through the runtime API.
DRAIN_SETTLE_SECONDS = 15


@dataclass(frozen=True)
class Instance:
    """A running GPU instance: where it answers, and its place in the fleet (pool, model,
    alias) as its tags say."""

    instance_id: str
    address: str
    place: dict[str, str]
    # Its Auto Scaling group, empty when it is in none.
    group: str = ""
    # Seconds since EC2 launched it: no server of it has been down longer.
    age: float = float("inf")


@dataclass(frozen=True)
class Server:
    """One server of a backend, as `show servers state` lists it."""

    backend: str
    name: str
    address: str


@dataclass(frozen=True)
class Change:
    """A slot filled with an instance's address (join) or emptied (leave): maint first, so
    streams in flight end and no new one starts."""

    action: str
    server: Server
    address: str
    instance_id: str = ""

    def commands(self, port: int) -> list[str]:
        where = f"{self.server.backend}/{self.server.name}"
        if self.action == "join":
            # A server leaving maintenance is UP at once, before its fleet agent is asked. At
            # weight 0 it takes no request until the agent's first answer sets its weight (a
            # percentage of the configured one) or puts it in maintenance where the instance
            # does not serve the backend's model: no request reaches a host without it.
            return [
                f"set server {where} addr {self.address} port {port}",
                f"set weight {where} 0",
                f"set server {where} state ready",
            ]
        return [f"set server {where} state maint", f"set server {where} addr {EMPTY} port {port}"]

    def line(self) -> str:
        where = f"{self.server.backend}/{self.server.name}"
        if self.action == "join":
            return f"{where}: {self.instance_id} at {self.address} joins"
        return f"{where}: {self.server.address} left the fleet, slot emptied"


def running_gpu_instances(ec2: Any, env: str) -> list[Instance]:
    """The environment's running GPU instances with a private address."""
    found = []
    for instance in running(ec2, "gpu", env):
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        if not instance.get("PrivateIpAddress"):
            continue
        place = {
            "pool": tags.get(TAGS["pool"]) or DEFAULT_POOL,
            "model": tags.get(TAGS["model"], ""),
            "alias": tags.get(TAGS["alias"], ""),
        }
        found.append(
            Instance(
                instance["InstanceId"],
                instance["PrivateIpAddress"],
                place,
                tags.get(TAGS["group"], ""),
                time.time() - instance["LaunchTime"].timestamp(),
            )
        )
    return found


def wanted_members(instances: list[Instance], default_backend: str) -> dict[str, dict[str, str]]:
    """Each backend's members, address -> instance id: every instance in the default backend,
    and in the backends the fleet's one rule (fleet_backends, which the LB's config is
    written by) gives its pool."""
    members = {default_backend: {i.address: i.instance_id for i in instances}}
    by_id = {i.instance_id: i for i in instances}
    for backend, serving in fleet_backends({i.instance_id: i.place for i in instances}).items():
        members[backend] = {by_id[h].address: h for h in serving["hosts"]}
    return members


def servers_state(socket_path: str) -> list[Server]:
    """Every server of every backend, with its address."""
    return [
        Server(backend, name, address)
        for (backend, name), address in haproxy_runtime.server_addresses(socket_path).items()
    ]


@dataclass
class Plan:
    """The changes to make, and the members no free slot is left for."""

    changes: list[Change]
    unplaced: list[str]
    # Group instances down past unhealthy_after, with their seconds down: marked Unhealthy.
    unhealthy: list[tuple[Instance, int]] = field(default_factory=list)
    # The spot fallback's steps: stand in for missing spot, or give a stand-in back.
    fallback: list[Step] = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    """One change the spot fallback makes (an API call or a drain on this LB), and its line."""

    line: str
    make: Callable[[], Any]


def plan(members: dict[str, dict[str, str]], servers: list[Server], slot_prefix: str) -> Plan:
    """The joins and leaves that make each backend's slots hold exactly its members that no
    server of the configuration has (a host loadbalancer.yml since added takes its slot's place)."""
    result = Plan([], [])
    for backend in sorted({s.backend for s in servers}):
        wanted = members.get(backend, {})
        own = [s for s in servers if s.backend == backend]
        slots = [s for s in own if s.name.startswith(slot_prefix)]
        configured = {s.address for s in own if s not in slots}
        leaving = [
            s
            for s in slots
            if s.address != EMPTY and (s.address not in wanted or s.address in configured)
        ]
        kept = {s.address for s in slots if s.address != EMPTY and s not in leaving}
        free = [s for s in slots if s.address == EMPTY or s in leaving]
        result.changes += [Change("leave", s, EMPTY) for s in leaving]
        for address in sorted(set(wanted) - configured - kept):
            if free:
                result.changes.append(Change("join", free.pop(0), address, wanted[address]))
            elif slots:
                result.unplaced.append(
                    f"{backend}: no free slot for {wanted[address]} at {address} "
                    "(haproxy_membership_slots)"
                )
    return result


def unhealthy(
    instances: list[Instance], rows: list[dict[str, str]], backend: str, port: int, after: int
) -> list[tuple[Instance, int]]:
    """The group instances whose servers in the backend (`show stat` rows) are all DOWN, and
    have been for `after` seconds or more: each with the seconds. A slot's `lastchg` may count
    from before the instance took it (a slot left DOWN keeps counting when it is filled), so
    no instance counts as down longer than it has been launched."""
    found = []
    for instance in instances:
        own = [
            r
            for r in rows
            if r.get("pxname") == backend and r.get("addr") == f"{instance.address}:{port}"
        ]
        if not instance.group or not own:
            continue
        if all(r.get("status", "").startswith("DOWN") for r in own):
            down_for = min(min(int(r.get("lastchg") or 0) for r in own), int(instance.age))
            if down_for >= after:
                found.append((instance, down_for))
    return found


def serving_addresses(rows: list[dict[str, str]], backend: str, port: int) -> set[str]:
    """The addresses UP in the backend (`show stat` rows)."""
    return {
        r["addr"].rsplit(":", 1)[0]
        for r in rows
        if r.get("pxname") == backend
        and r.get("status", "").startswith("UP")
        and r.get("addr", "").endswith(f":{port}")
    }


def group_state(
    group: dict[str, Any], members: list[Member], serving: set[str]
) -> spot_fallback.GroupState:
    base, spot_share = spot_fallback.base_and_spot_share(group["MixedInstancesPolicy"])
    spot = [m for m in members if m.lifecycle == "spot"]
    return spot_fallback.GroupState(
        name=group["AutoScalingGroupName"],
        desired=group["DesiredCapacity"],
        max_size=group["MaxSize"],
        base=base,
        own_base=int(group["tags"][spot_fallback.BASE_TAG]),
        spot_share=spot_share,
        spot_live=len(spot),
        spot_serving=sum(1 for m in spot if m.address in serving),
    )


def tag(ec2: Any, instance_id: str, key: str, value: str) -> Callable[[], Any]:
    return lambda: ec2.create_tags(Resources=[instance_id], Tags=[{"Key": key, "Value": value}])


def stand_in_steps(
    aws: dict[str, Any], group: dict[str, Any], state: spot_fallback.GroupState, wanted: int
) -> list[Step]:
    """Raise the base and the desired capacity together: `wanted` stand-ins in all."""
    more = wanted - state.fallback
    return [
        Step(
            f"{state.name}: {state.spot_short} spot instance(s) missing, {more} on-demand "
            f"standing in (base {state.base} -> {state.base + more}, desired "
            f"{state.desired} -> {state.desired + more})",
            lambda: aws["autoscaling"].update_auto_scaling_group(
                AutoScalingGroupName=state.name,
                DesiredCapacity=state.desired + more,
                MixedInstancesPolicy=spot_fallback.with_base(state.base + more),
            ),
        )
    ]


def give_back_steps(
    aws: dict[str, Any],
    config: dict[str, Any],
    group: dict[str, Any],
    leaving: Member,
    servers: list[Server],
    rows: list[dict[str, str]],
    lbs: list[str],
) -> list[Step]:
    """The next steps of giving a stand-in back: drain it here, say it is drained here, once
    every LB has, lower the base and terminate it with the desired capacity decremented. Each
    step's effect is in the API before the next is made, so a pass that stops between two
    is continued by the next, here or on another LB."""
    ec2, name, iid = aws["ec2"], group["AutoScalingGroupName"], leaving.instance_id
    terminate = Step(
        f"{name}: {iid} at {leaving.address} given back, terminated",
        lambda: aws["autoscaling"].terminate_instance_in_auto_scaling_group(
            InstanceId=iid, ShouldDecrementDesiredCapacity=True
        ),
    )
    if leaving.tags[spot_fallback.GIVE_BACK_TAG] == spot_fallback.RELEASED:
        return [terminate]
    own = [s for s in servers if s.address == leaving.address]
    stats = {(r.get("pxname"), r.get("svname")): r for r in rows}
    here = [stats.get((s.backend, s.name), {}) for s in own]
    steps = [
        Step(
            f"{s.backend}/{s.name}: {iid} at {leaving.address} draining, to be given back",
            lambda where=f"{s.backend}/{s.name}": haproxy_runtime.command(
                config["socket"], f"set server {where} state drain"
            ),
        )
        for s, row in zip(own, here, strict=True)
        if not row.get("status", "").startswith(("DRAIN", "MAINT"))
    ]
    mine = spot_fallback.DRAINED_TAG_PREFIX + config["instance_id"]
    idle = not steps and all(
        int(row.get("scur") or 0) == 0 and int(row.get("lastchg") or 0) >= DRAIN_SETTLE_SECONDS
        for row in here
    )
    drained = {key for key in leaving.tags if key.startswith(spot_fallback.DRAINED_TAG_PREFIX)}
    if idle and mine not in drained:
        steps.append(Step(f"{name}: {iid} has no stream on this LB", tag(ec2, iid, mine, "yes")))
        drained.add(mine)
    if all(spot_fallback.DRAINED_TAG_PREFIX + lb in drained for lb in lbs):
        base, _spot_share = spot_fallback.base_and_spot_share(group["MixedInstancesPolicy"])
        steps += [
            Step(
                f"{name}: {iid} drained on every LB; on-demand base {base} -> {base - 1}",
                lambda: aws["autoscaling"].update_auto_scaling_group(
                    AutoScalingGroupName=name,
                    MixedInstancesPolicy=spot_fallback.with_base(base - 1),
                ),
            ),
            Step(
                f"{name}: {iid} released",
                tag(ec2, iid, spot_fallback.GIVE_BACK_TAG, spot_fallback.RELEASED),
            ),
            terminate,
        ]
    return steps


def newest_on_demand(members: list[Member]) -> Member | None:
    """The stand-in to give back: by launch time, so that every LB chooses the same one."""
    return max(
        (m for m in members if m.lifecycle != "spot"), key=lambda m: m.launched, default=None
    )


def fallback_steps(
    config: dict[str, Any],
    aws: dict[str, Any],
    servers: list[Server],
    rows: list[dict[str, str]],
    short_since: dict[str, float],
) -> list[Step]:
    """Each pool group's next spot fallback steps. A group giving a stand-in back does only
    that until it is done; one short of spot for spot_fallback_after seconds gets stand-ins;
    one whose spot all serves gives one back."""
    groups = pool_groups(aws["autoscaling"], config["env"], spot_fallback.BASE_TAG)
    members = group_members(aws["ec2"], groups)
    serving = serving_addresses(rows, config["default_backend"], config["port"])
    lbs: list[str] | None = None
    steps: list[Step] = []
    now = time.monotonic()
    for group in groups:
        own = [members[i["InstanceId"]] for i in group["Instances"] if i["InstanceId"] in members]
        leaving = [m for m in own if spot_fallback.GIVE_BACK_TAG in m.tags]
        if leaving:
            # Every running LB must drain the stand-in before it is given back.
            if lbs is None:
                lbs = [i["InstanceId"] for i in running(aws["ec2"], "lb", config["env"])]
            steps += give_back_steps(aws, config, group, leaving[0], servers, rows, lbs)
            continue
        state = group_state(group, own, serving)
        if state.spot_short:
            short_since.setdefault(state.name, now)
        else:
            short_since.pop(state.name, None)
        short_for = now - short_since.get(state.name, now)
        wanted = spot_fallback.fallback_wanted(state, short_for, config["spot_fallback_after"])
        if wanted > state.fallback:
            steps += stand_in_steps(aws, group, state, wanted)
        elif spot_fallback.ready_to_give_back(state):
            chosen = newest_on_demand(own)
            if chosen is not None:
                steps.append(
                    Step(
                        f"{state.name}: its spot serves again; {chosen.instance_id} at "
                        f"{chosen.address}, the newest on demand, to be given back",
                        tag(
                            aws["ec2"],
                            chosen.instance_id,
                            spot_fallback.GIVE_BACK_TAG,
                            spot_fallback.DRAINING,
                        ),
                    )
                )
    return steps


def load_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"gpufleet-lb-membership: cannot read {path}: {exc}") from None
    missing = [key for key in REQUIRED if key not in config]
    if int(config.get("spot_fallback_after") or 0) and not config.get("instance_id"):
        missing.append("instance_id (the LB's own, which the spot fallback's drain needs)")
    if missing:
        raise SystemExit(f"gpufleet-lb-membership: {path} lacks {', '.join(missing)}")
    return config


def sync(
    config: dict[str, Any],
    aws: dict[str, Any],
    dry_run: bool = False,
    short_since: dict[str, float] | None = None,
) -> Plan:
    """One pass; an EC2 or runtime API failure raises before any change is made."""
    instances = running_gpu_instances(aws["ec2"], config["env"])
    members = wanted_members(instances, config["default_backend"])
    servers = servers_state(config["socket"])
    result = plan(members, servers, SLOT_PREFIX)
    after = int(config.get("unhealthy_after") or 0)
    fallback_after = int(config.get("spot_fallback_after") or 0)
    rows: list[dict[str, str]] = []
    if after or fallback_after:
        rows = haproxy_runtime.parse_stat(haproxy_runtime.command(config["socket"], "show stat"))
    if after:
        result.unhealthy = unhealthy(
            instances, rows, config["default_backend"], config["port"], after
        )
    if fallback_after:
        short_since = {} if short_since is None else short_since
        result.fallback = fallback_steps(config, aws, servers, rows, short_since)
    if not dry_run:
        for change in result.changes:
            for command in change.commands(config["port"]):
                haproxy_runtime.command(config["socket"], command)
        for instance, _down_for in result.unhealthy:
            aws["autoscaling"].set_instance_health(
                InstanceId=instance.instance_id,
                HealthStatus="Unhealthy",
                ShouldRespectGracePeriod=True,
            )
        for step in result.fallback:
            step.make()
    return result


@dataclass
class Memory:
    """What the service keeps between passes, so each thing is said once, and a group's
    spot shortage is timed: the instances already said to be marked Unhealthy, the members
    last said to have no free slot, and when each group was first seen short of spot."""

    marked: set[str] = field(default_factory=set)
    unplaced: list[str] = field(default_factory=list)
    short_since: dict[str, float] = field(default_factory=dict)


def one_pass(
    config: dict[str, Any], aws: dict[str, Any], dry_run: bool, memory: Memory | None = None
) -> str:
    """Sync once and print what changed; the failure's line when one stopped it, else ''.
    An instance is marked Unhealthy at every pass while it is down (a group ignores the mark
    in its grace period), and said once; a member with no free slot is said when it first
    has none."""
    memory = Memory() if memory is None else memory
    try:
        result = sync(config, aws, dry_run, memory.short_since)
    except (BotoCoreError, ClientError) as exc:
        return f"EC2 API failed, servers left as they were: {exc}"
    except haproxy_runtime.RuntimeApiError as exc:
        return f"{exc}; servers left as they were"
    for change in result.changes:
        print(("would: " if dry_run else "") + change.line(), flush=True)
    for line in result.unplaced:
        if line not in memory.unplaced:
            print(line, flush=True)
    memory.unplaced = result.unplaced
    for instance, down_for in result.unhealthy:
        if instance.instance_id in memory.marked:
            continue
        memory.marked.add(instance.instance_id)
        print(
            ("would: " if dry_run else "")
            + f"{instance.instance_id} at {instance.address}: DOWN for {down_for} s in "
            f"{config['default_backend']}, marked Unhealthy in {instance.group} to be replaced",
            flush=True,
        )
    for step in result.fallback:
        print(("would: " if dry_run else "") + step.line, flush=True)
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--every", type=float, default=0, help="seconds between passes; 0: once")
    parser.add_argument("--dry-run", action="store_true", help="say what would change, only")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    endpoint = config.get("endpoint_url") or None
    aws = {
        service: boto3.client(service, region_name=config["region"], endpoint_url=endpoint)
        for service in ("ec2", "autoscaling")
    }
    failing, memory = "", Memory()
    while True:
        failure = one_pass(config, aws, args.dry_run, memory)
        # A failure is said once, and its end, not every few seconds.
        if failure and failure != failing:
            print(failure, flush=True)
        elif failing and not failure:
            print("EC2 and HAProxy answer again; servers in step", flush=True)
        failing = failure
        if not args.every:
            return 1 if failure else 0
        time.sleep(args.every)


if __name__ == "__main__":
    sys.exit(main())
