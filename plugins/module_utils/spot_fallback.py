"""A pool's spot fallback: on-demand instances stand in for the spot a group cannot get, and
are given back once its spot serves again (SkyServe's dynamic on-demand fallback, on an
Auto Scaling group with a mixed instances policy).

The pool's own on-demand base is the group's BASE_TAG (capacity.yml writes it); the fallback,
the number of stand-ins, is how far the group's OnDemandBaseCapacity is above it, so any LB's
membership service, restarted or not, reads the same state back from the API. Standing in
raises the base and the desired capacity together, in one call: the group launches that many
more on demand and keeps trying its spot share, which is unchanged. Giving one back marks the
newest on-demand instance (GIVE_BACK_TAG), drains it on every LB (each LB tags it
DRAINED_TAG_PREFIX + its instance id once it has no stream there), lowers the base by one,
then terminates it with the desired capacity decremented.

Standard library only: installed beside gpufleet-lb-membership, and read by the lab's EC2 API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BASE_TAG = "gpufleet:on-demand-base"
GIVE_BACK_TAG = "gpufleet:give-back"
DRAINED_TAG_PREFIX = "gpufleet:drained-by:"
# GIVE_BACK_TAG's values: marked and draining; the base already lowered, to be terminated.
DRAINING, RELEASED = "draining", "released"


def base_and_spot_share(policy: dict) -> tuple[int, int]:
    """A mixed instances policy's on-demand base and percent of spot above it, as the
    Auto Scaling API describes them (numbers, or their strings)."""
    distribution = policy.get("InstancesDistribution", {})
    above = int(distribution.get("OnDemandPercentageAboveBaseCapacity", 100))
    return int(distribution.get("OnDemandBaseCapacity", 0)), 100 - above


def with_base(base: int) -> dict:
    """A policy update that changes the on-demand base only: the API keeps what it omits
    (and an update naming the launch template would need the right to launch from it)."""
    return {"InstancesDistribution": {"OnDemandBaseCapacity": base}}


def on_demand_count(desired: int, base: int, spot_share: int) -> int:
    """The on-demand instances of a group's distribution: the base, then the on-demand share
    of the capacity above it, rounded up as EC2 Auto Scaling rounds (in favour of on-demand)."""
    above = max(0, desired - base)
    return min(desired, base) + math.ceil(above * (100 - spot_share) / 100)


def spot_count(desired: int, base: int, spot_share: int) -> int:
    return desired - on_demand_count(desired, base, spot_share)


@dataclass(frozen=True)
class GroupState:
    """What one pass read of a pool's group."""

    name: str
    desired: int
    max_size: int
    # OnDemandBaseCapacity, and the pool's own base (BASE_TAG).
    base: int
    own_base: int
    spot_share: int
    # Spot instances launched (Pending or InService), and those serving through the LB.
    spot_live: int
    spot_serving: int

    @property
    def fallback(self) -> int:
        """The on-demand instances standing in for spot."""
        return max(0, self.base - self.own_base)

    @property
    def own_desired(self) -> int:
        """The capacity the pool asks for, without the stand-ins."""
        return self.desired - self.fallback

    @property
    def spot_target(self) -> int:
        return spot_count(self.own_desired, self.own_base, self.spot_share)

    @property
    def spot_short(self) -> int:
        return max(0, self.spot_target - self.spot_live)


def fallback_wanted(group: GroupState, short_for: float, after: float) -> int:
    """The stand-ins the group should have: as many as spot instances are missing once they
    have been missing `after` seconds, within the group's max; never fewer than it has while
    spot is short (they are given back one by one, once spot serves)."""
    if group.spot_short == 0 or short_for < after:
        return group.fallback
    room = group.max_size - group.own_desired
    return max(group.fallback, min(group.spot_short, room))


def ready_to_give_back(group: GroupState) -> bool:
    """Spot serves again: the group has stand-ins and its whole spot target serves."""
    return group.fallback > 0 and group.spot_serving >= group.spot_target
