"""`gpufleet lab`: the local fleet lab (nspawn hosts, a local EC2 API, stand-ins).

Installed with the lab's extra (`pip install 'gpufleet[lab]'`); the product's `gpufleet` command
hands `lab` over to this module and imports none of it otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from gpufleet import bake, tags
from gpufleet.bake import BakeError
from gpufleet.lab import (
    LabError,
    bake_host,
    capacity_drill,
    ec2_groups,
    front_door,
    hosts,
    images,
    lab,
    monitoring,
    point_release,
    scaler_drill,
)
from gpufleet.lab.launch import LaunchRequest
from gpufleet.lab.standins import imds
from gpufleet.lab.topology import LabHost, LabPaths, LabTopology

EXIT_DEGRADED = 1
EXIT_ABSENT = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpufleet lab", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True)

    up = actions.add_parser("up", help="bring the lab up, or recover a half-made one")
    up.add_argument("--gpu-hosts", type=int, help="GPU hosts (default 3)")
    up.add_argument("--lb-hosts", type=int, help="load balancer hosts (default 1)")
    up.add_argument("--subnet", help="private IPv4 subnet of the lab bridge (default 10.77.0.0/24)")
    up.add_argument("--region", help="EC2 region the API reports the hosts in (default us-east-1)")
    up.add_argument("--ec2-port", type=int, help="port of the local EC2 API (default: a free one)")
    up.add_argument(
        "--nvme-disks",
        help="instance-store NVMe disks per GPU host, cycled over them: 2 for every host, "
        "or 2,1,0 (the default: a stripe, one disk, none)",
    )
    up.add_argument("--nvme-size", help="size of each NVMe disk, a sparse file (default 4G)")
    up.add_argument(
        "--bake-hosts",
        type=int,
        help="Packer build instances for `lab bake` (bake-1, ...), tagged as Packer tags its "
        "own, so in no fleet inventory (default 0)",
    )

    actions.add_parser("down", help="remove every host, mount, namespace, rule and process")
    status = actions.add_parser("status", help="show the lab; exit 0 up, 1 degraded, 3 absent")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    reset = actions.add_parser("reset", help="give hosts a fresh disk (all hosts if none named)")
    reset.add_argument("hosts", nargs="*", metavar="HOST")
    lab_bake = actions.add_parser(
        "bake", help="bake a GPU host as the image is (Packer, bake.yml, sysprep, audit)"
    )
    lab_bake.add_argument("host", metavar="HOST")
    lab_bake.add_argument(
        "--models",
        default="",
        help="models to preload, comma-separated (default: the host's gpufleet:model tag; "
        "on a bake host, every model the lab's GPU hosts serve)",
    )
    actions.add_parser("images", help="list the images bakes kept, with their audit verdicts")
    derive = actions.add_parser(
        "derive-image",
        help="make a new image from a kept one with files added, as a build from a source AMI",
    )
    derive.add_argument("source", metavar="IMAGE")
    derive.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="PATH=TEXT",
        help="a file to add (absolute path, its text with \\n for line breaks); repeatable",
    )
    launch = actions.add_parser(
        "launch",
        help="launch GPU hosts from an image, as EC2 does: a new disk, empty NVMe disks, a new "
        "address, no playbook; they serve on their own",
    )
    launch.add_argument("--image", required=True, metavar="AMI", help="an image of `lab images`")
    launch.add_argument("--count", type=int, default=1, help="how many (default 1)")
    launch.add_argument("--pool", default="chat", help="their gpufleet:pool (default chat)")
    launch.add_argument(
        "--model", default="", help="their gpufleet:model (default: the image's first)"
    )
    launch.add_argument(
        "--lifecycle", default="on-demand", help="spot or on-demand (default on-demand)"
    )
    launch.add_argument(
        "--nvme-disks",
        default="1",
        help="instance-store NVMe disks per host, cycled over them: 1 (the default), or 1,0",
    )
    notice = actions.add_parser(
        "spot-notice", help="give a host a spot interruption notice from the lab's IMDS"
    )
    notice.add_argument("host", metavar="HOST")
    notice.add_argument(
        "--rebalance", action="store_true", help="a rebalance recommendation instead"
    )
    notice.add_argument("--clear", action="store_true", help="take the host's notices back")
    spot = actions.add_parser(
        "spot",
        help="refuse spot launches to the lab's Auto Scaling groups (a spot capacity shortage), "
        "or allow them again",
    )
    spot.add_argument("market", choices=("refuse", "allow"))
    actions.add_parser(
        "front-door",
        help="call the LB as careless and hostile clients would, and with the lab's key through "
        "the official clients; exit 1 if any answer is not the one it must be",
    )
    load = actions.add_parser(
        "load", help="stream requests through the lab's LB; exit 1 if any failed or was cut"
    )
    load.add_argument(
        "--models", help="models to ask for, comma-separated (default: those GPU hosts serve)"
    )
    load.add_argument("--seconds", type=float, default=10.0, help="how long (default 10)")
    load.add_argument("--concurrency", type=int, default=8, help="streams at once (default 8)")
    load.add_argument(
        "during",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND",
        help="stream for as long as COMMAND runs (a playbook), instead of --seconds",
    )
    drill = actions.add_parser(
        "capacity-drill",
        help="keep the pool chat as an Auto Scaling group on an image (capacity.yml), then give "
        "its host a spot notice under 20 streams and time its replacement's first served "
        "request; exit 1 if any request failed or was cut",
    )
    drill.add_argument("--image", required=True, metavar="AMI", help="an image of `lab images`")
    drill.add_argument("--model", default="llama3.1:8b", help="the pool's model (llama3.1:8b)")
    scaling = actions.add_parser(
        "scaler-drill",
        help="run the scaler on lb-1 for the pool chat (loadbalancer.yml with scaler_pools, "
        "within its group's sizes, which capacity.yml widens for the spike), spike its model's "
        "load tenfold, sized on what serves it, until the added hosts serve and the queue is "
        "back under the threshold, then scale in under 3 long streams with the scaler killed "
        "mid-drain; exit 1 if any request failed or was cut, or the scale-in removed other "
        "than the one host",
    )
    scaling.add_argument("--model", default="llama3.1:8b", help="the pool's model (llama3.1:8b)")
    actions.add_parser(
        "publish-update",
        help="publish the lab's Debian point release (a newer libc6) to every host's apt",
    )
    scrape = actions.add_parser(
        "prometheus",
        help="scrape the lab with Prometheus and run the Grafana dashboard's queries; "
        "exit 1 if a panel that needs no GPU has no data",
    )
    scrape.add_argument(
        "--seconds", type=float, default=0.0, help="keep scraping this long before the end"
    )
    scrape.add_argument(
        "--screenshot", type=Path, help="a PNG of Prometheus' graph page, by headless Chromium"
    )
    scrape.add_argument("--json", action="store_true", help="the results as JSON")
    ssh = actions.add_parser("ssh", help="open SSH to a lab host as the admin user")
    ssh.add_argument("host", metavar="HOST")
    ssh.add_argument("remote_command", nargs=argparse.REMAINDER, metavar="COMMAND")
    return parser


def disk_counts(spec: str | None) -> tuple[int, ...] | None:
    """--nvme-disks 2,1,0 as (2, 1, 0)."""
    if spec is None:
        return None
    try:
        return tuple(int(count) for count in spec.split(","))
    except ValueError:
        raise LabError(f"--nvme-disks {spec!r} is not a count or counts such as 2,1,0") from None


def _print_status(report: dict[str, object]) -> None:
    print(f"lab: {report['state']}")
    for key in ("ec2_endpoint", "registry", "region", "subnet", "inventory"):
        if key in report:
            print(f"  {key.replace('_', ' ')}: {report[key]}")
    for host in report["hosts"]:  # type: ignore[attr-defined]
        disks = f"nvme {len(host['nvme'])}" if host.get("nvme") else ""
        print(
            f"  {host['name']:<8} {host['role']:<4} {host['address']:<15} {host['state']:<8} "
            f"{disks:<7} {host['last_event']}"
        )
    for piece in report.get("leftovers", []):  # type: ignore[attr-defined]
        print(f"  leftover: {piece}")


def _lab(args: argparse.Namespace, paths: LabPaths) -> int:
    if args.action == "up":
        started = time.monotonic()
        request = lab.UpRequest(
            args.gpu_hosts,
            args.lb_hosts,
            args.subnet,
            args.region,
            args.ec2_port,
            disk_counts(args.nvme_disks),
            args.nvme_size,
            args.bake_hosts,
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
    if args.action == "bake":
        return _lab_bake(paths, topology, args.host, args.models)
    if args.action == "images":
        return _lab_images(paths)
    if args.action == "derive-image":
        return _lab_derive_image(paths, topology, args.source, args.file)
    if args.action == "launch":
        request = LaunchRequest(
            args.image,
            args.count,
            args.pool,
            args.model,
            args.lifecycle,
            disk_counts(args.nvme_disks),
        )
        return _lab_launch(paths, request)
    if args.action == "load":
        return _lab_load(paths, topology, args.models, args.seconds, args.concurrency, args.during)
    if args.action == "front-door":
        return _lab_front_door(paths, topology)
    if args.action == "spot-notice":
        return _spot_notice(paths, topology.host(args.host), args.rebalance, args.clear)
    if args.action == "spot":
        ec2_groups.refuse_spot(paths.ec2_dir, args.market == "refuse")
        print(f"lab spot: the lab's groups' spot launches are {args.market}d")
        return 0
    if args.action == "capacity-drill":
        return _capacity_drill(paths, topology, args.image, args.model)
    if args.action == "scaler-drill":
        return _scaler_drill(paths, topology, args.model)
    if args.action == "prometheus":
        return _lab_prometheus(topology, args.seconds, args.screenshot, args.json)
    if args.action == "publish-update":
        published = point_release.publish(paths, topology)
        packages = ", ".join(f"{name} {v}" for name, v in published["packages"].items())
        print(f"lab publish-update: {packages} at {published['url']}, in every host's sources")
        return 0
    argv = [*lab.ssh_argv(paths, topology.host(args.host)), *args.remote_command]
    os.execvp(argv[0], argv)  # noqa: S606 - replaces this process with the operator's ssh session
    return 0


def _lab_bake(paths: LabPaths, topology: LabTopology, name: str, models: str) -> int:
    """Bake, then keep the disk as an image with the audit's verdict read from outside,
    whether or not the bake succeeded (a failed one is kept to be read, not launched)."""
    chosen = [m for m in models.split(",") if m] or bake_host.default_models(topology, name)
    request = bake_host.bake_request(paths, topology, name, chosen)
    started = time.monotonic()
    failure: BakeError | None = None
    try:
        bake.bake(request)
    except BakeError as exc:
        failure = exc
    seconds = time.monotonic() - started
    audit = bake_host.audit_from_outside(hosts.HostFiles(paths, name).merged)
    image_tags = images.manifest_tags(request.manifest) if failure is None else {}
    image_tags.setdefault(images.MODELS_TAG, " ".join(chosen))
    image_tags.setdefault(tags.ROLE, "gpu")
    image = lab.keep_image(paths, topology, name, image_tags, audit)
    print(
        f"lab bake: {name} baked in {seconds:.0f} s: image {image.image_id} "
        f"(audit {image.audit}); {name} has a fresh disk"
    )
    if failure is not None:
        raise failure
    return 0 if image.launchable else 1


def _lab_derive_image(paths: LabPaths, topology: LabTopology, source: str, files: list[str]) -> int:
    added = {}
    for given in files:
        path, equals, text = given.partition("=")
        if not equals or not path.startswith("/"):
            raise LabError(f"--file {given!r}: give an absolute PATH=TEXT")
        added[path] = text.replace("\\n", "\n")
    image = images.derive(paths, topology, source, added, bake_host.audit_from_outside)
    print(
        f"lab derive-image: image {image.image_id} from {source} with {len(added)} file(s) "
        f"added (audit {image.audit})"
    )
    return 0 if image.launchable else 1


def _lab_images(paths: LabPaths) -> int:
    for image in images.listed(paths):
        print(
            f"  {image.image_id}  {image.name:<32} from {image.source_host:<6} "
            f"models {','.join(image.models):<30} audit {image.audit}"
        )
    return 0


def _lab_launch(paths: LabPaths, request: LaunchRequest) -> int:
    started = time.monotonic()
    launched = lab.launch(paths, request)
    for host in launched:
        print(
            f"lab launch: {host.name} at {host.address} from {host.image} "
            f"({host.pool}, {host.model}, {host.lifecycle}, {host.nvme_disks} NVMe disks)"
        )
    print(f"lab launch: {len(launched)} hosts up in {time.monotonic() - started:.1f} s")
    return 0


def _lab_front_door(paths: LabPaths, topology: LabTopology) -> int:
    """Each probe's answer against the one it must be, then a native and an OpenAI stream."""
    from gpufleet.lab.load import stream_once  # imported here: see _lab_load

    balancer = _first_balancer(topology)
    wrong = 0
    for check in front_door.PROBES:
        status, message = front_door.probe(paths, balancer.address, check)
        verdict = "as it must" if status == check.expected else f"NOT {check.expected}"
        wrong += status != check.expected
        said = f": {message}" if message else ""
        print(f"    {check.what}: {check.method} {check.path} -> {status} {verdict}{said}")
    target = front_door.lb_target(paths, balancer.address)
    model = next(h.model for h in topology.hosts if h.model)
    streams = {"chat": "a chat stream (ollama)", "openai-chat": "a chat stream (openai)"}
    for kind, what in streams.items():
        outcome = stream_once(target, kind, model, 8, 0)
        wrong += outcome.verdict != "served"
        print(f"    {what}, key {front_door.LOAD_KEY}: {outcome.status} {outcome.verdict}")
    return 1 if wrong else 0


