"""The scaler's rule: when a pool's group grows, shrinks or holds, from its LB queue.

A pool grows when its model's and alias's backends have held more than scale_out_queue
requests waiting (HAProxy's qcur, summed over every LB) at every check for scale_out_window
seconds: by 1, or by 2 when the queue is above step_factor times the threshold. It shrinks
by 1 when the queue has stayed below scale_in_queue for scale_in_window seconds. Both clocks
restart when the pool changes size and when a read fails, so a window is always measured on
the size the pool has, and a scaler that restarts holds until it has seen a whole window
(it keeps nothing it cannot read back). It never grows past max, the fleet's instance cap or
its dollars per hour, nor while an instance it launched is not serving yet; it never shrinks
below min, nor below min instances serving. When more than error_ratio of the pool's
responses over scale_out_window seconds were 5xx while every instance serves (the hosts are
healthy, so it is not theirs to replace), it adds one on-demand instance.

The scaler's config is checked here too, by the program at start and by the scaler role
before it touches a host: each problem names the variable it comes from.

Standard library only: installed beside gpufleet-scaler on the host that runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# A pool's settings, as scaler_pool_defaults holds them: their defaults are the seeds'.
POOL_SETTINGS = (
    "min",
    "max",
    "scale_out_queue",
    "scale_out_window",
    "scale_in_queue",
    "scale_in_window",
    "step_factor",
    "error_ratio",
)
# A pool's settings where neither it nor scaler_pool_defaults sets them: the seeds'.
SEEDS = {
    "min": 1,
    "max": 6,
    "scale_out_queue": 10,
    "scale_out_window": 120,
    "scale_in_queue": 2,
    "scale_in_window": 600,
    "step_factor": 3,
    "error_ratio": 0.1,
}
# Fewer responses than this in a window tell no error ratio.
MIN_RESPONSES = 20
# The fleet-wide settings, and the Ansible variable each comes from.
FLEET_SETTINGS = {
    "interval": "scaler_interval",
    "max_instances": "scaler_max_instances",
    "max_dollars_per_hour": "scaler_max_dollars_per_hour",
    "drain_timeout": "scaler_drain_timeout",
}


@dataclass(frozen=True)
class Pool:
    """A pool's scaling settings."""

    name: str
    min: int
    max: int
    scale_out_queue: int
    scale_out_window: float
    scale_in_queue: int
    scale_in_window: float
    step_factor: float = 3.0
    # A 5xx share of the responses above which on-demand capacity is added; 0: off.
    error_ratio: float = 0.1


@dataclass(frozen=True)
class Reading:
    """What one check read of a pool: its queue and streams on every LB, its group's desired
    capacity, its instances serving (UP on every LB) and not yet, and the fleet's totals."""

    queue: int
    streams: int
    desired: int
    serving: int
    launching: int
    # Instances the fleet's cap and budget still allow to be added to this pool.
    room: int
    # The 5xx share of the responses over the last scale_out_window; None: not known yet.
    error_ratio: float | None = None


@dataclass
class Clock:
    """Since when the pool's queue has been above the scale-out threshold, and below the
    scale-in one, at every check (None: not at the last check)."""

    over_since: float | None = None
    under_since: float | None = None

    def restart(self) -> None:
        self.over_since = self.under_since = None

    def see(self, pool: Pool, queue: int, now: float) -> None:
        over, under = queue > pool.scale_out_queue, queue < pool.scale_in_queue
        self.over_since = (now if self.over_since is None else self.over_since) if over else None
        self.under_since = (
            (now if self.under_since is None else self.under_since) if under else None
        )


@dataclass
class ErrorWindow:
    """The pool's responses and 5xx (HAProxy's cumulative counters, summed over its backends
    and the LBs) at each check, kept for one window."""

    samples: list[tuple[float, int, int]] = field(default_factory=list)

    def restart(self) -> None:
        self.samples.clear()

    def see(self, now: float, errors: int, responses: int, window: float) -> None:
        # A counter that went down is an LB reloaded or replaced: the window starts over.
        if self.samples and (errors < self.samples[-1][1] or responses < self.samples[-1][2]):
            self.samples.clear()
        self.samples.append((now, errors, responses))
        while len(self.samples) > 1 and self.samples[1][0] <= now - window:
            self.samples.pop(0)

    def ratio(self, now: float, window: float) -> float | None:
        """The 5xx share over the window once it is covered and has MIN_RESPONSES."""
        if not self.samples or self.samples[0][0] > now - window:
            return None
        (_first, errors_then, responses_then), (_last, errors, responses) = (
            self.samples[0],
            self.samples[-1],
        )
        answered = responses - responses_then
        return (errors - errors_then) / answered if answered >= MIN_RESPONSES else None


