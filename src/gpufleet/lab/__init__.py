"""The fleet lab: systemd Debian 12 hosts in nspawn containers plus a local EC2 API.

The lab stands in for EC2 on a single machine so roles, playbooks and the
inventory plugin can be proven end to end without AWS or a GPU.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

COLLECTION_MODULE_UTILS = Path(__file__).resolve().parents[3] / "plugins" / "module_utils"


class LabError(Exception):
    """A lab operation could not be done; the message names the reason in one line."""


def collection_module_util(name: str) -> ModuleType:
    """One of the collection's module_utils (standard library only), so the lab uses the
    fleet's own code rather than a twin of it: the model names' check, the runtime API's
    `show stat` parser."""
    spec = importlib.util.spec_from_file_location(
        f"gpufleet_{name}", COLLECTION_MODULE_UTILS / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    # Registered first, so dataclasses can resolve the module's own names.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
