"""Filters for the scaler (roles/scaler): its config checked on the controller, before the
host is touched, by the same function the program checks it with at start."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.gpufleet.fleet.plugins.module_utils.scaling import config_problems


def scaler_config_problems(config: Mapping[str, Any]) -> list[str]:
    """What is wrong with the scaler's config, one sentence each, naming the variable."""
    return config_problems(config)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"scaler_config_problems": scaler_config_problems}
