"""The bake's real provisioning chain on a throwaway lab host: `gpufleet lab bake` runs Packer's
ssh source (Debian's Packer 1.6.6, the template staged without its required_plugins block)
with the same provisioners as the AMI build: playbooks/bake.yml, sysprep last, then the image
audit in Packer's still-open session. Afterwards the host's disk is audited again from
outside, as one would read the image's snapshot: sysprep removed the keys SSH would need.

First, while bake-1 still has the NVIDIA module the nvidia_driver scenario built with DKMS,
the patch window's check before a reboot reads the real `dkms status` on it."""

import json
import subprocess
import sys

import baking
import pytest
import repo_scripts
from baking import HOST, MODELS
from labctl import ansible_playbook, ec2_client, gpufleet, on_host

from gpufleet.lab import images
from gpufleet.lab.topology import LabPaths

pytestmark = pytest.mark.lab_after_scenarios
audit = repo_scripts.load("packer/image_audit.py")


DRIVER_PLAYBOOK = f"""
- name: Build the NVIDIA module with DKMS, as the nvidia_driver scenario leaves {HOST}
  hosts: {HOST}
  become: true
  roles:
    - role: gpufleet.fleet.nvidia_driver
      nvidia_driver_kernel_packages: [linux-image-amd64]
"""
DKMS_CHECK_PLAYBOOK = f"""
- name: Check the NVIDIA module is built for every kernel, as a patch does before a reboot
  hosts: {HOST}
  become: true
  tasks:
    - name: Check the NVIDIA module against every installed kernel
      ansible.builtin.include_role:
        name: gpufleet.fleet.patch
        tasks_from: dkms
"""
# A kernel installed without its headers: DKMS had nothing to build the module against.
UNBUILT_KERNEL = "6.1.0-99-amd64"


def with_the_bake_host(lab, tmp_path):
    """The lab's inventory, and the bake host beside it: Packer's build instance is in no
    inventory, and the lab's group_vars (its SSH config, its downloads) apply to it too."""
    address = next(h["address"] for h in lab["hosts"] if h["name"] == HOST)
    bake_host = tmp_path / "bake_host.yml"
    bake_host.write_text(json.dumps({"all": {"hosts": {HOST: {"ansible_host": address}}}}))
    return ["-i", str(bake_host)]


@pytest.mark.lab_on_the_driver_build
def test_a_patch_refuses_to_reboot_into_a_kernel_the_nvidia_module_is_not_built_for(lab, tmp_path):
    baking.scenario()
    bake_host = with_the_bake_host(lab, tmp_path)
    if "nvidia" not in on_host(HOST, "sudo dkms status 2>/dev/null || true"):
        driver = tmp_path / "driver.yml"
        driver.write_text(DRIVER_PLAYBOOK)
        built = ansible_playbook(lab["inventory"], str(driver), *bake_host, timeout=1200)
        assert built.returncode == 0, built.stdout[-3000:]
    check = tmp_path / "dkms.yml"
    check.write_text(DKMS_CHECK_PLAYBOOK)
    built_for_all = ansible_playbook(lab["inventory"], str(check), *bake_host)
    assert built_for_all.returncode == 0, built_for_all.stdout[-3000:]
    on_host(HOST, f"sudo touch /boot/vmlinuz-{UNBUILT_KERNEL}")
    try:
        refused = ansible_playbook(lab["inventory"], str(check), *bake_host)
    finally:
        on_host(HOST, f"sudo rm /boot/vmlinuz-{UNBUILT_KERNEL}")
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output[-3000:]
    assert (
        f"the NVIDIA module is not built for kernel {UNBUILT_KERNEL} (dkms status: nvidia" in output
    )
    assert "The host is not rebooted and stays drained" in output
    # bake-1 has served its part as the scenario left it: the run's bake may take it now.
    baking.start()


def output(baked):
    return "\n".join(line for _second, line in baked["lines"])


def test_the_bake_succeeds_and_its_audit_finds_the_image_clean(baked):
    text = output(baked)
    assert baked["status"] == 0, text[-6000:]
    assert "PLAY RECAP" in text and "failed=0" in text
    audit_lines = [line for _s, line in baked["lines"] if "image audit: " in line]
    assert audit_lines and audit_lines[-1].split("image audit: ", 1)[1].startswith("clean;")
    manifest = json.loads(baked["manifest"].read_text())
    assert manifest["builds"][-1]["builder_type"] == "null"
    print(f"bake on {HOST}: {baked['seconds']:.0f} s; {audit_lines[-1]}")


def test_packers_output_is_streamed_as_it_comes(baked):
    """The first play starts minutes before the bake ends, and is seen then, not at the end."""
    # Packer prefixes each line of the provisioner's output with the build's name.
    first_play = next(second for second, line in baked["lines"] if ": PLAY [" in line)
    assert baked["seconds"] - first_play > 60


def test_the_bake_is_kept_as_an_image_in_the_local_ec2_api_with_its_tags(lab, baked):
    """The AMI as the bake's manifest tagged it, its audit verdict, and the host given a
    fresh disk (it answers SSH with the lab's key again)."""
    image = ec2_client(lab).describe_images(ImageIds=[baked["image"]])["Images"][0]
    image_tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    assert image_tags["gpufleet:models"] == " ".join(MODELS)
    assert image_tags["gpufleet:role"] == "gpu"
    assert image_tags["gpufleet:audit"] == "clean"
    assert image_tags["gpufleet:ollama"] and image_tags["gpufleet:baked-at"]
    listed = gpufleet("lab", "images").stdout
    assert baked["image"] in listed and "audit clean" in listed
    assert on_host(HOST, "cat /etc/machine-id").strip()


def test_the_images_disk_read_from_outside_is_clean_and_holds_the_bake(baked):
    with images.mounted(LabPaths.from_environment(), baked["image"]) as image:
        read_the_image(image)


def read_the_image(image):
    findings, used = audit.audit(audit.Image(image), [])
    assert findings == []
    assert (image / "etc/machine-id").read_text() == ""
    assert not list((image / "etc/ssh").glob("ssh_host_*"))
    assert not (image / "home/admin/.ssh/authorized_keys").exists()
    seed = json.loads((image / "opt/gpufleet/models-seed/gpufleet-seed.json").read_text())
    assert sorted(seed["models"]) == sorted(f"{m}:latest" if ":" not in m else m for m in MODELS)
    assert list(image.glob("lib/modules/*/updates/dkms/nvidia-current.ko"))
    for unit in ("gpufleet-ssh-host-keys", "gpufleet-instance-address", "gpufleet-fleet-agent"):
        assert (image / f"etc/systemd/system/{unit}.service").exists(), unit
    assert "Ollama API" in (image / "etc/nftables.conf").read_text()
    print(f"the image's files take {used / 1e9:.2f} GB")


def test_the_audit_from_outside_fails_on_what_must_not_be_there(baked):
    paths = LabPaths.from_environment()
    planted = images.disk(paths, baked["image"]) / "home/admin/.aws/credentials"
    planted.parent.mkdir(parents=True)
    planted.write_text("[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n")
    try:
        with images.mounted(paths, baked["image"]) as image:
            result = subprocess.run(
                [sys.executable, str(repo_scripts.REPO / "packer/image_audit.py"), "--root", image],
                capture_output=True,
                text=True,
                check=False,
            )
    finally:
        planted.unlink()
        planted.parent.rmdir()
    assert result.returncode == 1
    assert "image audit: /home/admin/.aws/credentials: AWS credentials" in result.stdout
