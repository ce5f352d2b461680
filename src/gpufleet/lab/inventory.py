"""The inventory the lab writes: a gpufleet_ec2 source aimed at the local EC2 API.

Playbooks read the lab through the same dynamic EC2 inventory they use in AWS;
only the endpoint, the credentials and how SSH reaches the hosts differ.
"""

from __future__ import annotations

import json
from pathlib import Path

from gpufleet.lab.ec2 import CREDENTIALS, endpoint
from gpufleet.lab.standins import Artifacts
from gpufleet.lab.topology import SSH_USER, LabPaths, LabTopology

SOURCE_NAME = "lab.gpufleet_ec2.yml"


def ssh_common_args(paths: LabPaths) -> str:
    return f"-o UserKnownHostsFile={paths.known_hosts} -o StrictHostKeyChecking=yes"


def write(paths: LabPaths, topology: LabTopology, artifacts: Artifacts | None) -> Path:
    """Write the inventory directory and return it; YAML is written as JSON, its subset."""
    directory = paths.inventory_dir
    (directory / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    source = {
        "plugin": "gpufleet_ec2",
        "regions": [topology.region],
        "endpoint_url": endpoint(topology.ec2_port),
        "aws_access_key": CREDENTIALS["aws_access_key_id"],
        "aws_secret_key": CREDENTIALS["aws_secret_access_key"],
        "filters": {"tag:gpufleet:env": "lab"},
        "hostnames": ["tag:Name"],
    }
    connection = {
        "ansible_user": SSH_USER,
        "ansible_ssh_private_key_file": str(paths.ssh_key),
        "ansible_ssh_common_args": ssh_common_args(paths),
    }
    (directory / SOURCE_NAME).write_text(json.dumps(source, indent=2) + "\n")
    (directory / "group_vars" / "all" / "lab_connection.yml").write_text(
        json.dumps(connection, indent=2) + "\n"
    )
    if artifacts is not None:
        _write_standin_vars(directory, topology, artifacts)
    return directory


def _write_standin_vars(directory: Path, topology: LabTopology, artifacts: Artifacts) -> None:
    """Where the lab's hosts get Ollama and node exporter: release archives by URL and sha256
    as in production, and the lab registry for bare model names (a stand-in-only setting)."""
    base = f"http://{topology.gateway}:{topology.registry_port}"
    newest, exporter = artifacts["ollama"][0], artifacts["node_exporter"]
    cuda_repo = f"{base}/files/{artifacts['cuda_repo']['path']}/"
    standin = {
        # Used when a play sets nvidia_driver_source: cuda.
        "nvidia_driver_cuda_repo_url": cuda_repo,
        "nvidia_driver_cuda_repo_key_url": cuda_repo + artifacts["cuda_repo"]["key"],
        "nvidia_driver_cuda_repo_key_fingerprint": artifacts["cuda_repo"]["fingerprint"],
        "node_exporter_version": exporter["version"],
        "node_exporter_archive_url": f"{base}/files/{exporter['archive']}",
        "node_exporter_archive_sha256": exporter["sha256"],
        "ollama_version": newest["version"],
        "ollama_release_url": f"{base}/files/{newest['path']}",
        "ollama_release_sha256": newest["sha256"],
        # Every release served, for tests that upgrade and downgrade.
        "lab_ollama_releases": {
            release["version"]: {
                "url": f"{base}/files/{release['path']}",
                "sha256": release["sha256"],
            }
            for release in artifacts["ollama"]
        },
        "ollama_extra_environment": {"OLLAMA_STANDIN_REGISTRY": base},
        "lab_model_registry": base,
    }
    (directory / "group_vars" / "all" / "lab_standins.yml").write_text(
        json.dumps(standin, indent=2) + "\n"
    )
