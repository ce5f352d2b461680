#!/usr/bin/python3
"""gpufleet-scaler: each pool's Auto Scaling group sized on its LB queue.

Every scaler_interval seconds, for each pool of its config:

- reads the queue (HAProxy's qcur) and the streams in flight (scur) of the pool's model and
  alias backends on every running LB of the environment, from each LB's read-only runtime
  API, and the pool's group from the Auto Scaling API;
- decides by the rule of module_utils/scaling.py (a window above the scale-out threshold
  adds 1 or 2, one below the scale-in threshold removes 1, within min, max, the fleet's cap
  and budget) and says each new decision in one journal line (inputs, decision, reason);
- grows the group by setting its desired capacity;
- shrinks it without cutting a stream: the instance to remove (the oldest spot instance;
  with none, the newest on-demand one above the group's on-demand base) is tagged
  DRAIN_TAG, which its fleet agent reads from the instance metadata and drains on; once no
  LB has a stream or a queued request on it, it is terminated in its group with the desired
  capacity decremented. A drain that does not end in drain_timeout seconds, or a queue back
  above the scale-out threshold, gives the instance back to service instead;
- adds one on-demand instance (the desired capacity and the on-demand base raised together,
  the group's count of error backups tagged) when more than the pool's error_ratio of its
  responses were 5xx over its scale-out window while every instance serves; a later
  scale-in removes such a backup first, giving its base back;
- completes the termination lifecycle action of an instance its group is terminating by
  itself (Terminating:Wait: the agent drains on the instance's target lifecycle state) once
  no LB has a stream on it.

Everything it acts on is read back from the APIs at every pass: a scaler restarted in a
scale-in finds the tagged instance and finishes it, and chooses no second one meanwhile.
When the EC2 API or an LB does not answer, it holds every pool (nothing grows or shrinks
blind) and restarts their windows. Its decisions and inputs are Prometheus metrics at
/metrics on the config's metrics address (scaler_metrics_address and _port).

    gpufleet-scaler [--config /etc/gpufleet/scaler.json] [--once] [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import boto3
import gpufleet_haproxy_runtime as haproxy_runtime
import gpufleet_scaling as scaling
import gpufleet_spot_fallback as spot_fallback
from botocore.exceptions import BotoCoreError, ClientError
from gpufleet_fleet_backends import fleet_backend, fleet_host_backends
from gpufleet_fleet_instances import TAGS, Member, group_members, pool_groups, running

CONFIG = Path("/etc/gpufleet/scaler.json")
# The tag that asks an instance's fleet agent to drain it (it reads its tags from IMDS);
# its value says why and since when: "scale-in since 2026-12-07T17:00:00Z".
DRAIN_TAG = "gpufleet:drain"
# A group's count of on-demand instances the scaler added for errors (above its base).
ERROR_BACKUP_TAG = "gpufleet:error-backup"
# The drain tag's value of an error backup leaving, before and after its base is given back.
BACKUP_LEAVING, BACKUP_RELEASED = "error backup", "error backup released"
RESPONSE_FIELDS = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")
TERMINATING_WAIT = "Terminating:Wait"
TERMINATING_HOOK = "autoscaling:EC2_INSTANCE_TERMINATING"
REQUIRED = ("region", "env", "read_port", "pools", "interval")
# The exit status of a refused config (EX_CONFIG): its unit does not restart on it.
REFUSED = 78
# A server's states in which HAProxy sends it no new request.
NOT_TAKING = ("DRAIN", "MAINT", "NOLB")


def say(line: str) -> None:
    print(line, flush=True)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def drain_since(value: str) -> float:
    """When a DRAIN_TAG value's drain began, as a timestamp (now when it does not say)."""
    try:
        return (
            datetime.strptime(value.rsplit(" ", 1)[-1], "%Y-%m-%dT%H:%M:%SZ")
            .replace(tzinfo=UTC)
            .timestamp()
        )
    except ValueError:
        return time.time()


