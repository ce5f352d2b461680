"""Ollama's model names, checked and completed in one place: the collection's filters and its
ollama_model module import it, and the fleet_agent role installs it beside the fleet agent
(as gpufleet_model_names.py). Standard library only, for that reason."""

from __future__ import annotations

import re
from typing import Any

DEFAULT_TAG = "latest"
# Ollama's names: [registry[:port]/][namespace/]model[:tag], as `ollama pull` takes them.
MODEL_NAME = re.compile(
    r"(?:[A-Za-z0-9][A-Za-z0-9._-]*(?::[0-9]{1,5})?/)?(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?"
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}(?::[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?"
)


def name_problem(name: Any, tag_required: bool = False) -> str:
    """Why name is not an Ollama model name, or "" when it is one."""
    if not isinstance(name, str) or not name:
        return f"{name!r} is not a model name"
    if not MODEL_NAME.fullmatch(name):
        return (
            f"{name!r} is not an Ollama model name ([registry/][namespace/]name[:tag]; letters, "
            "digits, '.', '_' and '-', each part starting with a letter or digit)"
        )
    if tag_required and ":" not in name.rsplit("/", 1)[-1]:
        return f"{name!r} has no tag (name:tag)"
    return ""


def full_name(name: str) -> str:
    """The name as Ollama lists it: without a tag, name:latest (a registry's port is not a
    tag: host:5000/name is host:5000/name:latest)."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:{DEFAULT_TAG}"
