"""Fixtures shared by the test folders: the lab model registry and Ollama stand-ins.

Helpers live in modules with their own names (standin_server, and each folder's),
never in conftest.py, so folders can run in one pytest session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ollama_standin.registry import Registry
from standin_server import SMALL, StandIn, start_standin


@pytest.fixture(scope="session")
def registry() -> Iterator[str]:
    served = Registry(
        {"llama3.1:8b": SMALL, "qwen2.5:7b": SMALL, "nomic-embed-text": SMALL, "mistral:7b": SMALL},
        corrupt=frozenset({"mistral:7b"}),
    )
    url = served.start()
    yield url
    served.stop()


@pytest.fixture
def standin(tmp_path: Path, registry: str) -> Iterator[StandIn]:
    server = start_standin(tmp_path / "models", registry)
    yield server
    server.stop()
