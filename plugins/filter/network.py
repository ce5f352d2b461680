"""Filters for addresses and networks (CIDRs), with the standard library's ipaddress."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


def not_networks(candidates: Iterable[object]) -> list[str]:
    """The entries that are neither an address nor a network: a host's bits set in a network
    (10.0.0.1/24) count as a mistake, as nftables would silently widen or refuse them."""
    wrong = []
    for candidate in candidates:
        try:
            ipaddress.ip_network(str(candidate), strict=True)
        except ValueError:
            wrong.append(str(candidate))
    return wrong


def address_in_networks(address: str, networks: Iterable[str]) -> bool:
    """Whether address is in any of networks (addresses and CIDRs, IPv4 or IPv6)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(str(network), strict=False) for network in networks)


def networks_of_family(networks: Iterable[str], version: int) -> list[str]:
    """The entries of one IP version (4 or 6), for nftables' ip and ip6 saddr sets."""
    return [
        str(n) for n in networks if ipaddress.ip_network(str(n), strict=False).version == version
    ]


class FilterModule:
    def filters(self) -> dict:
        return {
            "not_networks": not_networks,
            "address_in_networks": address_in_networks,
            "networks_of_family": networks_of_family,
        }
