"""Ollama stand-in servers and the lab model registry on loopback, for tests that need them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpufleet.lab.system import free_port

STANDIN_MODULE = "gpufleet.lab.standins.ollama"
SMALL = 1_000_000


@dataclass
class StandIn:
    url: str
    models: Path
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_standin(models: Path, registry_url: str, **env: str) -> StandIn:
    port = free_port()
    environment = {
        **os.environ,
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "OLLAMA_MODELS": str(models),
        "OLLAMA_STANDIN_REGISTRY": registry_url,
        "OLLAMA_STANDIN_TOKENS_PER_SECOND": "200",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", STANDIN_MODULE, "serve"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/", timeout=1) as response:
                if response.read() == b"Ollama is running":
                    return StandIn(url, models, process)
        except OSError:
            time.sleep(0.05)
    process.kill()
    pytest.fail(f"the stand-in did not start: {process.stderr.read().decode()}")
