"""Run gpufleet's modules through Ansible itself, on localhost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_module(module: str, args: dict, check: bool = False) -> dict:
    """One module call on localhost, in diff mode; its whole result, as Ansible returns it."""
    command = [
        str(Path(sys.executable).parent / "ansible"),
        "localhost",
        # ansible.cfg fails a run without an inventory; name localhost as one, run as the
        # implicit localhost would be, on this Python.
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        "-m",
        module,
        "-a",
        json.dumps(args),
        "--diff",
    ]
    if check:
        command.append("--check")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
    }
    out = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=REPO, check=False, timeout=300
    ).stdout
    try:
        # ansible.cfg's timing callback prints around the JSON document; read just the document.
        document, _end = json.JSONDecoder().raw_decode(out[out.index("\n{") + 1 :])
        return document["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        pytest.fail(f"no module result in: {out}")
