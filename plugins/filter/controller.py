"""Filters for paths on the controller."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def controller_path(path: Any) -> str:
    """path made absolute against the directory ansible-playbook runs in. Lookups such as
    pipe run in the playbook's directory, and modules on localhost in a temporary one: only
    the controller's own process knows where the operator started it."""
    return str(Path(str(path)).expanduser().absolute())


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"controller_path": controller_path}
