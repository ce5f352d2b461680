"""What nvidia_driver leaves on lab hosts (no GPU): DKMS modules for every installed kernel,
from Debian's non-free on bake-1 and from the CUDA repository's stand-in on bake-2.

The real module is built once, on bake-1; the stand-in's module package keeps Debian's
maintainer scripts and dkms.conf with sources that build in seconds."""

import pytest

CUDA_SOURCES = "/etc/apt/sources.list.d/gpufleet-nvidia-cuda.sources"


def kernels(host):
    return [
        k.removeprefix("vmlinuz-")
        for k in host.run("ls /boot").stdout.split()
        if k.startswith("vmlinuz-")
    ]


def from_cuda_repository(host):
    return host.file(CUDA_SOURCES).exists


def test_a_kernel_is_installed(host):
    assert kernels(host)


def test_module_is_built_for_every_installed_kernel(host):
    for kernel in kernels(host):
        assert host.file(f"/lib/modules/{kernel}/updates/dkms/nvidia-current.ko").exists, kernel
    with host.sudo():
        status = host.run("dkms status").stdout
    assert all(f"{k}, x86_64: installed" in status for k in kernels(host)), status


def test_debian_non_free_gives_nvidia_own_module(host):
    if from_cuda_repository(host):
        pytest.skip("the CUDA repository stand-in's module sources are small stand-ins")
    for kernel in kernels(host):
        module = f"/lib/modules/{kernel}/updates/dkms/nvidia-current.ko"
        assert host.run(f"/sbin/modinfo -F license {module}").stdout.strip() == "NVIDIA"


def test_driver_not_toolkit(host):
    assert host.package("nvidia-kernel-dkms").is_installed
    assert not host.package("nvidia-cuda-toolkit").is_installed


def test_nouveau_blacklisted_and_packages_held(host):
    assert host.file("/etc/modprobe.d/gpufleet-blacklist-nouveau.conf").contains(
        "^blacklist nouveau$"
    )
    # nouveau must not load from the initramfs either: each kernel's image carries the blacklist.
    for kernel in kernels(host):
        with host.sudo():
            listed = host.check_output(f"lsinitramfs /boot/initrd.img-{kernel}")
        assert "etc/modprobe.d/gpufleet-blacklist-nouveau.conf" in listed.split(), kernel
    held = set(host.run("apt-mark showhold").stdout.split())
    if from_cuda_repository(host):
        assert {"nvidia-driver-cuda", "nvidia-kernel-dkms", "nvidia-persistenced"} <= held
    else:
        assert {"nvidia-kernel-dkms", "nvidia-driver", "firmware-nvidia-gsp"} <= held


def test_persistenced_enabled(host):
    assert host.service("nvidia-persistenced").is_enabled


def sources_of_installed(policy):
    """The sources listed under the installed (***) version in `apt-cache policy`."""
    lines = policy.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("*** "))
    sources = []
    for line in lines[start + 1 :]:
        if not line.startswith(" " * 8):
            break
        sources.append(line.split(maxsplit=1)[1])
    return sources


def test_driver_packages_came_from_the_cuda_repository(host):
    if not from_cuda_repository(host):
        pytest.skip("this host uses Debian's non-free")
    sources_file = host.file(CUDA_SOURCES).content_string
    assert "Signed-By: /etc/apt/keyrings/gpufleet-nvidia-cuda.asc" in sources_file
    repo = sources_file.split("URIs: ")[1].split()[0].rstrip("/")
    for package in ("nvidia-driver-cuda", "nvidia-kernel-dkms", "libcuda1", "firmware-nvidia-gsp"):
        policy = host.run(f"apt-cache policy {package}").stdout
        sources = sources_of_installed(policy)
        assert any(source.startswith(f"{repo} ") for source in sources), policy
        assert not any("debian.org" in source for source in sources), policy


def test_debian_non_free_was_not_used(host):
    if not from_cuda_repository(host):
        pytest.skip("this host uses Debian's non-free")
    assert not host.file("/etc/apt/sources.list.d/gpufleet-nonfree.sources").exists
    assert "non-free" not in host.file("/etc/apt/sources.list").content_string


def test_driver_packages_are_pinned_to_the_branch(host):
    if not from_cuda_repository(host):
        pytest.skip("this host uses Debian's non-free")
    policy = host.run("apt-cache policy nvidia-kernel-dkms").stdout
    assert "535." in policy.split("Candidate: ")[1].split()[0]
    assert " 1000\n" in policy.split("Version table:")[1], policy
