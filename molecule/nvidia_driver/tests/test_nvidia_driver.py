"""What nvidia_driver leaves on a lab host (no GPU): DKMS modules for every installed kernel."""


def kernels(host):
    return [
        k.removeprefix("vmlinuz-")
        for k in host.run("ls /boot").stdout.split()
        if k.startswith("vmlinuz-")
    ]


def test_a_kernel_is_installed(host):
    assert kernels(host)


def test_module_is_built_for_every_installed_kernel(host):
    for kernel in kernels(host):
        assert host.file(f"/lib/modules/{kernel}/updates/dkms/nvidia-current.ko").exists, kernel
    with host.sudo():
        status = host.run("dkms status").stdout
    assert all(f"{k}, x86_64: installed" in status for k in kernels(host)), status


def test_driver_not_toolkit(host):
    assert host.package("nvidia-kernel-dkms").is_installed
    assert not host.package("nvidia-cuda-toolkit").is_installed


def test_nouveau_blacklisted_and_packages_held(host):
    assert host.file("/etc/modprobe.d/gpufleet-blacklist-nouveau.conf").contains(
        "^blacklist nouveau$"
    )
    held = host.run("apt-mark showhold").stdout.split()
    assert {"nvidia-kernel-dkms", "nvidia-driver", "firmware-nvidia-gsp"} <= set(held)


def test_persistenced_enabled(host):
    assert host.service("nvidia-persistenced").is_enabled
