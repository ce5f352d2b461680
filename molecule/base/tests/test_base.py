"""What the base role leaves on a host, checked from outside with testinfra."""

import pytest


@pytest.mark.parametrize("package", ["ca-certificates", "curl", "jq", "rsync", "gnupg"])
def test_common_packages_are_installed(host, package):
    assert host.package(package).is_installed


def test_timesyncd_is_enabled_and_points_at_amazon_time_sync(host):
    assert host.service("systemd-timesyncd").is_enabled
    conf = host.file("/etc/systemd/timesyncd.conf.d/gpufleet.conf")
    assert conf.contains("^NTP=169.254.169.123$")
    assert conf.user == "root"
    assert conf.mode == 0o644


def test_timezone_is_utc(host):
    assert host.file("/etc/localtime").linked_to.endswith("Etc/UTC")


def test_apt_cache_is_fresh(host):
    lists = host.run("find /var/lib/apt/lists -name '*_Packages*' -mmin -120")
    assert lists.stdout.strip(), "apt lists were not refreshed"


def test_sshd_takes_keys_only_and_modern_algorithms(host):
    with host.sudo():
        settings = host.check_output("sshd -T")
    effective = dict(line.split(" ", 1) for line in settings.splitlines() if " " in line)
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective["permitrootlogin"] == "no"
    assert effective["authenticationmethods"] == "publickey"
    assert "cbc" not in effective["ciphers"]
    assert all(mac.endswith("-etm@openssh.com") for mac in effective["macs"].split(","))


def test_unattended_upgrades_are_off_and_would_leave_kernel_and_nvidia_alone(host):
    periodic = host.check_output("apt-config dump APT::Periodic::Unattended-Upgrade")
    assert periodic.endswith('"0";')
    blocklist = host.check_output("apt-config dump Unattended-Upgrade::Package-Blacklist")
    assert '"^linux-";' in blocklist and '"^nvidia-";' in blocklist


def test_the_journal_is_persistent_and_bounded(host):
    journald = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert "Storage=persistent" in journald
    assert "SystemMaxUse=1G" in journald
    assert host.file("/var/log/journal").is_directory


def test_network_settings_are_set_and_every_setting_kept_for_boot(host):
    running = host.file("/proc/sys/net/ipv4/conf/all/accept_redirects").content_string
    assert running.strip() == "0"
    assert host.file("/proc/sys/net/ipv4/tcp_syncookies").content_string.strip() == "1"
    kept = host.file("/etc/sysctl.d/60-gpufleet.conf").content_string.replace(" ", "")
    assert "kernel.dmesg_restrict=1" in kept
    assert "fs.protected_regular=2" in kept
