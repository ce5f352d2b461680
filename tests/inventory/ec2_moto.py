"""Seeding a moto server and running ansible-inventory against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from gpufleet import tags
from gpufleet.lab.ec2 import CREDENTIALS

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ANSIBLE_INVENTORY = str(Path(sys.executable).parent / "ansible-inventory")
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


def ec2(endpoint: str, region: str = REGION):
    return boto3.client("ec2", region_name=region, endpoint_url=endpoint, **CREDENTIALS)


def base_image(client) -> str:
    return sorted(i["ImageId"] for i in client.describe_images(Owners=["amazon"])["Images"])[0]


def launch(
    endpoint: str,
    tags: dict[str, str],
    instance_type: str = "g4dn.xlarge",
    region: str = REGION,
    spot: bool = False,
    image_id: str | None = None,
    count: int = 1,
    zone: str | None = None,
) -> list[str]:
    client = ec2(endpoint, region)
    request = {
        "ImageId": image_id or base_image(client),
        "InstanceType": instance_type,
        "MinCount": count,
        "MaxCount": count,
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ],
    }
    if spot:
        request["InstanceMarketOptions"] = {"MarketType": "spot"}
    if zone:
        request["Placement"] = {"AvailabilityZone": zone}
    return [i["InstanceId"] for i in client.run_instances(**request)["Instances"]]


def fleet_tags(
    name: str,
    role: str = "gpu",
    pool: str = "chat",
    model: str = "llama3.1:8b",
    env: str = "prod",
    **extra: str,
) -> dict[str, str]:
    return {**tags.fleet_tags(name, role, pool, env, model), **extra}


def write_source(directory: Path, config: dict, name: str = "test.gpufleet_ec2.yml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(config))
    return path


def inventory_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_INVENTORY_"))}
    return {
        **env,
        # The project's own settings decide whether a failed source fails the run.
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }


def run_inventory(source: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    result = run_ansible(ANSIBLE_INVENTORY, "-i", str(source), "--list", **env)
    if check and result.returncode != 0:
        pytest.fail(f"ansible-inventory failed: {result.stderr}")
    return result


def run_ansible(*argv: str, **env: str) -> subprocess.CompletedProcess:
    """An Ansible command with the project's ansible.cfg, as an operator runs it."""
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=inventory_env(**env),
        cwd=REPO,
        check=False,
        timeout=300,
    )


def listing(source: Path, **env: str) -> dict:
    return json.loads(run_inventory(source, **env).stdout)


def plain(value):
    """ansible-core 2.19 marks untrusted strings in its JSON; read through that."""
    if isinstance(value, dict) and set(value) == {"__ansible_unsafe"}:
        return value["__ansible_unsafe"]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def groups_of(data: dict) -> dict[str, list[str]]:
    return {
        g: sorted(v.get("hosts", []))
        for g, v in data.items()
        if g not in ("_meta", "all") and v.get("hosts")
    }


def source_config(endpoint: str, **options) -> dict:
    return {
        "plugin": "gpufleet.fleet.gpufleet_ec2",
        "regions": [REGION],
        "endpoint_url": endpoint,
        "aws_access_key": CREDENTIALS["aws_access_key_id"],
        "aws_secret_key": CREDENTIALS["aws_secret_access_key"],
        "hostnames": ["tag:Name", "instance-id"],
        **options,
    }
