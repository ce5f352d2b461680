"""A lab GPU or bake host baked as the image is: `gpufleet bake`'s ssh_host source aimed at
the host, with the lab's downloads (its lab_vars), its SSH config, and a kernel to build the
driver for. A bake host (`lab up --bake-hosts 1`) is Packer's build instance: no fleet
inventory lists it, so the fleet's playbooks run beside its bake.

Packer then runs the image's own provisioners on it: playbooks/bake.yml, sysprep last, and
the image audit. Afterwards no one can log in (sysprep removed the keys): the lab audits the
disk again from outside, keeps it as an image (lab/images.py) and gives the host a fresh disk.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gpufleet.bake import REPO, BakeRequest
from gpufleet.lab import LabError
from gpufleet.lab.topology import LabPaths, LabTopology

# An AMI carries the kernel it boots; a lab host boots the machine's and has none in /boot.
LAB_HOST_KERNEL = {"nvidia_driver_kernel_packages": ["linux-image-amd64"]}


def default_models(topology: LabTopology, name: str) -> list[str]:
    """A GPU host's image carries its own model; the build instance's, every served one."""
    host = topology.host(name)
    if host.model:
        return [host.model]
    return sorted({h.model for h in topology.hosts if h.model})


def bake_request(
    paths: LabPaths, topology: LabTopology, name: str, models: list[str]
) -> BakeRequest:
    host = topology.host(name)
    if host.role not in ("gpu", "bake"):
        raise LabError(f"{name} is a {host.role} host: the image is for GPU hosts")
    lab_vars = json.loads(paths.lab_vars.read_text())
    variables = {
        "ssh_host": host.address,
        "ssh_private_key_file": str(paths.ssh_key),
        "ollama_version": lab_vars["ollama_version"],
        "ollama_release_sha256": lab_vars["ollama_release_sha256"],
        "models": json.dumps(models),
        "ansible_extra_vars_files": json.dumps([str(paths.lab_vars)]),
        # Who an instance of the image lets in: the lab's LB, ops and monitoring addresses.
        "lb_cidrs": json.dumps(lab_vars["fleet_lb_cidrs"]),
        "ops_cidrs": json.dumps(lab_vars["fleet_ops_cidrs"]),
        "monitoring_cidrs": json.dumps(lab_vars["fleet_monitoring_cidrs"]),
        "ansible_extra_arguments": json.dumps(
            [
                f"--ssh-common-args=-F {paths.ssh_config}",
                "--extra-vars",
                json.dumps(LAB_HOST_KERNEL),
            ]
        ),
    }
    return BakeRequest(
        source="null.ssh_host",
        variables=variables,
        manifest=paths.state / "bake" / "packer-manifest.json",
    )


def audit_from_outside(root: Path) -> str:
    """The image audit (packer/image_audit.py) on the baked disk, read as one reads an AMI's
    snapshot: "clean", or "failed: " with its first finding and how many there are."""
    result = subprocess.run(
        [sys.executable, str(REPO / "packer" / "image_audit.py"), "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line.removeprefix("image audit: ") for line in result.stdout.splitlines()]
    if result.returncode == 0:
        return "clean"
    findings = lines[:-1] or [result.stderr.strip() or f"exit status {result.returncode}"]
    return f"failed: {findings[0]} ({len(findings)} findings)"
