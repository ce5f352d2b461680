"""The fleet model, read once for every playbook: each GPU host's pool, model and alias (from
the inventory's host variables), the names each host serves, the LB backend of each name, the
one check of model names, and the batches Ansible's `serial` makes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible.utils.helpers import pct_to_int
from ansible_collections.gpufleet.fleet.plugins.module_utils import model_names
from ansible_collections.gpufleet.fleet.plugins.module_utils.fleet_backends import (
    fleet_backend,
    fleet_backends,
    fleet_host_backends,
)

# The host variable that gives a pool its alias (group_vars/pool_NAME.yml); over the tag.
ALIAS_VARIABLE = "fleet_pool_alias"
DEFAULT_POOL = "default"


def ollama_name_problem(name: Any, tag_required: bool = False) -> str:
    """Why name is not an Ollama model name, or "" when it is one."""
    return model_names.name_problem(name, tag_required)


def full_model_name(name: str) -> str:
    """Ollama reads a name without a tag as name:latest."""
    return model_names.full_name(name)


def fleet_host(variables: Mapping[str, Any]) -> dict[str, str]:
    """One GPU host's place in the fleet, from the inventory's gpufleet_* host variables
    (its EC2 tags): its pool, the model it serves, its pool's alias."""
    alias = variables.get(ALIAS_VARIABLE) or variables.get("gpufleet_alias") or ""
    return {
        "pool": variables.get("gpufleet_pool") or DEFAULT_POOL,
        "model": variables.get("gpufleet_model") or "",
        "alias": str(alias),
    }


def fleet_gpu_hosts(hostvars: Mapping[str, Any], hosts: Sequence[str]) -> dict[str, dict]:
    """host -> its pool, model and alias, for each of hosts."""
    return {host: fleet_host(hostvars[host]) for host in hosts}


def fleet_names(place: Mapping[str, str]) -> list[str]:
    """The names a host answers to: its model and its pool's alias."""
    return [name for name in (place.get("model"), place.get("alias")) if name]


def fleet_routes(
    fleet: Mapping[str, Mapping[str, str]], leaving: Sequence[str] = ()
) -> dict[str, str]:
    """The name a client asks for -> its backend, as the LB's map holds it: each model a host
    outside `leaving` serves (a model only leaving hosts serve is retired: the LB answers 404)
    and each pool's alias; a name without a tag also as name:latest, and the reverse."""
    routes = {}
    for host, place in sorted(fleet.items()):
        if place.get("model") and host not in leaving:
            routes[place["model"]] = fleet_backend(place["model"])
        if place.get("alias"):
            routes[place["alias"]] = fleet_backend(place["alias"], alias=True)
    for name, backend in list(routes.items()):
        other = name.removesuffix(":latest") if name.endswith(":latest") else full_model_name(name)
        routes.setdefault(other, backend)
    return dict(sorted(routes.items()))


def fleet_alias_problems(
    fleet: Mapping[str, Mapping[str, str]], other_models: Sequence[str] = ()
) -> list[str]:
    """What is wrong with the pools' aliases, one sentence each naming the pool and the alias:
    an alias that is not an Ollama name, that is a model some host serves (or one of
    other_models, such as a swap's), that two pools share, or that a pool's hosts disagree on."""
    aliases: dict[str, set[str]] = {}
    models = {full_model_name(p["model"]) for p in fleet.values() if p.get("model")}
    models |= {full_model_name(m) for m in other_models if isinstance(m, str) and m}
    for place in fleet.values():
        aliases.setdefault(place["pool"], set()).add(place.get("alias", ""))
    problems = []
    for pool, found in sorted(aliases.items()):
        named = sorted(found - {""})
        if len(found) > 1:
            given = ", ".join(repr(a) for a in sorted(found))
            problems.append(
                f"pool {pool}'s hosts disagree on its alias ({given}); set {ALIAS_VARIABLE} "
                f"for the pool, or the same gpufleet:alias tag on all its hosts"
            )
            continue
        for alias in named:
            problem = ollama_name_problem(alias)
            if problem:
                problems.append(f"pool {pool}'s alias {problem}")
            elif full_model_name(alias) in models:
                problems.append(
                    f"pool {pool}'s alias {alias!r} is also the name of a model (served, or being "
                    "swapped to); an alias must be a name of its own"
                )
    owners: dict[str, list[str]] = {}
    for pool, found in aliases.items():
        for alias in found - {""}:
            owners.setdefault(full_model_name(alias), []).append(pool)
    for alias, pools in sorted(owners.items()):
        if len(pools) > 1:
            problems.append(
                f"the alias {alias!r} is given to the pools {', '.join(sorted(pools))}; "
                "each pool needs its own"
            )
    return problems


def _serial_items(serial: Any) -> list[Any]:
    """serial as the play keeps it: a list (a scalar is a list of one), all hosts if empty."""
    if serial is None:
        items: list[Any] = []
    elif isinstance(serial, Sequence) and not isinstance(serial, str):
        items = list(serial)
    else:
        items = [serial]
    return items or [-1]


def _batch_size(item: Any, serial: Any, host_count: int) -> int:
    try:
        return pct_to_int(item, host_count)
    except (TypeError, ValueError):
        raise AnsibleFilterError(
            f"serial {item!r} (in {serial!r}) is not a number of hosts or a percentage, as "
            "Ansible's serial takes them (2, '25%', [1, '50%'])"
        ) from None


def serial_batches(serial: Any, hosts: Sequence[str]) -> list[list[str]]:
    """The batches a play with this `serial` makes of hosts, as Ansible makes them: a scalar is
    a list of one, 0 or less (or none) is every host at once, N% is that share of all the hosts
    (at least one), and the last item repeats until no host is left."""
    items = _serial_items(serial)
    remaining, batches, index = list(hosts), [], 0
    while remaining:
        size = _batch_size(items[index], serial, len(hosts))
        if size <= 0:
            batches.append(remaining)
            break
        batches.append(remaining[:size])
        remaining = remaining[size:]
        index = min(index + 1, len(items) - 1)
    return batches


def serial_problem(serial: Any) -> str:
    """Why Ansible cannot read serial (any of its items), or "" when it can: to refuse it with
    a clear message before anything is touched."""
    try:
        for item in _serial_items(serial):
            _batch_size(item, serial, 1)
    except AnsibleFilterError as exc:
        return str(exc)
    return ""


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "ollama_name_problem": ollama_name_problem,
            "full_model_name": full_model_name,
            "fleet_gpu_hosts": fleet_gpu_hosts,
            "fleet_names": fleet_names,
            "fleet_backend": fleet_backend,
            "fleet_host_backends": fleet_host_backends,
            "fleet_backends": fleet_backends,
            "fleet_routes": fleet_routes,
            "fleet_alias_problems": fleet_alias_problems,
            "serial_batches": serial_batches,
            "serial_problem": serial_problem,
        }
