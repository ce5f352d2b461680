"""ollama_model: make sure a model is pulled, copied, removed, or loaded on an Ollama server."""

from __future__ import annotations

DOCUMENTATION = r"""
module: ollama_model
short_description: Pull, copy, remove or warm a model on an Ollama server
description:
  - Makes sure a model is on an Ollama server's disk (V(present)), is not (V(absent)),
    or is on disk and loaded in memory (V(loaded)), so the first user request does not
    wait for the model to load.
  - With O(copy_of), the model is another name for a model already on the server (Ollama's
    C(/api/copy), as C(ollama cp) makes it), such as a pool alias. It is copied again whenever its
    digest differs from O(copy_of)'s, so pointing an alias at another model is one task.
  - Reads the server's state through C(/api/tags) and C(/api/ps) first and changes
    nothing when the model is already as asked.
  - A failed pull leaves no model behind; Ollama itself removes partial downloads.
  - A failure names the endpoint and what went wrong (no answer, an HTTP error, a body that
    is not Ollama's), and reports C(changed) when a step before it did change the server,
    such as a pull before a failed load.
author: gpufleet maintainers (!UNKNOWN)
version_added: "0.1.0"
options:
  name:
    description:
      - Model name as Ollama takes it, C(model:tag), C(namespace/model:tag) or
        C(host/namespace/model:tag). Without a tag, C(latest).
    type: str
    required: true
    aliases: [model]
  state:
    description:
      - V(present) pulls the model when it is missing.
      - V(absent) deletes it (and unloads it) when it is there.
      - V(loaded) pulls it when missing and loads it when it is not loaded.
    type: str
    choices: [present, absent, loaded]
    default: present
  copy_of:
    description:
      - A model on the server that O(name) must be a copy of, instead of pulling O(name).
        Fails, naming it, when that model is not on the server. Not with V(absent).
    type: str
  host:
    description:
      - The Ollama server, as C(host:port) or a URL. Defaults to E(OLLAMA_HOST), then
        C(127.0.0.1:11434).
    type: str
  insecure:
    description: Allow pulling from a registry over plain HTTP, as Ollama's C(insecure) flag.
    type: bool
    default: false
  keep_alive:
    description:
      - With V(loaded), how long the model stays in memory, as Ollama's C(keep_alive).
      - A whole number is seconds, sent to Ollama as a JSON number; a negative one, such as
        the default C(-1), keeps the model loaded for as long as the server runs.
      - Anything else must be a duration with units (C(5m), C(1h30m)), which Ollama parses
        with Go's C(time.ParseDuration). Other text is refused before Ollama is called.
    type: str
    default: "-1"
  timeout:
    description:
      - Seconds any one call to Ollama may take, a whole pull or load included.
    type: int
    default: 3600
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
"""

EXAMPLES = r"""
- name: Pull the served model
  gpufleet.fleet.ollama_model:
    name: llama3.1:8b
    host: "{{ ansible_host }}:11434"

- name: Warm it so the first request is fast
  gpufleet.fleet.ollama_model:
    name: llama3.1:8b
    state: loaded
    keep_alive: "-1"

- name: Point the pool's alias at the model the host serves
  gpufleet.fleet.ollama_model:
    name: chat
    copy_of: llama3.1:8b

- name: Remove the model this host no longer serves
  gpufleet.fleet.ollama_model:
    name: qwen2.5:7b
    state: absent
"""

RETURN = r"""
model:
  description: The model's full name, tag included.
  returned: always
  type: str
  sample: llama3.1:8b
digest:
  description: The model's manifest digest, as C(/api/tags) gives it; empty when absent.
  returned: always
  type: str
size:
  description: The model's size on disk in bytes; 0 when absent.
  returned: always
  type: int
loaded:
  description: Whether the model is loaded in memory afterwards.
  returned: always
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gpufleet.fleet.plugins.module_utils.model_names import (
    full_name,
    name_problem,
)
from ansible_collections.gpufleet.fleet.plugins.module_utils.ollama_api import (
    OllamaClient,
    OllamaError,
    keep_alive_value,
)


def describe(client: OllamaClient, name: str) -> dict:
    """The model's state; loaded under any of its names (Ollama loads a model once for all
    its copies and lists it under the name first asked for)."""
    local = client.local_models().get(name)
    loaded_digests = {m.get("digest") for m in client.loaded_models().values()}
    loaded = bool(local) and local.get("digest") in loaded_digests
    return {
        "state": ("loaded" if loaded else "present") if local else "absent",
        "digest": local.get("digest", "") if local else "",
        "size": local.get("size", 0) if local else 0,
        "loaded": loaded,
    }


def plan(before: dict, wanted: str, source_digest: str | None = None) -> list[str]:
    """The steps from the model's state to the wanted one, in order; source_digest is the
    digest of the model it must be a copy of, if any."""
    if wanted == "absent":
        return ["delete"] if before["state"] != "absent" else []
    if source_digest is not None:
        steps = ["copy"] if before["digest"] != source_digest else []
        if wanted == "loaded" and (steps or not before["loaded"]):
            steps.append("load")
        return steps
    steps = ["pull"] if before["state"] == "absent" else []
    if wanted == "loaded" and not before["loaded"]:
        steps.append("load")
    return steps


def run_step(
    client: OllamaClient, step: str, name: str, params: dict, keep_alive: int | str
) -> None:
    if step == "pull":
        client.pull(name, params["insecure"])
    elif step == "copy":
        client.copy(full_name(params["copy_of"]), name)
    elif step == "load":
        client.load(name, keep_alive)
    else:
        client.delete(name)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True, "aliases": ["model"]},
            "state": {
                "type": "str",
                "default": "present",
                "choices": ["present", "absent", "loaded"],
            },
            "copy_of": {"type": "str"},
            "host": {"type": "str"},
            "insecure": {"type": "bool", "default": False},
            "keep_alive": {"type": "str", "default": "-1"},
            "timeout": {"type": "int", "default": 3600},
        },
        supports_check_mode=True,
    )
    params = module.params
    for option in ("name", "copy_of"):
        problem = params[option] is not None and name_problem(params[option])
        if problem:
            module.fail_json(msg=f"ollama_model: {option}: {problem}")
    name = full_name(params["name"])
    host = params["host"] or os.environ.get("OLLAMA_HOST") or "127.0.0.1:11434"
    done: list[str] = []
    try:
        keep_alive = keep_alive_value(params["keep_alive"])
        client = OllamaClient(host, timeout=params["timeout"])
        source_digest = None
        if params["copy_of"]:
            if params["state"] == "absent":
                raise OllamaError("copy_of is for a model that must be present, not absent")
            source = client.local_models().get(full_name(params["copy_of"]))
            if source is None:
                raise OllamaError(f"copy_of {params['copy_of']} is not on the server")
            source_digest = source.get("digest", "")
        before = describe(client, name)
        steps = plan(before, params["state"], source_digest)
        if steps and not module.check_mode:
            for step in steps:
                run_step(client, step, name, params, keep_alive)
                done.append(step)
            after = describe(client, name)
        else:
            after = dict(before, state=params["state"]) if steps else before
    except OllamaError as exc:
        module.fail_json(msg=f"ollama_model {name}: {exc}", model=name, changed=bool(done))
    module.exit_json(
        changed=bool(steps),
        model=name,
        digest=after["digest"],
        size=after["size"],
        loaded=after["loaded"],
        diff={
            "before": {"model": name, "state": before["state"]},
            "after": {"model": name, "state": after["state"]},
        },
    )


if __name__ == "__main__":
    main()
