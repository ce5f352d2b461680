"""Driving the fleet lab from tests: the gpufleet CLI, lab status, commands on hosts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from gpufleet.lab.ec2 import CREDENTIALS

REPO = Path(__file__).resolve().parents[2]


def gpufleet(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", *args],
        # Not the session's stdin: `lab ssh` runs ssh, which makes its stdin non-blocking
        # while it runs, and an ansible-playbook sharing it then refuses to start.
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"gpufleet {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def lab_status() -> dict:
    return json.loads(gpufleet("lab", "status", "--json", check=False).stdout)


def fleet_hosts(lab: dict) -> dict[str, dict]:
    """The fleet's hosts by name, as lab status lists them: every lab host but the bake
    hosts, Packer's build instances, which no fleet inventory lists."""
    return {h["name"]: h for h in lab["hosts"] if h["role"] != "bake"}


def ansible_playbook(
    inventory: str, playbook: str, *extra: str, timeout: float = 1200
) -> subprocess.CompletedProcess:
    """ansible-playbook against the lab's inventory, from the repository, as ops run it."""
    return subprocess.run(
        ["ansible-playbook", "-i", inventory, playbook, *extra],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=timeout,
    )


def molecule_test(scenario: str) -> subprocess.CompletedProcess:
    """`molecule test` for one scenario, on the lab hosts its platforms name. Its stdin is
    its own: it may run in the background beside tests whose ssh would make a shared one
    non-blocking, which Ansible refuses ("requires blocking IO on stdin")."""
    return subprocess.run(
        ["molecule", "test", "--scenario-name", scenario],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=1800,
        env={**os.environ, "NO_COLOR": "1", "ANSIBLE_NOCOLOR": "1"},
    )


def on_host(host: str, command: str, check: bool = True, timeout: float = 300) -> str:
    result = gpufleet("lab", "ssh", host, command, check=False, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"{host}: `{command}` exited {result.returncode}: {result.stderr}")
    return result.stdout


def ec2_client(lab: dict, service: str = "ec2"):
    """A client of the lab's API: EC2, or another service moto serves there."""
    return boto3.client(
        service,
        region_name=lab["region"],
        endpoint_url=lab["ec2_endpoint"],
        **CREDENTIALS,
    )


def ec2_instances(lab: dict) -> dict[str, tuple[dict, dict[str, str]]]:
    """Each lab instance as the lab's EC2 API describes it, and its tags, by Name tag."""
    pages = ec2_client(lab).get_paginator("describe_instances").paginate()
    found = {}
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                # A group's new instance is named once the lab's keeper booted its host.
                if "Name" in tags:
                    found[tags["Name"]] = (instance, tags)
    return found
