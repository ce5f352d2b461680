"""The fleet's LB backends in one place: the backend of each model and alias name, and every
host of the pools that serve it. The collection's fleet filters (the haproxy role's config)
import it, and the lb_membership role installs it beside its program (as
gpufleet_fleet_backends.py), so that the slots it fills follow the same rule as the config.
Standard library only, for that reason."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def fleet_backend(name: str, alias: bool = False) -> str:
    """The LB backend of a model or an alias. HAProxy's names take letters, digits and
    `-_.:`, so only `/` is spelled `::` (no `:` in a model name is followed by another):
    two names never share a backend."""
    return ("be_alias_" if alias else "be_model_") + name.replace("/", "::")


def fleet_host_backends(place: Mapping[str, str]) -> list[str]:
    """The backends a host serves in besides the default one: its model's and its alias's."""
    found = [fleet_backend(place["model"])] if place.get("model") else []
    return found + ([fleet_backend(place["alias"], alias=True)] if place.get("alias") else [])


def fleet_backends(
    fleet: Mapping[str, Mapping[str, str]], incoming: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """backend -> the name it serves, whether that is an alias, and every host of the pools
    that serve it: one per model a host serves or a pool is being swapped to (`incoming`,
    pool -> model), one per pool's alias. A host answers maint in the backend of a name it
    does not serve (its fleet agent), so a swap moves hosts between backends without a reload."""
    pools: dict[tuple[str, bool], set[str]] = {}
    for place in fleet.values():
        if place.get("model"):
            pools.setdefault((place["model"], False), set()).add(place["pool"])
        if place.get("alias"):
            pools.setdefault((place["alias"], True), set()).add(place["pool"])
    for pool, model in (incoming or {}).items():
        pools.setdefault((model, False), set()).add(pool)
    return {
        fleet_backend(name, alias): {
            "name": name,
            "alias": alias,
            "pools": sorted(found),
            "hosts": sorted(h for h, place in fleet.items() if place["pool"] in found),
        }
        for (name, alias), found in sorted(pools.items())
    }
