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
from dataclasses import dataclass
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
                found.append(Instance(instance["InstanceId"], instance["PrivateIpAddress"], place))
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


def load_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"gpufleet-lb-membership: cannot read {path}: {exc}") from None
    missing = [key for key in REQUIRED if key not in config]
    if missing:
        raise SystemExit(f"gpufleet-lb-membership: {path} lacks {', '.join(missing)}")
    return config


def sync(config: dict[str, Any], ec2: Any, dry_run: bool = False) -> Plan:
    """One pass; an EC2 or runtime API failure raises before any change is made."""
    instances = running_gpu_instances(ec2, config["env"])
    members = wanted_members(instances, config["default_backend"])
    servers = servers_state(config["socket"])
    result = plan(members, servers, SLOT_PREFIX)
    if not dry_run:
        for change in result.changes:
            for command in change.commands(config["port"]):
                haproxy_runtime.command(config["socket"], command)
    return result


def one_pass(config: dict[str, Any], ec2: Any, dry_run: bool) -> str:
    """Sync once and print what changed; the failure's line when one stopped it, else ''."""
    try:
        result = sync(config, ec2, dry_run)
    except (BotoCoreError, ClientError) as exc:
        return f"EC2 API failed, servers left as they were: {exc}"
    except haproxy_runtime.RuntimeApiError as exc:
        return f"{exc}; servers left as they were"
    for change in result.changes:
        print(("would: " if dry_run else "") + change.line(), flush=True)
    for line in result.unplaced:
        print(line, flush=True)
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--every", type=float, default=0, help="seconds between passes; 0: once")
    parser.add_argument("--dry-run", action="store_true", help="say what would change, only")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    endpoint = config.get("endpoint_url") or None
    ec2 = boto3.client("ec2", region_name=config["region"], endpoint_url=endpoint)
    failing = ""
    while True:
        failure = one_pass(config, ec2, args.dry_run)
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