@dataclass(frozen=True)
class Decision:
    """What to do with a pool: change its desired capacity by `change` (0: hold), a short
    kind for metrics, and the reason in words for the journal; `on_demand` adds the capacity
    on demand (above the on-demand base), not in the group's spot share."""

    change: int
    kind: str
    reason: str
    on_demand: bool = False

    @property
    def action(self) -> str:
        return "out" if self.change > 0 else "in" if self.change < 0 else "hold"


def decide(pool: Pool, reading: Reading, clock: Clock, now: float) -> Decision:
    """The pool's decision at this check; the clock has seen the reading's queue."""
    errors = error_decision(pool, reading)
    if errors is not None:
        return errors
    if clock.over_since is not None:
        over = f"queue above {pool.scale_out_queue} for {now - clock.over_since:.0f} s"
        if now - clock.over_since < pool.scale_out_window:
            return Decision(0, "over_waiting", f"{over} of {pool.scale_out_window:.0f}")
        if reading.desired >= pool.max:
            return Decision(0, "at_max", f"{over}, at max {pool.max}")
        if reading.launching:
            return Decision(0, "launching", f"{over}; {reading.launching} launched, not serving")
        if reading.room <= 0:
            return Decision(0, "fleet_cap", f"{over}; the fleet's cap or budget leaves no room")
        step = 2 if reading.queue > pool.step_factor * pool.scale_out_queue else 1
        step = min(step, pool.max - reading.desired, reading.room)
        return Decision(step, "queue_over", f"{over} (now {reading.queue})")
    if clock.under_since is not None:
        under = f"queue below {pool.scale_in_queue} for {now - clock.under_since:.0f} s"
        if now - clock.under_since < pool.scale_in_window:
            return Decision(0, "under_waiting", f"{under} of {pool.scale_in_window:.0f}")
        if reading.desired <= pool.min:
            return Decision(0, "at_min", f"{under}, at min {pool.min}")
        if reading.serving - 1 < pool.min:
            return Decision(0, "healthy_min", f"{under}; {reading.serving} serving, min {pool.min}")
        return Decision(-1, "queue_under", under)
    return Decision(
        0,
        "steady",
        f"queue {reading.queue} between {pool.scale_in_queue} and {pool.scale_out_queue}",
    )


def error_decision(pool: Pool, reading: Reading) -> Decision | None:
    """One on-demand instance more when the pool's 5xx share is above error_ratio over the
    window while every instance serves; None when the errors do not decide."""
    ratio = reading.error_ratio
    if not pool.error_ratio or ratio is None or ratio <= pool.error_ratio:
        return None
    share = f"{ratio:.0%} of responses 5xx over {pool.scale_out_window:.0f} s"
    if reading.launching or reading.serving < reading.desired:
        return Decision(0, "errors_hosts_not_all_serving", f"{share}, not every host serving")
    if reading.desired >= pool.max or reading.room <= 0:
        return Decision(0, "errors_no_room", f"{share}, at max {pool.max} or the fleet's cap")
    return Decision(1, "errors", f"{share} with every host serving", on_demand=True)