@dataclass(frozen=True)
class LbStats:
    """Every LB's `show stat` rows, read in one pass."""

    rows: dict[str, list[dict[str, str]]]

    def backend_sum(self, backends: list[str], field_name: str) -> int:
        return sum(
            int(row.get(field_name) or 0)
            for rows in self.rows.values()
            for row in rows
            if row.get("svname") == "BACKEND" and row.get("pxname") in backends
        )

    def servers_of(self, address: str) -> dict[str, list[dict[str, str]]]:
        """Each LB's server rows of an address (any port), by LB."""
        return {
            lb: [r for r in rows if r.get("address") == address] for lb, rows in self.rows.items()
        }

    def serving_everywhere(self, address: str, backend: str) -> bool:
        """UP in the backend on every LB, its agent having answered (a slot just filled is UP
        at weight 0 until then; a cold host's 10 % may show as weight 0 too, and serves)."""
        return all(
            any(r.get("pxname") == backend and haproxy_runtime.serving(r) for r in own)
            for own in self.servers_of(address).values()
        )

    def in_flight(self, address: str) -> int:
        """Streams and queued requests on the address's servers, on every LB; -1 while any
        LB still sends it new requests."""
        total = 0
        for own in self.servers_of(address).values():
            for row in own:
                if not row.get("status", "").startswith(NOT_TAKING):
                    return -1
                total += int(row.get("scur") or 0) + int(row.get("qcur") or 0)
        return total


def read_lbs(ec2: Any, env: str, port: int) -> LbStats:
    """`show stat` of every running LB of the environment, from its read-only runtime API."""
    rows = {}
    for lb in running(ec2, "lb", env):
        where = f"{lb['PrivateIpAddress']}:{port}"
        stats = haproxy_runtime.parse_stat(haproxy_runtime.command(where, "show stat", timeout=5.0))
        # The read-only level leaves addresses out of `show stat`: they come from the state.
        addresses = haproxy_runtime.server_addresses(where)
        for row in stats:
            row["address"] = addresses.get((row.get("pxname", ""), row.get("svname", "")), "")
        rows[lb["InstanceId"]] = stats
    if not rows:
        raise haproxy_runtime.RuntimeApiError(f"no running LB instance of env {env} to read")
    return LbStats(rows)


@dataclass
class PoolView:
    """A pool's group and what the pass read of it."""

    pool: scaling.Pool
    group: dict[str, Any]
    members: list[Member]
    backends: list[str]
    queue: int = 0
    streams: int = 0
    serving: int = 0
    # HAProxy's cumulative 5xx and responses for the pool's backends, summed over the LBs.
    errors: int = 0
    responses: int = 0

    @property
    def name(self) -> str:
        return self.group["AutoScalingGroupName"]

    @property
    def fallback(self) -> int:
        """On-demand stand-ins the spot fallback added (desired above the pool's own ask)."""
        base, _share = spot_fallback.base_and_spot_share(self.group["MixedInstancesPolicy"])
        return max(0, base - int(self.group["tags"][spot_fallback.BASE_TAG]))

    @property
    def desired(self) -> int:
        """The pool's own desired capacity, without the spot fallback's stand-ins."""
        return self.group["DesiredCapacity"] - self.fallback

    @property
    def draining(self) -> Member | None:
        return next((m for m in self.members if DRAIN_TAG in m.tags), None)

    @property
    def giving_back(self) -> bool:
        return any(spot_fallback.GIVE_BACK_TAG in m.tags for m in self.members)

    @property
    def base(self) -> int:
        return spot_fallback.base_and_spot_share(self.group["MixedInstancesPolicy"])[0]

    @property
    def error_backups(self) -> int:
        return int(self.group["tags"].get(ERROR_BACKUP_TAG) or 0)


def pool_backends(group: dict[str, Any]) -> list[str]:
    """The backends the pool's instances serve in: its model's and its alias's."""
    tags = group["tags"]
    return fleet_host_backends(
        {"model": tags.get(TAGS["model"], ""), "alias": tags.get(TAGS["alias"], "")}
    )


