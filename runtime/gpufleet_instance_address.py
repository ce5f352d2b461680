#!/usr/bin/python3
"""Find this instance's private address at boot and write it for the services that bind it.

Ollama, node exporter, the fleet agent and the GPU metrics read the address from the file
this writes (systemd's EnvironmentFile), so an instance launched from the image serves at
whatever address it gets, and a stopped and started instance at its new one.

The address is IMDSv2's local-ipv4 (a token first); where IMDS does not answer, the address
of the interface the default route leaves by. Where neither gives one, it writes nothing,
says why in one line and exits 1: the services that require it stay stopped.

    gpufleet_instance_address.py --imds http://169.254.169.254 \
        --output /run/gpufleet/instance-address.env
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a path, not a secret
ADDRESS_PATH = "/latest/meta-data/local-ipv4"
# Seconds the session token lives: this program asks once, at boot.
TOKEN_TTL_SECONDS = "60"  # noqa: S105 - a lifetime, not a secret
HTTP_TIMEOUT = 2.0
VARIABLE = "GPUFLEET_INSTANCE_ADDRESS"


class NoAddress(Exception):
    """Why one way of finding the address gave none."""


def from_imds(base: str) -> str:
    """IMDSv2: a session token, then local-ipv4 with it."""
    try:
        token_request = urllib.request.Request(  # noqa: S310 - the IMDS URL of the unit
            base.rstrip("/") + TOKEN_PATH,
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": TOKEN_TTL_SECONDS},
        )
        with urllib.request.urlopen(token_request, timeout=HTTP_TIMEOUT) as answer:  # noqa: S310
            token = answer.read().decode()
        address_request = urllib.request.Request(  # noqa: S310
            base.rstrip("/") + ADDRESS_PATH, headers={"X-aws-ec2-metadata-token": token}
        )
        with urllib.request.urlopen(address_request, timeout=HTTP_TIMEOUT) as answer:  # noqa: S310
            return checked(answer.read().decode().strip(), f"IMDS {ADDRESS_PATH}")
    except (urllib.error.URLError, OSError) as exc:
        raise NoAddress(f"IMDS at {base} did not answer ({reason(exc)})") from None


def reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", exc))


def from_default_route() -> str:
    """The first IPv4 address of the interface the default route leaves by."""
    routes = ip_json("route", "show", "default")
    if not routes or "dev" not in routes[0]:
        raise NoAddress("there is no default route")
    device = routes[0]["dev"]
    for link in ip_json("-4", "address", "show", "dev", device):
        for info in link.get("addr_info", []):
            if info.get("scope") == "global":
                return checked(info["local"], f"the address of {device}")
    raise NoAddress(f"{device}, the default route's interface, has no IPv4 address")


def ip_json(*arguments: str) -> list[dict]:
    result = subprocess.run(
        ["ip", "-json", *arguments], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise NoAddress(f"ip {' '.join(arguments)} failed: {result.stderr.strip()}")
    return json.loads(result.stdout or "[]")


def checked(text: str, source: str) -> str:
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise NoAddress(f"{source} gave {text[:40]!r}, not an IPv4 address") from None
    if address.is_loopback or address.is_unspecified or address.is_link_local:
        raise NoAddress(f"{source} gave {address}, which no other host can reach")
    return str(address)


def find(imds: str, attempts: int, pause: float) -> tuple[str, str]:
    """The address and where it came from: IMDS, tried `attempts` times (it may answer a
    little after the network is up), then the default route's interface."""
    why = []
    if imds:
        for attempt in range(attempts):
            try:
                return from_imds(imds), "IMDS local-ipv4"
            except NoAddress as exc:
                if attempt == attempts - 1:
                    why.append(str(exc))
                else:
                    time.sleep(pause)
    try:
        return from_default_route(), "the default route's interface"
    except NoAddress as exc:
        why.append(str(exc))
    raise NoAddress("; ".join(why))


def write(output: Path, address: str, source: str) -> None:
    """Replace the file whole, so a service never reads half of it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".tmp")
    temporary.write_text(
        f"# This instance's private address, from {source}, written at boot.\n"
        f"{VARIABLE}={address}\n"
    )
    temporary.chmod(0o644)
    temporary.replace(output)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--imds", default="", help="IMDS base URL; empty where there is none")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--imds-attempts", type=int, default=10)
    parser.add_argument("--imds-pause", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        address, source = find(args.imds, max(1, args.imds_attempts), args.imds_pause)
    except NoAddress as exc:
        args.output.unlink(missing_ok=True)
        print(
            f"no private address found, so the services that bind it stay stopped: {exc}",
            file=sys.stderr,
        )
        return 1
    write(args.output, address, source)
    print(f"private address {address} (from {source}), written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
