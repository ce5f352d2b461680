"""The lab's network: one bridge, a namespace and veth per host, and NAT to the package mirror."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from gpufleet.lab import LabError
from gpufleet.lab.system import kill_netns_processes, run, succeeds
from gpufleet.lab.topology import (
    BRIDGE,
    NETNS_PREFIX,
    NFT_TABLE,
    VETH_PREFIX,
    LabHost,
    LabTopology,
)

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def check_subnet_is_free(topology: LabTopology) -> None:
    """Refuse a subnet that overlaps an address or route the machine already has elsewhere."""
    lab_net = topology.network
    for device, other in _networks_in_use():
        if device != BRIDGE and lab_net.overlaps(other):
            raise LabError(
                f"--subnet {lab_net} overlaps {other} on {device}: choose another subnet"
            )


def _networks_in_use() -> list[tuple[str, ipaddress.IPv4Network]]:
    found = []
    for link in json.loads(run(["ip", "-json", "-4", "address", "show"]) or "[]"):
        for info in link.get("addr_info", []):
            network = ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False)
            found.append((link["ifname"], network))
    for route in json.loads(run(["ip", "-json", "route", "show"]) or "[]"):
        if route.get("dst") not in (None, "default"):
            found.append((route.get("dev", "?"), ipaddress.IPv4Network(route["dst"], strict=False)))
    return found


def bridge_exists() -> bool:
    return succeeds(["ip", "link", "show", "dev", BRIDGE])


def ensure_bridge(topology: LabTopology) -> None:
    if not bridge_exists():
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    address = f"{topology.gateway}/{topology.prefixlen}"
    if address not in run(["ip", "-brief", "address", "show", "dev", BRIDGE]):
        run(["ip", "address", "add", address, "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def ensure_nat(topology: LabTopology) -> str:
    """Masquerade the lab subnet out of the machine; return ip_forward as it was before."""
    before = IP_FORWARD.read_text().strip()
    IP_FORWARD.write_text("1\n")
    ruleset = f"""
table ip {NFT_TABLE}
delete table ip {NFT_TABLE}
table ip {NFT_TABLE} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {topology.subnet} oifname != "{BRIDGE}" masquerade
    }}
}}
"""
    run(["nft", "-f", "-"], input_text=ruleset)
    return before


def ensure_host_link(topology: LabTopology, host: LabHost) -> None:
    """Give the host its namespace, a veth into the bridge, its address and a default route."""
    if not Path(f"/run/netns/{host.netns}").exists():
        run(["ip", "netns", "add", host.netns])
    in_ns = ["ip", "-netns", host.netns]
    if succeeds(["ip", "link", "show", "dev", host.veth]) and not succeeds(
        [*in_ns, "link", "show", "dev", "eth0"]
    ):
        # The veth's peer lives in a namespace from an earlier run: start the pair afresh.
        run(["ip", "link", "delete", host.veth])
    if not succeeds(["ip", "link", "show", "dev", host.veth]):
        run(
            [
                "ip",
                "link",
                "add",
                host.veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host.netns,
            ]
        )
    run(["ip", "link", "set", host.veth, "master", BRIDGE, "up"])
    address = f"{host.address}/{topology.prefixlen}"
    if address not in run([*in_ns, "-brief", "address", "show", "dev", "eth0"]):
        run([*in_ns, "address", "add", address, "dev", "eth0"])
    run([*in_ns, "link", "set", "lo", "up"])
    run([*in_ns, "link", "set", "eth0", "up"])
    run([*in_ns, "route", "replace", "default", "via", topology.gateway])


def remove_host_link(host: LabHost) -> None:
    """Take the host's veth pair and namespace away, so its address is free on the bridge."""
    kill_netns_processes(host.netns)
    run(["ip", "link", "delete", host.veth], check=False)
    run(["ip", "netns", "delete", host.netns], check=False)


def lab_namespaces() -> list[str]:
    names = run(["ip", "netns", "list"], check=False).split("\n")
    return [line.split()[0] for line in names if line.startswith(NETNS_PREFIX)]


def lab_veths() -> list[str]:
    links = json.loads(run(["ip", "-json", "link", "show"], check=False) or "[]")
    return [link["ifname"] for link in links if link["ifname"].startswith(VETH_PREFIX)]


def nat_present() -> bool:
    return succeeds(["nft", "list", "table", "ip", NFT_TABLE])


def teardown(ip_forward_before: str) -> None:
    """Remove every namespace, veth, the bridge and the NAT table the lab made."""
    for netns in lab_namespaces():
        kill_netns_processes(netns)
        run(["ip", "netns", "delete", netns], check=False)
    for veth in lab_veths():
        run(["ip", "link", "delete", veth], check=False)
    if bridge_exists():
        run(["ip", "link", "delete", BRIDGE])
    if nat_present():
        run(["nft", "delete", "table", "ip", NFT_TABLE])
    if ip_forward_before in ("0", "1"):
        IP_FORWARD.write_text(ip_forward_before + "\n")
