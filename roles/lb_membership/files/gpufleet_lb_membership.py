#!/usr/bin/python3
"""gpufleet-lb-membership: keep an LB's backends in step with the fleet the EC2 API lists.

Runs as a service on each LB host, one pass every few seconds (--every). The running GPU
instances of the LB's environment (tags gpufleet:role=gpu, gpufleet:env) are read from the
EC2 API with the host's instance role; each belongs in the default backend and in the
backends of the names its pool serves (its models and alias), by the same rule the LB's
config is written by (fleet_backends). An instance no
server of such a backend has yet takes a free `server-template` slot there (address set,
state ready: it takes traffic once its fleet agent's check says so); a slot whose instance
is no longer listed is put in maintenance and emptied. Servers the configuration names
(the inventory's hosts at the last loadbalancer.yml) are left to it.

An instance of an Auto Scaling group whose servers in the default backend have all been DOWN
(Ollama not answering its checks) for unhealthy_after seconds or more, as HAProxy's own
`lastchg` counts them, is marked Unhealthy in its group (respecting the group's grace period
after launch), which replaces it; HAProxy already sends it nothing. A host in maintenance or
draining is not DOWN, and is never marked.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import gpufleet_haproxy_runtime as haproxy_runtime
from botocore.exceptions import BotoCoreError, ClientError
from gpufleet_fleet_backends import fleet_backends

CONFIG = Path("/etc/gpufleet/lb-membership.json")
# An empty slot's address, as the haproxy role's server-template starts it.
EMPTY = "0.0.0.0"  # noqa: S104
# The haproxy role's server-template names its slots gpufleet-slot1, gpufleet-slot2, ...
SLOT_PREFIX = "gpufleet-slot"
TAGS = {
    "role": "gpufleet:role",
    "env": "gpufleet:env",
    "pool": "gpufleet:pool",
    "model": "gpufleet:model",
    "alias": "gpufleet:alias",
    "group": "aws:autoscaling:groupName",
}
# A GPU host without a pool tag is in this pool, as the inventory's fleet filters read it.
DEFAULT_POOL = "default"
REQUIRED = ("region", "env", "socket", "default_backend", "port")


@dataclass(frozen=True)
class Instance:
    """A running GPU instance: where it answers, and its place in the fleet (pool, model,
    alias) as its tags say."""

    instance_id: str
    address: str
    place: dict[str, str]
    # Its Auto Scaling group, empty when it is in none.
    group: str = ""


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
            return [
                f"set server {where} addr {self.address} port {port}",
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
    filters = [
        {"Name": f"tag:{TAGS['role']}", "Values": ["gpu"]},
        {"Name": f"tag:{TAGS['env']}", "Values": [env]},
        {"Name": "instance-state-name", "Values": ["running"]},
    ]
    found = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
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
    """Every server of every backend: `show servers state` rows (be_id be_name srv_id
    srv_name srv_addr ...)."""
    rows = haproxy_runtime.command(socket_path, "show servers state").splitlines()
    return [
        Server(fields[1], fields[3], fields[4])
        for fields in (row.split() for row in rows)
        if len(fields) > 4 and not fields[0].startswith("#")
    ]


@dataclass
class Plan:
    """The changes to make, and the members no free slot is left for."""

    changes: list[Change]
    unplaced: list[str]
    # Group instances down past unhealthy_after, with their seconds down: marked Unhealthy.
    unhealthy: list[tuple[Instance, int]] = field(default_factory=list)


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
    have been for `after` seconds or more: each with the seconds."""
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
            down_for = min(int(r.get("lastchg") or 0) for r in own)
            if down_for >= after:
                found.append((instance, down_for))
    return found


def load_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"gpufleet-lb-membership: cannot read {path}: {exc}") from None
    missing = [key for key in REQUIRED if key not in config]
    if missing:
        raise SystemExit(f"gpufleet-lb-membership: {path} lacks {', '.join(missing)}")
    return config


def sync(config: dict[str, Any], aws: dict[str, Any], dry_run: bool = False) -> Plan:
    """One pass; an EC2 or runtime API failure raises before any change is made."""
    instances = running_gpu_instances(aws["ec2"], config["env"])
    members = wanted_members(instances, config["default_backend"])
    servers = servers_state(config["socket"])
    result = plan(members, servers, SLOT_PREFIX)
    after = int(config.get("unhealthy_after") or 0)
    if after:
        rows = haproxy_runtime.parse_stat(haproxy_runtime.command(config["socket"], "show stat"))
        result.unhealthy = unhealthy(
            instances, rows, config["default_backend"], config["port"], after
        )
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
    return result


def one_pass(
    config: dict[str, Any], aws: dict[str, Any], dry_run: bool, marked: set[str] | None = None
) -> str:
    """Sync once and print what changed; the failure's line when one stopped it, else ''.
    An instance is marked Unhealthy at every pass while it is down (a group ignores the mark
    in its grace period), and said once: `marked` holds those said."""
    marked = set() if marked is None else marked
    try:
        result = sync(config, aws, dry_run)
    except (BotoCoreError, ClientError) as exc:
        return f"EC2 API failed, servers left as they were: {exc}"
    except haproxy_runtime.RuntimeApiError as exc:
        return f"{exc}; servers left as they were"
    for change in result.changes:
        print(("would: " if dry_run else "") + change.line(), flush=True)
    for line in result.unplaced:
        print(line, flush=True)
    for instance, down_for in result.unhealthy:
        if instance.instance_id in marked:
            continue
        marked.add(instance.instance_id)
        print(
            ("would: " if dry_run else "")
            + f"{instance.instance_id} at {instance.address}: DOWN for {down_for} s in "
            f"{config['default_backend']}, marked Unhealthy in {instance.group} to be replaced",
            flush=True,
        )
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
    failing, marked = "", set()
    while True:
        failure = one_pass(config, aws, args.dry_run, marked)
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
