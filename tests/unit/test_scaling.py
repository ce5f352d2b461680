"""The scaler's rule: a pool grows after a whole window above the scale-out threshold (by 2
far above it) and shrinks after a whole window below the scale-in one, within its bounds;
and the scaler's config is refused, naming the variable, when it is out of order."""

from __future__ import annotations

import pytest
from ansible_collections.gpufleet.fleet.plugins.module_utils.scaling import (
    SEEDS,
    Clock,
    ErrorWindow,
    Pool,
    Reading,
    config_problems,
    decide,
    pool_settings,
)

POOL = Pool(
    "chat",
    min=1,
    max=4,
    scale_out_queue=10,
    scale_out_window=120,
    scale_in_queue=2,
    scale_in_window=600,
)


def reading(**changes: int) -> Reading:
    """A pool of 2, both serving, with room in the fleet."""
    settings = {"queue": 5, "streams": 8, "desired": 2, "serving": 2, "launching": 0, "room": 10}
    return Reading(**(settings | changes))


def run(queues: list[int], every: float = 10, pool: Pool = POOL, **changes: int):
    """The decisions at each check of a queue series, one check every `every` seconds."""
    clock, decisions = Clock(), []
    for step, queue in enumerate(queues):
        now = step * every
        clock.see(pool, queue, now)
        decisions.append(decide(pool, reading(queue=queue, **changes), clock, now))
    return decisions


def test_a_queue_above_the_threshold_for_the_whole_window_adds_one():
    decisions = run([11] * 13)
    assert [d.change for d in decisions[:12]] == [0] * 12
    assert decisions[12].change == 1, decisions[12]
    assert decisions[12].kind == "queue_over"
    assert "queue above 10 for 120 s" in decisions[12].reason


def test_a_dip_below_the_threshold_restarts_the_window():
    decisions = run([11] * 11 + [10] + [11] * 13)
    assert all(d.change == 0 for d in decisions[:-1])
    assert decisions[-1].change == 1


def test_a_queue_three_times_the_threshold_adds_two_within_max():
    assert run([31] * 13)[-1].change == 2
    assert run([30] * 13)[-1].change == 1
    assert run([31] * 13, desired=3)[-1].change == 1


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({"desired": 4}, "at_max"),
        ({"launching": 1}, "launching"),
        ({"room": 0}, "fleet_cap"),
    ],
)
def test_growth_holds_at_max_while_a_host_launches_and_without_room(changes, kind):
    decision = run([40] * 13, **changes)[-1]
    assert (decision.change, decision.kind) == (0, kind)


def test_a_queue_below_the_scale_in_threshold_for_the_whole_window_removes_one():
    decisions = run([1] * 61)
    assert all(d.change == 0 for d in decisions[:60])
    assert (decisions[60].change, decisions[60].kind) == (-1, "queue_under")


@pytest.mark.parametrize(
    ("changes", "kind"), [({"desired": 1, "serving": 1}, "at_min"), ({"serving": 1}, "healthy_min")]
)
def test_shrinking_never_goes_below_min_nor_below_min_serving(changes, kind):
    decision = run([0] * 61, **changes)[-1]
    assert (decision.change, decision.kind) == (0, kind)


def test_a_queue_between_the_thresholds_holds():
    decision = run([5] * 100)[-1]
    assert (decision.change, decision.kind) == (0, "steady")


def test_a_restarted_clock_waits_a_whole_window_again():
    clock = Clock()
    for now in range(0, 130, 10):
        clock.see(POOL, 20, now)
    assert decide(POOL, reading(queue=20), clock, 120).change == 1
    clock.restart()
    clock.see(POOL, 20, 130)
    assert decide(POOL, reading(queue=20), clock, 130).kind == "over_waiting"


def config(**changes) -> dict:
    base = {
        "interval": 10,
        "max_instances": 0,
        "max_dollars_per_hour": 0,
        "drain_timeout": 900,
        "pool_defaults": dict(SEEDS, max=4),
        "pools": {"chat": {}},
    }
    return base | changes


