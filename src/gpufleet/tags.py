"""The EC2 tags a gpufleet host carries: the inventory groups by them, playbooks set them.

The inventory plugin (plugins/inventory/gpufleet_ec2.py) reads the same names; it keeps
its own copy so that it runs on a controller without this package.
"""

from __future__ import annotations

NAME = "Name"
ROLE = "gpufleet:role"
POOL = "gpufleet:pool"
MODEL = "gpufleet:model"
# A pool's alias: a name every host of the pool answers to (an Ollama copy of its model).
ALIAS = "gpufleet:alias"
ENV = "gpufleet:env"


def fleet_tags(
    name: str, role: str, pool: str, env: str, model: str = "", alias: str = ""
) -> dict[str, str]:
    """A host's tags: a GPU host names the model it serves and its pool's alias, if any; a
    load balancer neither."""
    tags = {NAME: name, ROLE: role, POOL: pool, ENV: env}
    if model:
        tags[MODEL] = model
    if alias:
        tags[ALIAS] = alias
    return tags
