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