def test_a_good_config_has_no_problem():
    assert config_problems(config()) == []


def test_settings_left_out_are_the_seeds():
    assert config_problems(config(pool_defaults={})) == []
    seeds = pool_settings("chat", {}, {})
    assert (seeds.min, seeds.max, seeds.scale_out_queue, seeds.scale_out_window) == (1, 6, 10, 120)
    assert (seeds.scale_in_queue, seeds.scale_in_window, seeds.error_ratio) == (2, 600, 0.1)
    assert pool_settings("chat", {"max": 8}, {"min": 2}).max == 8


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"pools": {"chat": {"scale_in_queue": 12}}},
            "scaler_pools.chat.scale_in_queue (12) must be below scale_out_queue (10)",
        ),
        (
            {"pools": {"chat": {"scale_out_window": 5}}},
            "scaler_pools.chat.scale_out_window (5 s) is shorter than scaler_interval (10 s)",
        ),
        (
            {"pools": {"chat": {"min": 3}}, "max_instances": 2},
            "scaler_max_instances (2) is below the pools' minimums together (3)",
        ),
        ({"pools": {"chat": {"min": 5}}}, "scaler_pools.chat.max (4) is below its min (5)"),
        ({"pools": {"chat": {"min": "two"}}}, "scaler_pools.chat.min must be a number"),
        ({"pools": {"chat": {"warmup": 3}}}, "scaler_pools.chat has unknown settings: warmup"),
        ({"pools": {}}, "scaler_pools must name at least one pool"),
        ({"interval": 0}, "scaler_interval must be 1 s or more"),
        ({"interval": True}, "scaler_interval must be a number"),
        ({"max_dollars_per_hour": 20}, "scaler_hourly_prices must price"),
        ({"hourly_prices": {"g5.xlarge": -1}}, "scaler_hourly_prices.g5.xlarge must be dollars"),
        (
            {"pools": {"chat": {"error_ratio": 10}}},
            "scaler_pools.chat.error_ratio (10) is a share of the responses, 0 (off) to 1",
        ),
        (
            {"pools": {"chat": {"step_factor": 1}}},
            "scaler_pools.chat.step_factor (1) must be above 1",
        ),
    ],
)
def test_a_bad_config_is_refused_naming_the_variable(changes, expected):
    problems = config_problems(config(**changes))
    assert any(expected in p for p in problems), problems


def test_errors_with_every_host_serving_add_one_on_demand():
    clock = Clock()
    clock.see(POOL, 5, 0)
    erring = reading(error_ratio=0.25)
    decision = decide(POOL, erring, clock, 0)
    assert (decision.change, decision.kind, decision.on_demand) == (1, "errors", True)
    assert "25% of responses 5xx over 120 s with every host serving" in decision.reason
    # A host down or launching is the replacement's to fix, not more capacity's.
    held = decide(POOL, reading(error_ratio=0.25, serving=1), clock, 0)
    assert (held.change, held.kind) == (0, "errors_hosts_not_all_serving")
    assert decide(POOL, reading(error_ratio=0.25, desired=4, serving=4), clock, 0).change == 0
    # At or under the ratio, or unknown, the queue decides.
    for ratio in (0.1, None):
        assert decide(POOL, reading(error_ratio=ratio), clock, 0).kind == "steady"
    off = Pool("chat", 1, 4, 10, 120, 2, 600, error_ratio=0)
    assert decide(off, erring, clock, 0).kind == "steady"


def test_the_error_ratio_is_over_a_whole_window_with_enough_responses():
    window = ErrorWindow()
    window.see(0, errors=0, responses=100, window=10)
    assert window.ratio(5, 10) is None, "the window is not covered yet"
    window.see(10, errors=5, responses=140, window=10)
    assert window.ratio(10, 10) == 5 / 40
    window.see(20, errors=5, responses=150, window=10)
    assert window.ratio(20, 10) is None, "10 responses tell no ratio"
    # Counters that go down (an LB reloaded) start the window over.
    window.see(21, errors=0, responses=3, window=10)
    assert window.samples == [(21, 0, 3)]
