"""Fixtures shared by the test folders: the lab model registry, Ollama stand-ins, and a real
moto server on loopback for the code that calls AWS.

Helpers live in modules with their own names (standin_server, and each folder's),
never in conftest.py, so folders can run in one pytest session.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer
from standin_server import SMALL, StandIn, start_standin

from gpufleet.lab.standins.ollama.registry import Registry


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


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def moto(moto_url: str) -> str:
    """The moto endpoint, emptied before each test."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"))
    return moto_url


@pytest.fixture(scope="module")
def groups_as_ec2s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The lab's Auto Scaling groups on the tests' moto server (gpufleet.lab.ec2_groups: spot
    launched as spot, an update's policy keeping what it omits) for one module's tests:
    moto's own are put back afterwards."""
    from moto.autoscaling import models

    from gpufleet.lab import ec2_groups

    group = models.FakeAutoScalingGroup
    kept = (group.set_desired_capacity, group.update)
    ec2_groups.install(tmp_path_factory.mktemp("ec2"))
    yield
    group.set_desired_capacity, group.update = kept
