"""The address filters the firewall role validates and renders its sources with."""

from __future__ import annotations

import pytest
import repo_scripts

network = repo_scripts.load("plugins/filter/network.py")


def test_wrong_entries_are_returned_as_given():
    given = ["10.0.0.0/24", "10.0.0.1", "fd00::/8", "10.0.0.1/24", "10.0.0.300/32", "ops", 10]
    assert network.not_networks(given) == ["10.0.0.1/24", "10.0.0.300/32", "ops", "10"]


@pytest.mark.parametrize(
    ("address", "networks", "inside"),
    [
        ("10.77.0.1", ["10.77.0.1/32"], True),
        ("10.77.0.1", ["192.0.2.0/24", "10.0.0.0/8"], True),
        ("10.77.0.1", ["192.0.2.0/24"], False),
        ("fd00::5", ["fd00::/8"], True),
        ("fd00::5", ["10.0.0.0/8"], False),
        ("", ["10.0.0.0/8"], False),
    ],
)
def test_an_address_is_inside_the_networks_that_contain_it(address, networks, inside):
    assert network.address_in_networks(address, networks) is inside


def test_sources_split_by_ip_version_keep_their_order():
    sources = ["fd00::/8", "10.0.0.0/8", "192.0.2.7", "2001:db8::1"]
    assert network.networks_of_family(sources, 4) == ["10.0.0.0/8", "192.0.2.7"]
    assert network.networks_of_family(sources, 6) == ["fd00::/8", "2001:db8::1"]
