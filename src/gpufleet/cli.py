"""The `gpufleet` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from gpufleet import __version__
from gpufleet.lab import LabError, lab
from gpufleet.lab.topology import LabPaths

EXIT_DEGRADED = 1
EXIT_ABSENT = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpufleet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gpufleet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    lab_parser = commands.add_parser("lab", help="the local fleet lab (nspawn hosts + EC2 API)")
    actions = lab_parser.add_subparsers(dest="action", required=True)

    up = actions.add_parser("up", help="bring the lab up, or recover a half-made one")
    up.add_argument("--gpu-hosts", type=int, help="GPU hosts (default 3)")
    up.add_argument("--lb-hosts", type=int, help="load balancer hosts (default 1)")
    up.add_argument("--subnet", help="private IPv4 subnet of the lab bridge (default 10.77.0.0/24)")
    up.add_argument("--region", help="EC2 region the API reports the hosts in (default us-east-1)")
    up.add_argument("--ec2-port", type=int, help="port of the local EC2 API (default: a free one)")

    actions.add_parser("down", help="remove every host, mount, namespace, rule and process")
    status = actions.add_parser("status", help="show the lab; exit 0 up, 1 degraded, 3 absent")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    reset = actions.add_parser("reset", help="give hosts a fresh disk (all hosts if none named)")
    reset.add_argument("hosts", nargs="*", metavar="HOST")
    ssh = actions.add_parser("ssh", help="open SSH to a lab host as the admin user")
    ssh.add_argument("host", metavar="HOST")
    ssh.add_argument("remote_command", nargs=argparse.REMAINDER, metavar="COMMAND")
    return parser


def _print_status(report: dict[str, object]) -> None:
    print(f"lab: {report['state']}")
    for key in ("ec2_endpoint", "registry", "region", "subnet", "inventory"):
        if key in report:
            print(f"  {key.replace('_', ' ')}: {report[key]}")
    for host in report["hosts"]:  # type: ignore[attr-defined]
        print(
            f"  {host['name']:<8} {host['role']:<4} {host['address']:<15} {host['state']:<8} "
            f"{host['last_event']}"
        )
    for piece in report.get("leftovers", []):  # type: ignore[attr-defined]
        print(f"  leftover: {piece}")


def _lab(args: argparse.Namespace, paths: LabPaths) -> int:
    if args.action == "up":
        started = time.monotonic()
        request = lab.UpRequest(
            args.gpu_hosts, args.lb_hosts, args.subnet, args.region, args.ec2_port
        )
        topology = lab.up(paths, request)
        elapsed = time.monotonic() - started
        print(f"lab up: {len(topology.hosts)} hosts in {elapsed:.1f} s")
        _print_status(lab.status(paths))
        return 0
    if args.action == "down":
        started = time.monotonic()
        remaining = lab.down(paths)
        if remaining:
            raise LabError(f"lab down left {len(remaining)} pieces: {'; '.join(remaining)}")
        print(f"lab down: nothing left, in {time.monotonic() - started:.1f} s")
        return 0
    if args.action == "status":
        report = lab.status(paths)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            _print_status(report)
        return {"up": 0, "absent": EXIT_ABSENT}.get(str(report["state"]), EXIT_DEGRADED)
    if args.action == "reset":
        lab.reset(paths, args.hosts)
        print(f"lab reset: {', '.join(args.hosts) or 'all hosts'} fresh")
        return 0
    topology = lab.load(paths)
    if topology is None:
        raise LabError("the lab is not up: run `gpufleet lab up` first")
    argv = [*lab.ssh_argv(paths, topology.host(args.host)), *args.remote_command]
    os.execvp(argv[0], argv)  # noqa: S606 - replaces this process with the operator's ssh session
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _lab(args, LabPaths.from_environment())
    except LabError as exc:
        print(f"gpufleet {args.command} {args.action}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
