"""nvidia_driver refuses what it cannot do on a real host, names the variable and installs
no driver: a repository key with the wrong fingerprint, a branch the source lacks, a host
with no kernel to build the module for."""

import pytest
from labctl import ansible_playbook, gpufleet, on_host

pytestmark = pytest.mark.lab_fresh_hosts

HOST = "gpu-2"
# Lab hosts boot the machine's kernel and have none in /boot, as the molecule scenario says.
A_KERNEL = '{"nvidia_driver_kernel_packages": ["linux-image-amd64"]}'
PLAYBOOK = """
- name: Apply nvidia_driver
  hosts: {host}
  become: true
  roles:
    - role: gpufleet.fleet.nvidia_driver
"""


@pytest.fixture
def apply_role(lab, tmp_path):
    """Run the role on a freshly reset host; each call must fail."""
    gpufleet("lab", "reset", HOST)
    playbook = tmp_path / "nvidia_driver.yml"
    playbook.write_text(PLAYBOOK.format(host=HOST))

    def run(*extra_vars: str, kernel: str = A_KERNEL) -> str:
        extra = ["-e", kernel]
        for assignment in extra_vars:
            extra += ["-e", assignment]
        result = ansible_playbook(lab["inventory"], str(playbook), *extra, timeout=600)
        assert result.returncode != 0, result.stdout[-3000:]
        return result.stdout + result.stderr

    return run


def assert_no_driver_installed():
    probe = "dpkg-query -W -f='${Status}' nvidia-kernel-dkms 2>/dev/null || true"
    assert "install ok installed" not in on_host(HOST, probe)


def test_a_repository_key_with_another_fingerprint_is_not_trusted(apply_role):
    output = apply_role(
        "nvidia_driver_source=cuda",
        "nvidia_driver_cuda_repo_key_fingerprint=EB693B3035CD5710E231E123A4B469963BF863CC",
    )
    assert "does not have the fingerprint EB693B3035CD5710E231E123A4B469963BF863CC" in output
    assert "(nvidia_driver_cuda_repo_key_fingerprint); apt was not told to trust it" in output
    assert on_host(HOST, "ls /etc/apt/keyrings /etc/apt/sources.list.d").count("nvidia") == 0
    assert_no_driver_installed()


def test_a_branch_the_cuda_repository_lacks_stops_before_any_install(apply_role):
    output = apply_role("nvidia_driver_source=cuda", "nvidia_driver_branch=580")
    assert "has no nvidia-kernel-dkms on branch 580 (nvidia_driver_branch)" in output
    assert "Nothing was installed." in output
    assert_no_driver_installed()


def test_a_branch_debian_does_not_ship_is_refused_before_touching_the_host(apply_role):
    output = apply_role("nvidia_driver_branch=580")
    assert "driver branch 535 only, not nvidia_driver_branch 580" in output
    assert "set nvidia_driver_source: cuda for other branches" in output
    assert not on_host(HOST, "ls /etc/apt/sources.list.d").strip()
    assert_no_driver_installed()


def test_a_host_without_a_kernel_is_refused_before_touching_it(apply_role):
    output = apply_role(kernel='{"nvidia_driver_kernel_packages": []}')
    assert f"{HOST} has no kernel in /boot, so no driver module would be built" in output
    assert "name the kernel the image boots in nvidia_driver_kernel_packages" in output
    assert not on_host(HOST, "ls /etc/apt/sources.list.d").strip()
    assert_no_driver_installed()