def _first_balancer(topology: LabTopology) -> LabHost:
    balancers = [h for h in topology.hosts if h.role == "lb"]
    if not balancers:
        raise LabError("the lab has no LB host: bring it up with --lb-hosts 1 or more")
    return balancers[0]


def _lab_load(
    paths: LabPaths,
    topology: LabTopology,
    models: str | None,
    seconds: float,
    concurrency: int,
    during: list[str],
) -> int:
    """Stream through the LB for some seconds, or while a command runs; exit non-zero when a
    request failed or was cut, or the command failed."""
    # The official ollama and openai clients take half a second to import: only the
    # commands that call the LB load them, so `lab ssh` and `lab status` start at once.
    from gpufleet.lab.load import Load

    balancer = _first_balancer(topology)
    chosen = models.split(",") if models else sorted({h.model for h in topology.hosts if h.model})
    command = during[1:] if during[:1] == ["--"] else during
    started = time.monotonic()
    running = Load(front_door.lb_target(paths, balancer.address), chosen, concurrency).start()
    command_status = subprocess.run(command, check=False).returncode if command else 0
    if not command:
        time.sleep(seconds)
    summary = running.stop().summary()
    print(
        f"lab load: {concurrency} streams for {time.monotonic() - started:.0f} s through "
        f"{balancer.name}: {json.dumps(summary)}"
    )
    if command_status:
        return command_status
    return 1 if summary["failed"] or summary["truncated"] else 0


