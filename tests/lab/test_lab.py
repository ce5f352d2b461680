"""The fleet lab works as the hosts of an EC2 fleet do, seen from Ansible's side.

The lab tests' lab also has bake hosts, Packer's build instances, busy in the background
(tests/lab/baking.py): these tests read the fleet's hosts, and the bake hosts only as EC2
describes them."""

import json
import subprocess
import time
from pathlib import Path

import baking
from labctl import REPO, ec2_client, ec2_instances, fleet_hosts, gpufleet, lab_status, on_host

GPU_TYPES = {"g4dn.xlarge", "g5.xlarge"}


def bake_hosts(lab):
    return {h["name"]: h for h in lab["hosts"] if h["role"] == "bake"}


def test_default_topology_is_three_gpu_hosts_and_one_lb(lab):
    assert lab["state"] == "up"
    assert sorted(fleet_hosts(lab)) == ["gpu-1", "gpu-2", "gpu-3", "lb-1"]
    assert sorted(bake_hosts(lab)) == [f"bake-{n}" for n in range(1, baking.BAKE_HOSTS + 1)]
    assert all(h["state"] == "up" for h in lab["hosts"])


def test_every_host_answers_ssh_as_the_sudo_user(lab):
    for name in fleet_hosts(lab):
        out = on_host(name, "hostname; id -un; sudo -n id -u")
        assert out.split() == [name, "admin", "0"]


def test_systemd_is_pid_1_and_the_system_is_running(lab):
    for name in fleet_hosts(lab):
        out = on_host(name, "cat /proc/1/comm; systemctl is-system-running --wait", check=False)
        failed = on_host(name, "systemctl --failed --no-legend; sudo journalctl -b -p err -q")
        assert out.split() == ["systemd", "running"], f"{name}: {failed}"


def test_each_host_has_its_own_address_and_machine_id(lab):
    seen_ids = set()
    for name, host in fleet_hosts(lab).items():
        out = on_host(name, "ip -4 -o address show dev eth0; cat /etc/machine-id")
        assert f"inet {host['address']}/" in out
        seen_ids.add(out.split()[-1])
    assert len(seen_ids) == len(fleet_hosts(lab))


def test_hosts_reach_each_other(lab):
    probe = (
        "python3 -c 'import socket,sys; "
        "[socket.create_connection((a, 22), timeout=3).close() for a in sys.argv[1:]]' "
    )
    addresses = " ".join(h["address"] for h in fleet_hosts(lab).values())
    for name in fleet_hosts(lab):
        on_host(name, probe + addresses)


def test_apt_installs_a_package_from_the_mirror(lab):
    out = on_host(
        "gpu-2",
        "sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive "
        "apt-get install -y -qq hello >/dev/null && hello",
    )
    assert out.strip() == "Hello, world!"


def test_non_free_components_are_enabled_for_the_driver(lab):
    out = on_host("gpu-2", "apt-cache policy nvidia-kernel-dkms")
    assert "Candidate: (none)" not in out and "non-free" in out


def test_a_reboot_inside_a_host_brings_it_back(lab):
    reboots_before = fleet_hosts(lab_status())["gpu-3"]["reboots"]
    before = on_host("gpu-3", "cat /proc/sys/kernel/random/boot_id").strip()
    on_host("gpu-3", "sudo systemctl reboot", check=False)
    deadline = time.monotonic() + 120
    after = ""
    while time.monotonic() < deadline:
        result = gpufleet("lab", "ssh", "gpu-3", "cat /proc/sys/kernel/random/boot_id", check=False)
        after = result.stdout.strip()
        if result.returncode == 0 and after and after != before:
            break
        time.sleep(1)
    assert after and after != before, "gpu-3 did not come back with a new boot id"
    gpu3 = fleet_hosts(lab_status())["gpu-3"]
    assert gpu3["state"] == "up"
    assert gpu3["last_event"].endswith("boot")
    assert gpu3["reboots"] == reboots_before + 1


