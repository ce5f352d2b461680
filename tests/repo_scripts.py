"""Load a standalone script of the repository (a role's file installed on hosts, the image
audit Packer uploads) as a module, to test it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load(relative: str, name: str = "") -> ModuleType:
    """The file as a module named name (default: its file name), as a host imports it."""
    path = REPO / relative
    name = name or path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # Registered first, so dataclasses can resolve the module's own names.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
