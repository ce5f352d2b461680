"""haproxy_map: make a running HAProxy's map match the entries it should have."""

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_map
short_description: Update a running HAProxy's map through its runtime API
description:
  - Reads a map of the running HAProxy (C(show map)) and adds, changes or deletes entries
    (C(add map), C(set map), C(del map)) until it holds exactly O(entries). Routing changes
    at once, without a reload.
  - The runtime API changes memory only. Write the same entries to the map file on disk
    too (gpufleet's haproxy role renders it), so that a reload or restart keeps them.
  - Changes nothing, and reports no change, when the map already holds O(entries).
  - A map the running process has not loaded (a config not reloaded yet) is not an error
    when O(missing_ok) is true; the map file is read at the next reload.
author: gpufleet maintainers (!UNKNOWN)
version_added: "0.1.0"
options:
  map:
    description: The map file's path, as the configuration loads it.
    type: path
    required: true
  entries:
    description: Every key and its value the map must hold; other keys are deleted.
    type: dict
    required: true
  socket:
    description: HAProxy's runtime API socket, at admin level.
    type: path
    default: /run/haproxy/admin.sock
  missing_ok:
    description: Succeed without a change when the running process has not loaded the map.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
notes:
  - Keys and values may not hold spaces or newlines, which the runtime API cannot carry.
"""

EXAMPLES = r"""
- name: Route each model to the backend of the hosts that serve it
  gpufleet.fleet.haproxy_map:
    map: /etc/haproxy/models.map
    entries:
      llama3.1:8b: be_model_llama3_1_8b
      qwen2.5:7b: be_model_qwen2_5_7b
"""

RETURN = r"""
added:
  description: Keys added.
  returned: always
  type: list
  elements: str
updated:
  description: Keys whose value changed.
  returned: always
  type: list
  elements: str
deleted:
  description: Keys deleted.
  returned: always
  type: list
  elements: str
loaded:
  description: Whether the running process had the map loaded.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gpufleet.fleet.plugins.module_utils.haproxy_runtime import (
    RuntimeApiError,
    command,
    map_entries,
)


def unsafe_items(entries: dict[str, str]) -> list[str]:
    return [f"{k} {v}" for k, v in entries.items() if any(c.isspace() for c in f"{k}{v}") or not k]


def plan(current: dict[str, str], wanted: dict[str, str]) -> tuple[list, list, list]:
    added = sorted(k for k in wanted if k not in current)
    updated = sorted(k for k in wanted if k in current and current[k] != wanted[k])
    deleted = sorted(k for k in current if k not in wanted)
    return added, updated, deleted


def apply(socket_path: str, map_path: str, wanted: dict[str, str], plan_: tuple) -> None:
    added, updated, deleted = plan_
    # Add and change before deleting, so no request meets a map missing what it needs.
    for key in added:
        command(socket_path, f"add map {map_path} {key} {wanted[key]}")
    for key in updated:
        command(socket_path, f"set map {map_path} {key} {wanted[key]}")
    for key in deleted:
        command(socket_path, f"del map {map_path} {key}")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "map": {"type": "path", "required": True},
            "entries": {"type": "dict", "required": True},
            "socket": {"type": "path", "default": "/run/haproxy/admin.sock"},
            "missing_ok": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    map_path, socket_path = module.params["map"], module.params["socket"]
    wanted = {str(k): str(v) for k, v in module.params["entries"].items()}
    bad = unsafe_items(wanted)
    if bad:
        module.fail_json(msg=f"haproxy_map {map_path}: entries with spaces or empty keys: {bad}")
    try:
        current = map_entries(socket_path, map_path)
    except RuntimeApiError as exc:
        if module.params["missing_ok"] and "Unknown map identifier" in str(exc):
            module.exit_json(changed=False, loaded=False, added=[], updated=[], deleted=[])
        module.fail_json(msg=str(exc))
    steps = plan(current, wanted)
    changed = any(steps)
    if changed and not module.check_mode:
        try:
            apply(socket_path, map_path, wanted, steps)
        except RuntimeApiError as exc:
            module.fail_json(msg=str(exc), changed=True)
    module.exit_json(
        changed=changed,
        loaded=True,
        added=steps[0],
        updated=steps[1],
        deleted=steps[2],
        diff={"before": _text(current), "after": _text(wanted)},
    )


def _text(entries: dict[str, str]) -> str:
    return "".join(f"{k} {v}\n" for k, v in sorted(entries.items()))


if __name__ == "__main__":
    main()
