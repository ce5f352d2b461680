"""The patch window's filters: apt's simulation, needrestart's batch verdict, the reasons to
reboot, and the report's table. The inputs are the tools' own output formats."""

import repo_scripts

patch = repo_scripts.load("plugins/filter/patch.py")

PATTERNS = {
    "kernel": r"^linux-(image|headers|modules)-",
    "nvidia": r"^(nvidia-|libnvidia-|libcuda|firmware-nvidia-)",
}

# apt-get --simulate dist-upgrade on a lab host, with a new kernel added as Debian prints it.
SIMULATION = """\
Reading package lists...
Building dependency tree...
The following NEW packages will be installed:
  linux-image-6.1.0-42-amd64
The following packages will be upgraded:
  libc6 libexpat1
Inst libc6 [2.36-9+deb12u14] (2.36-9+deb12u14+gpufleet1 gpufleet lab:./ [amd64])
Inst libexpat1 [2.5.0-1+deb12u2] (2.5.0-1+deb12u5 Debian-Security:12/oldstable-security [amd64])
Inst linux-image-6.1.0-42-amd64 (6.1.159-1 Debian-Security:12/oldstable-security [amd64])
Conf libc6 (2.36-9+deb12u14+gpufleet1 gpufleet lab:./ [amd64])
Conf libexpat1 (2.5.0-1+deb12u5 Debian-Security:12/oldstable-security [amd64])
"""

# needrestart -b -r l after that upgrade on a lab host (no kernel it can read), and on a VM.
NEEDRESTART_CONTAINER = """\
NEEDRESTART-VER: 3.6
NEEDRESTART-SVC: ssh.service
NEEDRESTART-SVC: dbus.service
NEEDRESTART-SVC: systemd-manager
"""
NEEDRESTART_VM = """\
NEEDRESTART-VER: 3.6
NEEDRESTART-KCUR: 6.1.0-41-amd64
NEEDRESTART-KEXP: 6.1.0-42-amd64
NEEDRESTART-KSTA: 3
NEEDRESTART-UCSTA: 1
NEEDRESTART-SVC: ollama.service
"""


def test_the_simulation_lists_upgrades_and_new_packages_in_order():
    assert patch.patch_upgrades(SIMULATION) == [
        {"name": "libc6", "from": "2.36-9+deb12u14", "to": "2.36-9+deb12u14+gpufleet1"},
        {"name": "libexpat1", "from": "2.5.0-1+deb12u2", "to": "2.5.0-1+deb12u5"},
        {"name": "linux-image-6.1.0-42-amd64", "from": "", "to": "6.1.159-1"},
    ]
    assert patch.patch_upgrades("0 upgraded, 0 newly installed, 0 to remove.\n") == []


def test_needrestart_without_a_readable_kernel_lists_only_services():
    verdict = patch.patch_needrestart(NEEDRESTART_CONTAINER)
    assert verdict == {
        "kernel_pending": False,
        "kernel_running": "",
        "kernel_expected": "",
        "microcode_pending": False,
        "services": ["dbus.service", "ssh.service", "systemd-manager"],
    }


def test_needrestart_reports_a_pending_kernel():
    verdict = patch.patch_needrestart(NEEDRESTART_VM)
    assert verdict["kernel_pending"] and verdict["kernel_expected"] == "6.1.0-42-amd64"
    assert verdict["services"] == ["ollama.service"]
    assert not patch.patch_needrestart(NEEDRESTART_VM.replace("KSTA: 3", "KSTA: 1"))[
        "kernel_pending"
    ]


def test_every_reason_to_reboot_is_named():
    verdict = patch.patch_needrestart(NEEDRESTART_VM)
    dkms = {"name": "nvidia-kernel-dkms", "from": "535.1", "to": "535.2"}
    upgrades = [*patch.patch_upgrades(SIMULATION), dkms]
    reasons = patch.patch_reboot_reasons(
        verdict, upgrades, ["dbus.service"], "linux-image-6.1.0-42-amd64\n", PATTERNS
    )
    assert reasons == [
        "new kernel: linux-image-6.1.0-42-amd64",
        "running kernel 6.1.0-41-amd64, newest installed 6.1.0-42-amd64",
        "NVIDIA driver upgraded, its module must match: nvidia-kernel-dkms",
        "/run/reboot-required (linux-image-6.1.0-42-amd64)",
    ]


def test_services_that_restart_in_place_need_no_reboot():
    verdict = patch.patch_needrestart(NEEDRESTART_CONTAINER)
    libexpat = patch.patch_upgrades(SIMULATION)[1:2]
    assert patch.patch_reboot_reasons(verdict, libexpat, [], None, PATTERNS) == []
    assert patch.patch_reboot_reasons(verdict, libexpat, ["dbus.service"], None, PATTERNS) == [
        "needrestart: dbus.service cannot restart in place"
    ]


def test_the_table_has_a_row_per_host_with_its_packages_and_reasons_under_it():
    report = {
        "outcome": "failed",
        "wall_s": 61.2,
        "path": "reports/patch-x.json",
        "hosts": [
            {
                "host": "gpu-1",
                "outcome": "patched",
                "packages": patch.patch_upgrades(SIMULATION),
                "rebooted": True,
                "reboot_reasons": ["new kernel: linux-image-6.1.0-42-amd64"],
                "drain_wait_s": 4.1,
                "upgrade_s": 12.0,
                "reboot_s": 20.3,
                "total_s": 40.0,
            },
            {"host": "gpu-2", "outcome": "failed, drained", "failed_task": "Reboot", "error": "x"},
        ],
    }
    lines = patch.patch_table(report)
    assert lines[0].split() == [name for name, _width in patch.COLUMNS]
    assert lines[1].split() == ["gpu-1", "patched", "3", "True", "4.1", "12.0", "20.3", "40.0"]
    assert lines[2].startswith("  packages: libc6 2.36-9+deb12u14+gpufleet1, libexpat1 ")
    assert lines[3] == "  reboot: new kernel: linux-image-6.1.0-42-amd64"
    assert lines[4].split()[:3] == ["gpu-2", "failed,", "drained"]
    assert lines[5] == "  Reboot: x"
    assert lines[-1] == "failed in 61.2 s; report: reports/patch-x.json"
