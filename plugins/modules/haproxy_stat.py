"""haproxy_stat: read a running HAProxy's statistics and stick tables."""

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_stat
short_description: Read a running HAProxy's statistics and stick tables through its runtime API
description:
  - Reads C(show stat) of the running HAProxy, one dict per frontend, backend or server row,
    keyed by the CSV header HAProxy prints (C(pxname), C(svname), C(status), C(scur),
    C(qcur), C(agent_status), C(hrsp_2xx), ...).
  - Optionally reads stick tables too (C(show table NAME)), each key's stored data.
  - Reads only; never reports a change. Runs the same in check mode.
author: gpufleet maintainers (!UNKNOWN)
version_added: "0.1.0"
options:
  types:
    description: The rows to read; all of them when empty.
    type: list
    elements: str
    choices: [frontend, backend, server]
    default: []
  proxies:
    description:
      - Only the rows of these frontends and backends (C(pxname)). Without it, every one's; an
        empty list reads none, so a list computed at run time never widens to all of them.
    type: list
    elements: str
  tables:
    description: Stick tables to read as well.
    type: list
    elements: str
    default: []
  socket:
    description: HAProxy's runtime API socket.
    type: path
    default: /run/haproxy/admin.sock
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
"""

EXAMPLES = r"""
- name: Read the state of every server
  gpufleet.fleet.haproxy_stat:
    types: [server]
  register: haproxy_servers

- name: Show the servers that are not UP
  ansible.builtin.debug:
    msg: "{{ haproxy_servers.rows | rejectattr('status', 'eq', 'UP') | map(attribute='svname') }}"

- name: Read the frontend's answers and each model name's requests
  gpufleet.fleet.haproxy_stat:
    proxies: [ollama]
    tables: [st_models]
  register: haproxy_counters
"""

RETURN = r"""
rows:
  description: C(show stat)'s rows, each a dict keyed by its CSV header; values are strings.
  returned: always
  type: list
  elements: dict
  sample: [{pxname: be_default, svname: gpu-1, status: UP, scur: "0", qcur: "0"}]
tables:
  description: Each table of O(tables), as key to its stored data.
  returned: always
  type: dict
  sample: {st_models: {"llama3.1:8b": {gpc0: "12", http_req_cnt: "12"}}}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gpufleet.fleet.plugins.module_utils.haproxy_runtime import (
    RuntimeApiError,
    stat_rows,
    table_entries,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "types": {
                "type": "list",
                "elements": "str",
                "choices": ["frontend", "backend", "server"],
                "default": [],
            },
            "proxies": {"type": "list", "elements": "str"},
            "tables": {"type": "list", "elements": "str", "default": []},
            "socket": {"type": "path", "default": "/run/haproxy/admin.sock"},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        rows = stat_rows(params["socket"], params["types"])
        tables = {name: table_entries(params["socket"], name) for name in params["tables"]}
    except RuntimeApiError as exc:
        module.fail_json(msg=f"haproxy_stat: {exc}")
    if params["proxies"] is not None:
        rows = [row for row in rows if row.get("pxname") in params["proxies"]]
    module.exit_json(changed=False, rows=rows, tables=tables)


if __name__ == "__main__":
    main()
