"""Seed stores for the model store's tests: models pulled, as a bake pulls them, from the lab
registry into a directory in Ollama's layout."""

from __future__ import annotations

from pathlib import Path

from gpufleet.lab.standins.ollama.names import ModelName
from gpufleet.lab.standins.ollama.pull import pull
from gpufleet.lab.standins.ollama.store import Store


def pull_seed(seed: Path, registry_url: str, models: list[str]) -> Path:
    for name in models:
        pull(Store(seed), ModelName.parse(name), False, registry_url, False, lambda _status: None)
    return seed