def test_ec2_api_lists_one_instance_per_host_at_its_lab_address(lab):
    described = ec2_instances(lab)
    # Named as Packer names its build instance (packer/sources.pkr.hcl's run_tags).
    build_instances = {f"gpufleet-bake {name}": host for name, host in bake_hosts(lab).items()}
    assert sorted(described) == sorted([*fleet_hosts(lab), *build_instances])
    for name, host in {**fleet_hosts(lab), **build_instances}.items():
        instance, tags = described[name]
        assert instance["PrivateIpAddress"] == host["address"]
        assert instance["State"]["Name"] == "running"
        assert tags["gpufleet:role"] == host["role"]
    for name in fleet_hosts(lab):
        _instance, tags = described[name]
        assert tags["gpufleet:env"] == "lab"
        assert tags["gpufleet:pool"]
    # No gpufleet:env, so no fleet inventory lists a build instance.
    assert not any("gpufleet:env" in described[name][1] for name in build_instances)


def test_ec2_instances_vary_like_a_real_fleet(lab):
    described = ec2_instances(lab)
    gpu = [i for i, tags in described.values() if tags["gpufleet:role"] == "gpu"]
    lb = [i for i, tags in described.values() if tags["gpufleet:role"] == "lb"]
    assert {i["InstanceType"] for i in gpu} == GPU_TYPES
    assert {i["InstanceType"] for i in lb} == {"t3.medium"}
    assert {i.get("InstanceLifecycle", "on-demand") for i in gpu} == {"spot", "on-demand"}
    assert len({i["Placement"]["AvailabilityZone"] for i, _tags in described.values()}) == 2
    models = {tags.get("gpufleet:model") for _instance, tags in described.values()}
    assert {"llama3.1:8b", "qwen2.5:7b"} <= models


def test_ec2_api_has_a_baked_gpu_image(lab):
    images = ec2_client(lab).describe_images(
        Filters=[{"Name": "tag:gpufleet:role", "Values": ["gpu"]}]
    )["Images"]
    assert len(images) == 1
    tags = {t["Key"]: t["Value"] for t in images[0]["Tags"]}
    assert tags["gpufleet:env"] == "lab"
    assert tags["gpufleet:baked-at"]


def test_the_lab_inventory_groups_hosts_and_ansible_reaches_them(lab):
    listing = subprocess.run(
        ["ansible-inventory", "-i", lab["inventory"], "--list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    groups = json.loads(listing.stdout)
    assert sorted(groups["role_gpu"]["hosts"]) == ["gpu-1", "gpu-2", "gpu-3"]
    assert groups["role_lb"]["hosts"] == ["lb-1"]
    ansible_host = groups["_meta"]["hostvars"]["gpu-1"]["ansible_host"]
    # ansible-core 2.19 marks values that came from outside as unsafe in its JSON.
    gpu_1 = fleet_hosts(lab)["gpu-1"]["address"]
    assert ansible_host in (gpu_1, {"__ansible_unsafe": "10.77.0.10"})
    ping = subprocess.run(
        ["ansible", "-i", lab["inventory"], "all", "-m", "ansible.builtin.ping", "-o"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert ping.stdout.count("SUCCESS") == 4


def test_host_keys_are_checked_not_ignored(lab):
    connection = Path(lab["inventory"]) / "group_vars" / "all" / "lab_connection.yml"
    ssh_args = json.loads(connection.read_text())["ansible_ssh_common_args"]
    assert ssh_args == f"-F {lab['ssh_config']}"
    config = Path(lab["ssh_config"]).read_text()
    assert "StrictHostKeyChecking yes" in config
    assert "/dev/null" not in config
    key_mode = on_host("gpu-1", "sudo stat -c %a /etc/ssh/ssh_host_ed25519_key").strip()
    assert key_mode == "600"


def test_gpu_hosts_have_their_nvme_disks_as_block_devices(lab):
    disks = {name: h["nvme"] for name, h in fleet_hosts(lab).items()}
    assert disks == {
        "gpu-1": ["/dev/nvme1n1", "/dev/nvme2n1"],
        "gpu-2": ["/dev/nvme1n1"],
        "gpu-3": [],
        "lb-1": [],
    }
    listed = on_host("gpu-1", "sudo blockdev --getsize64 /dev/nvme1n1 /dev/nvme2n1").split()
    assert listed == [str(4 * 1024**3)] * 2
    assert on_host("gpu-3", "ls /dev | grep -c '^nvme' || true").strip() == "0"
