"""The inventory the lab writes: a gpufleet_ec2 source aimed at the local EC2 API.

Playbooks read the lab through the same dynamic EC2 inventory they use in AWS;
only the endpoint, the credentials and how SSH reaches the hosts differ.

    <state>/inventory/lab.gpufleet_ec2.yml            the EC2 source
    <state>/inventory/group_vars/all/lab_connection.yml   SSH through <state>/ssh/config
    <state>/inventory/group_vars/all/lab_vars.yml          the lab-to-role contract

The contract (LabPaths.lab_vars) is the one file playbooks, molecule scenarios and
tests read the lab's download URLs and checksums from; `gpufleet lab status --json`
names it, and molecule gets it as GPUFLEET_LAB_VARS.
"""

from __future__ import annotations

import json
from pathlib import Path

from gpufleet.lab import disks
from gpufleet.lab.downloads import Artifacts
from gpufleet.lab.ec2 import CREDENTIALS, LAB_ENV, endpoint
from gpufleet.lab.system import write_whole
from gpufleet.lab.topology import SSH_USER, LabPaths, LabTopology
from gpufleet.tags import ENV

SOURCE_NAME = "lab.gpufleet_ec2.yml"


# The lab's scaling windows: the seeds' shape (a window above the threshold adds 1, or 2 far
# above it; a longer one below removes 1) in seconds, not minutes.
SCALER_POOL_DEFAULTS = {
    "min": 1,
    "max": 3,
    "scale_out_queue": 4,
    "scale_out_window": 10,
    "scale_in_queue": 1,
    "scale_in_window": 15,
    "step_factor": 3,
    "error_ratio": 0.1,
}


def ssh_config(paths: LabPaths) -> str:
    """The one place that says how SSH reaches lab hosts; host keys stay checked."""
    return (
        "# Written by `gpufleet lab up`: how SSH reaches the lab's hosts.\n"
        "Host *\n"
        f"    User {SSH_USER}\n"
        f"    IdentityFile {paths.ssh_key}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {paths.known_hosts}\n"
        "    StrictHostKeyChecking yes\n"
        "    BatchMode yes\n"
        "    ConnectTimeout 5\n"
    )


def write(paths: LabPaths, topology: LabTopology, artifacts: Artifacts) -> Path:
    """Write the SSH config and the inventory directory; YAML is written as JSON, its subset."""
    write_whole(paths.ssh_config, ssh_config(paths))
    directory = paths.inventory_dir
    paths.lab_vars.parent.mkdir(parents=True, exist_ok=True)
    source = {
        "plugin": "gpufleet.fleet.gpufleet_ec2",
        "regions": [topology.region],
        "endpoint_url": endpoint(topology.ec2_port),
        "access_key": CREDENTIALS["aws_access_key_id"],
        "secret_key": CREDENTIALS["aws_secret_access_key"],
        "filters": {f"tag:{ENV}": LAB_ENV},
        "hostnames": ["tag:Name"],
    }
    connection = {"ansible_ssh_common_args": f"-F {paths.ssh_config}"}
    _write_json(directory / SOURCE_NAME, source)
    _write_json(paths.lab_vars.with_name("lab_connection.yml"), connection)
    _write_json(paths.lab_vars, lab_vars(topology, artifacts))
    return directory


def _write_json(path: Path, content: dict) -> None:
    write_whole(path, json.dumps(content, indent=2) + "\n")