def pool_settings(name: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> Pool:
    settings = {**SEEDS, **defaults, **given}
    return Pool(
        name=name,
        min=int(settings["min"]),
        max=int(settings["max"]),
        scale_out_queue=int(settings["scale_out_queue"]),
        scale_out_window=float(settings["scale_out_window"]),
        scale_in_queue=int(settings["scale_in_queue"]),
        scale_in_window=float(settings["scale_in_window"]),
        step_factor=float(settings["step_factor"]),
        error_ratio=float(settings["error_ratio"]),
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def config_problems(config: Mapping[str, Any]) -> list[str]:
    """What is wrong with a scaler config (as the scaler role writes it), one line each,
    naming the variable: unknown or non-numeric settings, thresholds out of order, a window
    shorter than the check interval, a cap below the pools' minimums."""
    problems = []
    fleet = {key: _number(config.get(key)) for key in FLEET_SETTINGS}
    for key, value in fleet.items():
        if value is None or value < 0:
            problems.append(
                f"{FLEET_SETTINGS[key]} must be a number, 0 or more (is {config.get(key)!r})"
            )
    interval = fleet["interval"] or 0
    if fleet["interval"] is not None and interval < 1:
        problems.append(f"scaler_interval must be 1 s or more (is {config.get('interval')!r})")
    pools = config.get("pools")
    if not isinstance(pools, Mapping) or not pools:
        return [*problems, "scaler_pools must name at least one pool of capacity_pools"]
    defaults = config.get("pool_defaults") or {}
    unknown = sorted(set(defaults) - set(POOL_SETTINGS))
    if unknown:
        problems.append(
            f"scaler_pool_defaults has unknown settings: {', '.join(unknown)} "
            f"(known: {', '.join(POOL_SETTINGS)})"
        )
    minimums = 0
    for name, given in sorted(pools.items()):
        where = f"scaler_pools.{name}"
        if not isinstance(given, Mapping):
            problems.append(f"{where} must be a mapping of settings (is {given!r})")
            continue
        unknown = sorted(set(given) - set(POOL_SETTINGS))
        if unknown:
            problems.append(
                f"{where} has unknown settings: {', '.join(unknown)} "
                f"(known: {', '.join(POOL_SETTINGS)})"
            )
            continue
        settings = {**SEEDS, **defaults, **given}
        values = {key: _number(settings.get(key)) for key in POOL_SETTINGS}
        bad = [key for key, value in values.items() if value is None or value < 0]
        if bad:
            problems += [
                f"{where}.{key} must be a number, 0 or more (is {settings.get(key)!r})"
                for key in bad
            ]
            continue
        problems += pool_problems(where, pool_settings(name, given, defaults), interval)
        minimums += int(values["min"] or 0)
    cap = fleet["max_instances"]
    if cap and minimums and cap < minimums:
        problems.append(
            f"scaler_max_instances ({cap:g}) is below the pools' minimums together ({minimums})"
        )
    if fleet["max_dollars_per_hour"] and not config.get("hourly_prices"):
        problems.append(
            "scaler_hourly_prices must price the pools' instance types when "
            "scaler_max_dollars_per_hour is set"
        )
    for instance_type, price in sorted((config.get("hourly_prices") or {}).items()):
        number = _number(price)
        if number is None or number <= 0:
            problems.append(
                f"scaler_hourly_prices.{instance_type} must be dollars per hour above 0 "
                f"(is {price!r})"
            )
    return problems


def pool_problems(where: str, pool: Pool, interval: float) -> list[str]:
    """A pool's settings out of order: min above max, the scale-in threshold not below the
    scale-out one, a window shorter than the check interval."""
    problems = []
    if pool.min > pool.max:
        problems.append(f"{where}.max ({pool.max}) is below its min ({pool.min})")
    if pool.scale_in_queue >= pool.scale_out_queue:
        problems.append(
            f"{where}.scale_in_queue ({pool.scale_in_queue}) must be below "
            f"scale_out_queue ({pool.scale_out_queue})"
        )
    for key in ("scale_out_window", "scale_in_window"):
        if getattr(pool, key) < interval:
            problems.append(
                f"{where}.{key} ({getattr(pool, key):g} s) is shorter than "
                f"scaler_interval ({interval:g} s)"
            )
    if pool.error_ratio > 1:
        problems.append(
            f"{where}.error_ratio ({pool.error_ratio:g}) is a share of the responses, 0 (off) to 1"
        )
    if pool.step_factor <= 1:
        problems.append(
            f"{where}.step_factor ({pool.step_factor:g}) must be above 1: the queue, "
            "as a multiple of scale_out_queue, above which 2 are added"
        )
    return problems
