"""The spot fallback's rule: how many on-demand instances stand in for missing spot, when,
and when one is given back; the on-demand count as EC2 Auto Scaling rounds it."""

from __future__ import annotations

import pytest
from ansible_collections.gpufleet.fleet.plugins.module_utils.spot_fallback import (
    GroupState,
    fallback_wanted,
    on_demand_count,
    ready_to_give_back,
)


def group(**changes: int) -> GroupState:
    """A pool of 3 with 1 on demand and the rest spot, its two spot instances serving."""
    settings = {
        "desired": 3,
        "max_size": 5,
        "base": 1,
        "own_base": 1,
        "spot_share": 100,
        "spot_live": 2,
        "spot_serving": 2,
    }
    return GroupState(name="gpufleet-prod-chat", **(settings | changes))


@pytest.mark.parametrize(
    ("desired", "base", "share", "on_demand"),
    [(3, 1, 100, 1), (3, 1, 30, 3), (4, 1, 30, 4), (5, 1, 50, 3), (2, 3, 30, 2), (0, 0, 30, 0)],
)
def test_the_on_demand_share_above_the_base_rounds_up(desired, base, share, on_demand):
    assert on_demand_count(desired, base, share) == on_demand


def test_spot_missing_gets_stand_ins_only_once_it_has_been_missing_long_enough():
    short = group(spot_live=0, spot_serving=0)
    assert short.spot_short == 2
    assert fallback_wanted(short, short_for=44, after=45) == 0
    assert fallback_wanted(short, short_for=45, after=45) == 2
    assert fallback_wanted(group(), short_for=600, after=45) == 0


def test_stand_ins_stay_within_the_groups_max_and_are_not_counted_as_the_pools_own():
    assert fallback_wanted(group(spot_live=0, max_size=4), short_for=60, after=45) == 1
    # One stands in already (base and desired one above the pool's): spot still missing.
    standing = group(desired=4, base=2, spot_live=1, spot_serving=1)
    assert (standing.fallback, standing.own_desired, standing.spot_target) == (1, 3, 2)
    assert fallback_wanted(standing, short_for=60, after=45) == 1


def test_a_stand_in_is_given_back_only_once_the_whole_spot_share_serves():
    standing = group(desired=4, base=2)
    assert ready_to_give_back(standing)
    assert not ready_to_give_back(group(desired=4, base=2, spot_serving=1))
    assert not ready_to_give_back(group())