def env_groups(autoscaling: Any, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The environment's pool groups, read once a pass."""
    return pool_groups(autoscaling, config["env"], spot_fallback.BASE_TAG)


def find_pools(
    env: list[dict[str, Any]], config: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each configured pool's group among the environment's, and a problem line for each
    pool not found or whose settings its group cannot take."""
    groups = {g["tags"].get(TAGS["pool"], ""): g for g in env}
    found, problems = {}, []
    for name, pool in pools_of(config).items():
        group = groups.get(name)
        if group is None:
            problems.append(
                f"scaler_pools.{name}: no pool group in EC2 ({config['region']}) tagged "
                f"{TAGS['pool']}={name}, {TAGS['env']}={config['env']} (capacity.yml makes it)"
            )
            continue
        if pool.max > group["MaxSize"] or pool.min < group["MinSize"]:
            problems.append(
                f"scaler_pools.{name}: min {pool.min} and max {pool.max} must lie within its "
                f"group's MinSize {group['MinSize']} and MaxSize {group['MaxSize']} "
                "(capacity_pools' min and max)"
            )
        prices = config.get("hourly_prices") or {}
        unpriced = sorted(set(group_types(group)) - set(prices))
        if config.get("max_dollars_per_hour") and unpriced:
            problems.append(
                f"scaler_hourly_prices lacks {', '.join(unpriced)}, which pool {name} runs on"
            )
        found[name] = group
    return found, problems


def group_types(group: dict[str, Any]) -> list[str]:
    """The instance types the group may launch (its mixed instances policy's overrides)."""
    overrides = group["MixedInstancesPolicy"]["LaunchTemplate"].get("Overrides", [])
    return [o["InstanceType"] for o in overrides if "InstanceType" in o]


def pools_of(config: dict[str, Any]) -> dict[str, scaling.Pool]:
    defaults = config.get("pool_defaults") or {}
    return {
        name: scaling.pool_settings(name, given, defaults)
        for name, given in sorted(config["pools"].items())
    }


def read_pools(
    aws: dict[str, Any], config: dict[str, Any], lbs: LbStats, env: list[dict[str, Any]]
) -> dict[str, PoolView]:
    groups, problems = find_pools(env, config)
    if problems:
        raise LookupError("; ".join(problems))
    members = group_members(aws["ec2"], list(groups.values()))
    views = {}
    for name, pool in pools_of(config).items():
        group = groups[name]
        own = [members[i["InstanceId"]] for i in group["Instances"] if i["InstanceId"] in members]
        view = PoolView(pool, group, own, pool_backends(group))
        view.queue = lbs.backend_sum(view.backends, "qcur")
        view.streams = lbs.backend_sum(view.backends, "scur")
        view.errors = lbs.backend_sum(view.backends, "hrsp_5xx")
        view.responses = sum(lbs.backend_sum(view.backends, f) for f in RESPONSE_FIELDS)
        model_backend = fleet_backend(group["tags"].get(TAGS["model"], ""))
        view.serving = sum(
            1
            for m in own
            if m is not view.draining and lbs.serving_everywhere(m.address, model_backend)
        )
        views[name] = view
    return views


def room(config: dict[str, Any], views: dict[str, PoolView], gpu_running: list[dict]) -> dict:
    """Instances each pool may still add within the fleet's instance cap and dollars per hour
    (a pending instance costs its pool's dearest type)."""
    prices = {k: float(v) for k, v in (config.get("hourly_prices") or {}).items()}
    in_groups = {m.instance_id for v in views.values() for m in v.members}
    loose = [i for i in gpu_running if i["InstanceId"] not in in_groups]
    instances = len(loose) + sum(v.group["DesiredCapacity"] for v in views.values())
    spend = sum(prices.get(i.get("InstanceType", ""), 0.0) for i in loose)
    for view in views.values():
        dearest = max((prices.get(t, 0.0) for t in group_types(view.group)), default=0.0)
        spend += sum(prices.get(m.instance_type, dearest) for m in view.members)
        spend += max(0, view.group["DesiredCapacity"] - len(view.members)) * dearest
    cap = int(config.get("max_instances") or 0)
    budget = float(config.get("max_dollars_per_hour") or 0)
    found = {"instances": instances, "dollars_per_hour": round(spend, 4)}
    for name, view in views.items():
        left = cap - instances if cap else 1_000_000
        dearest = max((prices.get(t, 0.0) for t in group_types(view.group)), default=0.0)
        if budget and dearest:
            left = min(left, int((budget - spend) // dearest))
        found[name] = left
    return found


def removal_choice(view: PoolView) -> Member | None:
    """The instance a scale-in removes: an error backup first (the newest on-demand, its base
    given back with it); else the oldest spot instance; with none, the newest on-demand one
    above the group's on-demand base (the base and the spot fallback's stand-ins are never
    chosen)."""
    candidates = [m for m in view.members if spot_fallback.GIVE_BACK_TAG not in m.tags]
    on_demand = [m for m in candidates if m.lifecycle != "spot"]
    if view.error_backups and on_demand:
        return max(on_demand, key=lambda m: m.launched)
    spot = [m for m in candidates if m.lifecycle == "spot"]
    if spot:
        return min(spot, key=lambda m: m.launched)
    if len(on_demand) > view.base:
        return max(on_demand, key=lambda m: m.launched)
    return None


def group_tags(view: PoolView, tags: dict[str, str]) -> list[dict[str, Any]]:
    """The group tags' update (the pool's base and the error backups are not propagated)."""
    return [
        {
            "ResourceId": view.name,
            "ResourceType": "auto-scaling-group",
            "Key": key,
            "Value": value,
            "PropagateAtLaunch": False,
        }
        for key, value in tags.items()
    ]


def add_error_backup(aws: dict[str, Any], view: PoolView) -> int:
    """One on-demand instance more: the desired capacity and the on-demand base raised in one
    call, the pool's own base (BASE_TAG) with it, so the spot fallback does not take it for a
    stand-in, and the group's count of error backups. The new desired capacity."""
    desired = view.group["DesiredCapacity"] + 1
    aws["autoscaling"].update_auto_scaling_group(
        AutoScalingGroupName=view.name,
        DesiredCapacity=desired,
        MixedInstancesPolicy=spot_fallback.with_base(view.base + 1),
    )
    own_base = int(view.group["tags"][spot_fallback.BASE_TAG])
    aws["autoscaling"].create_or_update_tags(
        Tags=group_tags(
            view,
            {
                spot_fallback.BASE_TAG: str(own_base + 1),
                ERROR_BACKUP_TAG: str(view.error_backups + 1),
            },
        )
    )
    return desired


def release_error_backup(aws: dict[str, Any], view: PoolView, member: Member) -> None:
    """Give an error backup's base back before it is terminated; the drain tag says it is
    done, so a restart between this and the termination does not do it twice."""
    own_base = int(view.group["tags"][spot_fallback.BASE_TAG])
    aws["autoscaling"].update_auto_scaling_group(
        AutoScalingGroupName=view.name,
        MixedInstancesPolicy=spot_fallback.with_base(max(0, view.base - 1)),
    )
    aws["autoscaling"].create_or_update_tags(
        Tags=group_tags(
            view,
            {
                spot_fallback.BASE_TAG: str(max(0, own_base - 1)),
                ERROR_BACKUP_TAG: str(max(0, view.error_backups - 1)),
            },
        )
    )
    value = member.tags[DRAIN_TAG].replace(BACKUP_LEAVING, BACKUP_RELEASED)
    aws["ec2"].create_tags(
        Resources=[member.instance_id], Tags=[{"Key": DRAIN_TAG, "Value": value}]
    )


@dataclass(frozen=True)
class Outcome:
    """A pool's pass: its journal line, the action and kind counted in the metrics, and
    whether its windows start over (its size changed, or a scale-in ended)."""

    line: str
    action: str
    kind: str
    restart: bool = False


@dataclass
class Memory:
    """What the scaler keeps between passes: each pool's clock and last decision said, and
    the metrics served. All of it may be lost: a restart only restarts the windows."""

    clocks: dict[str, scaling.Clock] = field(default_factory=dict)
    errors: dict[str, scaling.ErrorWindow] = field(default_factory=dict)
    said: dict[str, str] = field(default_factory=dict)
    failing: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    decisions: dict[tuple[str, str, str], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def inputs_line(view: PoolView, extra: str = "") -> str:
    return (
        f"pool={view.pool.name} group={view.name} queue={view.queue} streams={view.streams} "
        f"desired={view.desired} serving={view.serving} min={view.pool.min} "
        f"max={view.pool.max}{extra}"
    )


def drain_step(
    aws: dict[str, Any],
    config: dict[str, Any],
    view: PoolView,
    member: Member,
    lbs: LbStats,
    dry_run: bool,
) -> Outcome:
    """The next step of a scale-in under way: terminate the drained instance, give it back
    when its drain took too long or the queue is back above the scale-out threshold, or wait."""
    waited = time.time() - drain_since(member.tags[DRAIN_TAG])
    left = lbs.in_flight(member.address)
    prefix, where = ("would: " if dry_run else ""), f"{member.instance_id} at {member.address}"
    if left == 0:
        value = member.tags[DRAIN_TAG]
        if not dry_run:
            if BACKUP_LEAVING in value and BACKUP_RELEASED not in value:
                release_error_backup(aws, view, member)
            aws["autoscaling"].terminate_instance_in_auto_scaling_group(
                InstanceId=member.instance_id, ShouldDecrementDesiredCapacity=True
            )
        reason = f"{where} drained on every LB after {waited:.0f} s, terminated"
        return Outcome(
            f'{prefix}{inputs_line(view)} decision=in reason="{reason}"', "in", "drained", True
        )
    why = ""
    if view.queue > view.pool.scale_out_queue:
        why = f"queue {view.queue} back above {view.pool.scale_out_queue}"
    elif waited > float(config["drain_timeout"]):
        why = f"{max(left, 0)} stream(s) left after {waited:.0f} s (scaler_drain_timeout)"
    if why:
        if not dry_run:
            aws["ec2"].delete_tags(Resources=[member.instance_id], Tags=[{"Key": DRAIN_TAG}])
        reason = f"scale-in of {where} given up: {why}; it serves again"
        return Outcome(
            f'{prefix}{inputs_line(view)} decision=hold reason="{reason}"',
            "hold",
            "drain_given_up",
            True,
        )
    state = "still taking requests" if left < 0 else f"{left} stream(s) left"
    reason = f"draining {where} for scale-in: {state}"
    return Outcome(f'{inputs_line(view)} decision=hold reason="{reason}"', "hold", "draining")


def act(aws: dict[str, Any], view: PoolView, decision: scaling.Decision, dry_run: bool) -> Outcome:
    """Make a pool's decision."""
    prefix = "would: " if dry_run else ""
    line = f"{inputs_line(view)} decision={decision.action}"
    if decision.on_demand:
        desired = view.group["DesiredCapacity"] + decision.change
        if not dry_run:
            add_error_backup(aws, view)
        return Outcome(
            f'{prefix}{line}+1 reason="{decision.reason}" on-demand base {view.base + 1}, '
            f"group desired {desired}",
            "out",
            decision.kind,
            True,
        )
    if decision.change > 0:
        desired = view.group["DesiredCapacity"] + decision.change
        if not dry_run:
            aws["autoscaling"].set_desired_capacity(
                AutoScalingGroupName=view.name, DesiredCapacity=desired, HonorCooldown=False
            )
        return Outcome(
            f'{prefix}{line}+{decision.change} reason="{decision.reason}" group desired {desired}',
            "out",
            decision.kind,
            True,
        )
    if decision.change < 0:
        chosen = removal_choice(view)
        if chosen is None:
            reason = f"{decision.reason}; nothing above the on-demand base"
            return Outcome(
                f'{inputs_line(view)} decision=hold reason="{reason}"', "hold", "base_only"
            )
        why = f" ({BACKUP_LEAVING})" if view.error_backups and chosen.lifecycle != "spot" else ""
        if not dry_run:
            aws["ec2"].create_tags(
                Resources=[chosen.instance_id],
                Tags=[{"Key": DRAIN_TAG, "Value": f"scale-in since {now_iso()}{why}"}],
            )
        return Outcome(
            f'{prefix}{line}-1 reason="{decision.reason}" draining {chosen.instance_id} at '
            f"{chosen.address} ({chosen.lifecycle})",
            "in",
            decision.kind,
            True,
        )
    return Outcome(f'{line} reason="{decision.reason}"', "hold", decision.kind)


def lifecycle_steps(
    aws: dict[str, Any], groups: list[dict[str, Any]], lbs: LbStats, dry_run: bool
) -> list[str]:
    """Complete the termination lifecycle action of each pool instance in Terminating:Wait
    that no LB has a stream on (its fleet agent drained it on the target lifecycle state)."""
    waiting = group_members(aws["ec2"], groups, states=(TERMINATING_WAIT,))
    lines = []
    for group in groups:
        own = [i["InstanceId"] for i in group["Instances"] if i["InstanceId"] in waiting]
        if not own:
            continue
        hooks = aws["autoscaling"].describe_lifecycle_hooks(
            AutoScalingGroupName=group["AutoScalingGroupName"]
        )["LifecycleHooks"]
        names = [
            h["LifecycleHookName"] for h in hooks if h["LifecycleTransition"] == TERMINATING_HOOK
        ]
        for instance_id in own:
            member = waiting[instance_id]
            if lbs.in_flight(member.address) != 0:
                continue
            for hook in names:
                if not dry_run:
                    aws["autoscaling"].complete_lifecycle_action(
                        LifecycleHookName=hook,
                        AutoScalingGroupName=group["AutoScalingGroupName"],
                        InstanceId=instance_id,
                        LifecycleActionResult="CONTINUE",
                    )
                lines.append(
                    f"{'would: ' if dry_run else ''}{group['AutoScalingGroupName']}: "
                    f"{instance_id} at {member.address} drained on every LB; lifecycle "
                    f"action {hook} completed (CONTINUE)"
                )
    return lines


def pool_outcome(
    aws: dict[str, Any],
    config: dict[str, Any],
    view: PoolView,
    lbs: LbStats,
    clock: scaling.Clock,
    pool_room: int,
    errors: scaling.ErrorWindow,
    now: float,
    dry_run: bool,
) -> Outcome:
    """A pool's pass: a scale-in under way goes on; a spot fallback giving a stand-in back
    holds the pool; otherwise the rule decides."""
    member = view.draining
    if member is not None:
        return drain_step(aws, config, view, member, lbs, dry_run)
    if view.giving_back:
        reason = "the spot fallback is giving a stand-in back"
        return Outcome(
            f'{inputs_line(view)} decision=hold reason="{reason}"', "hold", "giving_back"
        )
    launching = max(0, view.desired - view.serving)
    ratio = errors.ratio(now, view.pool.scale_out_window)
    reading = scaling.Reading(
        view.queue, view.streams, view.desired, view.serving, launching, pool_room, ratio
    )
    return act(aws, view, scaling.decide(view.pool, reading, clock, now), dry_run)


def one_pass(
    aws: dict[str, Any], config: dict[str, Any], memory: Memory, dry_run: bool
) -> list[str]:
    """Read, decide and act for every pool; the journal lines of what is new. A read that
    fails holds every pool and restarts its windows."""
    lines: list[str] = []
    try:
        lbs = read_lbs(aws["ec2"], config["env"], int(config["read_port"]))
        env = env_groups(aws["autoscaling"], config)
        views = read_pools(aws, config, lbs, env)
        gpu_running = running(aws["ec2"], "gpu", config["env"])
    except (BotoCoreError, ClientError, haproxy_runtime.RuntimeApiError, LookupError) as exc:
        failure = f"holding every pool, nothing read: {exc}"
        for clock in memory.clocks.values():
            clock.restart()
        for window in memory.errors.values():
            window.restart()
        publish(memory, {"up": 0.0})
        if failure != memory.failing:
            lines.append(failure)
        memory.failing = failure
        return lines
    if memory.failing:
        lines.append("EC2 and every LB answer again; windows start over")
    memory.failing = ""
    rooms = room(config, views, gpu_running)
    now = time.monotonic()
    figures: dict[str, float] = {
        "up": 1.0,
        "dry_run": float(dry_run),
        "fleet_instances": rooms["instances"],
        "fleet_dollars_per_hour": rooms["dollars_per_hour"],
    }
    for name, view in views.items():
        clock = memory.clocks.setdefault(name, scaling.Clock())
        clock.see(view.pool, view.queue, now)
        errors = memory.errors.setdefault(name, scaling.ErrorWindow())
        errors.see(now, view.errors, view.responses, view.pool.scale_out_window)
        outcome = pool_outcome(aws, config, view, lbs, clock, rooms[name], errors, now, dry_run)
        if outcome.restart:
            clock.restart()
            errors.restart()
        for key in ("queue", "streams", "desired", "serving"):
            figures[f'{key}{{pool="{name}"}}'] = float(getattr(view, key))
        figures[f'min{{pool="{name}"}}'] = float(view.pool.min)
        figures[f'max{{pool="{name}"}}'] = float(view.pool.max)
        with memory.lock:
            counted = (name, outcome.action, outcome.kind)
            memory.decisions[counted] = memory.decisions.get(counted, 0) + 1
        # A hold is said when it is new, not at every pass.
        said = f"{outcome.action} {outcome.kind}"
        if outcome.action != "hold" or outcome.restart or memory.said.get(name) != said:
            lines.append(outcome.line)
        memory.said[name] = said
    lines += lifecycle_steps(aws, env, lbs, dry_run)
    publish(memory, figures)
    return lines


def publish(memory: Memory, figures: dict[str, float]) -> None:
    with memory.lock:
        memory.metrics = {**memory.metrics, **figures} if figures.get("up") == 0.0 else figures


def metrics_text(memory: Memory) -> str:
    """The Prometheus text exposition of the scaler's figures and decisions."""
    out, typed = [], set()
    with memory.lock:
        for key, value in sorted(memory.metrics.items()):
            name = "gpufleet_scaler_" + key.split("{", 1)[0]
            if name not in typed:
                typed.add(name)
                out.append(f"# TYPE {name} gauge")
            out.append(f"gpufleet_scaler_{key} {value:g}")
        out.append("# TYPE gpufleet_scaler_decisions_total counter")
        for (pool, action, kind), count in sorted(memory.decisions.items()):
            out.append(
                f'gpufleet_scaler_decisions_total{{pool="{pool}",action="{action}",'
                f'kind="{kind}"}} {count}'
            )
    return "\n".join(out) + "\n"


def serve_metrics(memory: Memory, where: tuple[str, int]) -> ThreadingHTTPServer:
    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404, "only /metrics is served")
                return
            body = metrics_text(memory).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            """Scrapes are not worth a journal line each."""

    server = ThreadingHTTPServer(where, Metrics)
    server.daemon_threads = True
    return server


def refuse(problems: list[str]) -> NoReturn:
    """Say why the scaler will not start, in one line, and exit REFUSED."""
    print("gpufleet-scaler: refused: " + "; ".join(problems), file=sys.stderr, flush=True)
    raise SystemExit(REFUSED)


def load_config(text: str, source: str) -> dict[str, Any]:
    """The config; refused in one line naming what is wrong."""
    try:
        config = json.loads(text)
    except ValueError as exc:
        refuse([f"{source} is not JSON: {exc}"])
    if not isinstance(config, dict):
        refuse([f"{source} is not a JSON object"])
    missing = [key for key in REQUIRED if not config.get(key)]
    problems = [f"{source} lacks {', '.join(missing)}"] if missing else []
    problems += scaling.config_problems(config)
    if problems:
        refuse(problems)
    return config


def clients(config: dict[str, Any]) -> dict[str, Any]:
    endpoint = config.get("endpoint_url") or None
    return {
        service: boto3.client(service, region_name=config["region"], endpoint_url=endpoint)
        for service in ("ec2", "autoscaling")
    }


def check_pools(aws: dict[str, Any], config: dict[str, Any]) -> None:
    """SystemExit naming each configured pool EC2 has no group for, or that cannot take its
    settings."""
    try:
        _groups, problems = find_pools(env_groups(aws["autoscaling"], config), config)
    except (BotoCoreError, ClientError) as exc:
        refuse([f"the Auto Scaling API failed: {exc}"])
    if problems:
        refuse(problems)


def address(text: str) -> tuple[str, int]:
    host, _colon, port = text.rpartition(":")
    if not host or not port.isdigit():
        refuse([f"metrics {text!r} is not ADDRESS:PORT (scaler_metrics_address, _port)"])
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG), help="the config; - reads stdin")
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    parser.add_argument("--check", action="store_true", help="check the config and EC2, only")
    args = parser.parse_args(argv)
    try:
        text = sys.stdin.read() if args.config == "-" else Path(args.config).read_text()
    except OSError as exc:
        refuse([f"cannot read {args.config}: {exc}"])
    config = load_config(text, args.config)
    aws = clients(config)
    check_pools(aws, config)
    dry_run = bool(config.get("dry_run"))
    if args.check:
        say(f"gpufleet-scaler: config good: pools {', '.join(sorted(config['pools']))}")
        return 0
    memory = Memory()
    if config.get("metrics"):
        server = serve_metrics(memory, address(config["metrics"]))
        threading.Thread(target=server.serve_forever, daemon=True).start()
    say(
        f"gpufleet-scaler: scaling {', '.join(sorted(config['pools']))} every "
        f"{float(config['interval']):g} s{' (dry run: decisions are only said)' if dry_run else ''}"
    )
    while True:
        for line in one_pass(aws, config, memory, dry_run):
            say(line)
        if args.once:
            return 1 if memory.failing else 0
        time.sleep(float(config["interval"]))


if __name__ == "__main__":
    sys.exit(main())
