"""A lab GPU or bake host baked as the image is: `gpufleet bake`'s ssh_host source aimed at
the host, with the lab's downloads (its lab_vars), its SSH config, and a kernel to build the
driver for. A bake host (`lab up --bake-hosts 1`) is Packer's build instance: no fleet
inventory lists it, so the fleet's playbooks run beside its bake.

Packer then runs the image's own provisioners on it: playbooks/bake.yml, sysprep last, and
the image audit. Afterwards no one can log in (sysprep removed the keys): `lab reset` gives
the host a fresh disk.
"""

from __future__ import annotations

import json

from gpufleet.bake import BakeRequest
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