def _lab_prometheus(
    topology: LabTopology, seconds: float, screenshot: Path | None, as_json: bool
) -> int:
    """The dashboard's queries against Prometheus scraping the lab; a panel whose data the
    lab lacks (a GPU's, the scaler's) may be empty."""
    with monitoring.prometheus(monitoring.prometheus_config(monitoring.lab_jobs(topology))) as base:
        results = monitoring.run_dashboard(base)
        time.sleep(seconds)
        if screenshot is not None:
            expression = next(
                query
                for title, query in monitoring.dashboard_queries()
                if title == monitoring.SCREENSHOT_PANEL
            )
            monitoring.screenshot(monitoring.graph_url(base, expression), screenshot)
            print(f"lab prometheus: {monitoring.SCREENSHOT_PANEL} graphed in {screenshot}")
    if as_json:
        print(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    else:
        for result in results:
            verdict = f"{result.series} series" if result.series else "no data"
            reason = f" ({result.lab_lacks})" if result.lab_lacks and not result.series else ""
            print(f"  {result.title:<32} {verdict}{reason}")
    missing = [r.title for r in results if not r.series and not r.lab_lacks]
    return 1 if missing else 0


def _capacity_drill(paths: LabPaths, topology: LabTopology, image: str, model: str) -> int:
    balancer = _first_balancer(topology)
    images.find(paths, image)
    capacity_drill.publish_and_keep_the_pool(paths, topology, image, model)
    print(f"lab capacity-drill: the pool chat is an Auto Scaling group on {image} ({model})")
    figures = capacity_drill.spot_notice_drill(paths, topology, balancer.address, model)
    print(
        f"lab capacity-drill: spot notice on {figures['noticed']}, drained at the LB "
        f"{figures['notice_to_drain_s']} s later; {figures['replacement']} "
        f"served through the LB {figures['notice_to_serving_s']} s later (the notice lasts "
        f"{figures['notice_s']:.0f} s in the lab); load: {json.dumps(figures['load'])}"
    )
    return 1 if figures["load"]["failed"] or figures["load"]["truncated"] else 0


def _scaler_drill(paths: LabPaths, topology: LabTopology, model: str) -> int:
    figures = scaler_drill.scaler_drill(paths, topology, _first_balancer(topology).address, model)
    grown, shrunk = figures["spike"], figures["scale_in"]
    events = ", ".join(f"{name} {at} s" for name, at in grown["events_s"].items())
    print(
        f"lab scaler-drill: spike {grown['streams'][0]} -> {grown['streams'][1]} streams "
        f"({grown['slots_before']} slots served the model): desired {grown['desired'][0]} -> "
        f"{grown['desired'][1]}; {events}"
    )
    print(f"lab scaler-drill: queue over time (s, waiting): {grown['queue_over_time']}")
    print(f"lab scaler-drill: latency (s) by 20 s from the spike: {json.dumps(grown['latency_s'])}")
    print(
        f"lab scaler-drill: scale-in: {shrunk['leaving']} ({shrunk['lifecycle']}) tagged "
        f"{shrunk['window_to_tag_s']} s into the quiet, drained {shrunk['tag_to_drained_s']} s "
        f"later; the scaler killed, restarted ({shrunk['restarts']} restart), and the host "
        f"terminated {shrunk['kill_to_terminated_s']} s after the kill; removed "
        f"{shrunk['removed']}, desired {shrunk['desired'][0]} -> {shrunk['desired'][1]} "
        f"(min {shrunk['min']}), left tagged {shrunk['left_tagged']}"
    )
    for line in figures["decisions"]:
        print(f"    scaler: {line}")
    loads = {"spike": grown["load"], "scale-in": shrunk["load"]}
    print(f"lab scaler-drill: load: {json.dumps(loads)}")
    bad = any(v["failed"] or v["truncated"] for v in loads.values())
    wrong = shrunk["removed"] != [shrunk["leaving"]] or shrunk["left_tagged"]
    return 1 if bad or wrong else 0


def _spot_notice(paths: LabPaths, host: LabHost, rebalance: bool, clear: bool) -> int:
    notices = paths.imds_dir / "notices"
    if clear:
        imds.clear_notices(notices, host.address)
        print(f"lab spot-notice: {host.name} has no notice")
        return 0
    document = imds.give_notice(notices, host.address, "rebalance" if rebalance else "spot")
    print(f"lab spot-notice: {host.name} sees {json.dumps(document)}")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return _lab(args, LabPaths.from_environment())
    except (LabError, BakeError) as exc:
        print(f"gpufleet lab {args.action}: {exc}", file=sys.stderr)
        return 2