def lab_vars(topology: LabTopology, artifacts: Artifacts) -> dict[str, object]:
    """Where the lab's hosts get Ollama, node exporter and the driver: release archives by URL
    and sha256 as in production, and the lab registry for bare model names (a stand-in-only
    setting)."""
    base = f"http://{topology.gateway}:{topology.registry_port}"
    imds_url = f"http://{topology.gateway}:{topology.imds_port}"
    newest, exporter = artifacts["ollama"][0], artifacts["node_exporter"]
    cuda_repo = f"{base}/files/{artifacts['cuda_repo']['path']}/"
    return {
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
        # The model store's bake pulls bare names from the lab registry too.
        "model_store_seed_environment": {"OLLAMA_STANDIN_REGISTRY": base},
        # Lab hosts have no udev, so no /dev/disk/by-id: name each host's disks. btrfs
        # stripes them here, as the lab's kernel has no md.
        "lab_nvme_devices": {h.name: disks.names_inside(h) for h in topology.hosts},
        "model_store_nvme_devices": "{{ lab_nvme_devices[inventory_hostname] | default([]) }}",
        "model_store_raid_backend": "btrfs",
        # model_swap reads manifests from the lab registry and tags instances in the lab's EC2.
        "model_swap_registry": base,
        "model_swap_aws_endpoint_url": endpoint(topology.ec2_port),
        "model_swap_aws_access_key": CREDENTIALS["aws_access_key_id"],
        "model_swap_aws_secret_key": CREDENTIALS["aws_secret_access_key"],
        # The pools' groups (capacity.yml) live in the lab's EC2 API, their instances tagged
        # with the lab's env; the keeper (gpufleet.lab.instance_keeper) boots them.
        "capacity_region": topology.region,
        "capacity_env": LAB_ENV,
        "capacity_registry": base,
        "capacity_aws_endpoint_url": endpoint(topology.ec2_port),
        "capacity_aws_access_key": CREDENTIALS["aws_access_key_id"],
        "capacity_aws_secret_key": CREDENTIALS["aws_secret_access_key"],
        # Who may reach what (host_firewall): the controller is the lab's ops and monitoring
        # host; clients reach the LB from anywhere on the lab's subnet.
        "fleet_ops_cidrs": [f"{topology.gateway}/32"],
        "fleet_monitoring_cidrs": [f"{topology.gateway}/32"],
        "fleet_client_cidrs": [topology.subnet],
        # The lab's IMDS stand-in, where `gpufleet lab spot-notice` gives hosts notices and
        # the boot-time code finds the host's address.
        "fleet_agent_imds_url": imds_url,
        # A notice is asked for every second, not EC2's suggested 5: the lab's notice is
        # EC2's two minutes divided by the keeper's TIME_FACTOR (15 s), and streams begun
        # before the LB drains the host must end in what is left of it.
        "fleet_agent_imds_interval": 1,
        "instance_runtime_imds_url": imds_url,
        # Each LB keeps its backends' slots in step with the lab's EC2 API, which listens on
        # the bridge's gateway for the hosts, with moto's credentials. Six slots: the launch
        # tests' two hosts stay up beside the capacity tests' group, up to four at once (its
        # on-demand base, its spot, a stand-in and a replacement).
        "haproxy_membership_slots": 6,
        "lb_membership_aws_endpoint_url": f"http://{topology.gateway}:{topology.ec2_port}",
        "lb_membership_aws_access_key": CREDENTIALS["aws_access_key_id"],
        "lb_membership_aws_secret_key": CREDENTIALS["aws_secret_access_key"],
        # A lab host down 10 s is replaced: the lab's hosts reboot in seconds. Not within 30 s
        # of its launch (its group's grace period, which the lab's keeper respects as EC2
        # does): a lab host boots and serves in about 15.
        "lb_membership_unhealthy_after": 10,
        "capacity_health_check_grace_period": 30,
        # Spot missing 10 s is stood in for: the lab's groups launch and refuse spot at once.
        "lb_membership_spot_fallback_after": 10,
        # The scaler (loadbalancer.yml with scaler_pools, on lb-1) with the lab's API, and
        # windows of seconds: the lab's hosts boot and serve in about 15.
        "scaler_aws_endpoint_url": f"http://{topology.gateway}:{topology.ec2_port}",
        "scaler_aws_access_key": CREDENTIALS["aws_access_key_id"],
        "scaler_aws_secret_key": CREDENTIALS["aws_secret_access_key"],
        "scaler_interval": 2,
        "scaler_pool_defaults": SCALER_POOL_DEFAULTS,
        "scaler_drain_timeout": 120,
        # The LB hosts' networks an image's firewall lets reach Ollama: in AWS the LB subnets,
        # here each LB host's address, the lab's subnet being every host's.
        "fleet_lb_cidrs": [f"{h.address}/32" for h in topology.hosts if h.role == "lb"],
    }
