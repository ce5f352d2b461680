"""The `gpufleet` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from gpufleet import __version__, ami, bake
from gpufleet.bake import BakeError

LAB_EXTRA = "gpufleet lab needs the lab's extra: pip install 'gpufleet[lab]'"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpufleet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gpufleet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    # Listed for --help only: main() hands `lab` and its arguments to gpufleet.lab.cli.
    commands.add_parser("lab", help="the local fleet lab (nspawn hosts + EC2 API); lab --help")
    _bake_parsers(commands)
    return parser


def _bake_parsers(commands: argparse._SubParsersAction) -> None:
    bake_parser = commands.add_parser(
        "bake", help="build the GPU image with Packer (init, validate, build) and publish it"
    )
    bake_parser.add_argument(
        "--only",
        choices=bake.SOURCES,
        default=bake.SOURCES[0],
        help=f"the source to build (default {bake.SOURCES[0]})",
    )
    bake_parser.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE", help="a template variable"
    )
    bake_parser.add_argument("--var-file", type=Path, help="a .pkrvars.hcl file of variables")
    bake_parser.add_argument(
        "--manifest", type=Path, default=Path("packer-manifest.json"), help="Packer's manifest"
    )
    bake_parser.add_argument("--packer", default="packer", help="the packer to run")
    bake_parser.add_argument(
        "--ssm-parameter", default=ami.PARAMETER, help="parameter naming the newest image"
    )
    bake_parser.add_argument(
        "--no-publish", action="store_true", help="build only; leave the parameter as it is"
    )
    ami_parser = commands.add_parser("ami", help="publish and prune the baked images")
    ami_actions = ami_parser.add_subparsers(dest="action", required=True)
    publish = ami_actions.add_parser(
        "publish", help="write a bake's images to their regions' SSM parameter"
    )
    publish.add_argument("--manifest", type=Path, default=Path("packer-manifest.json"))
    publish.add_argument("--ssm-parameter", default=ami.PARAMETER)
    prune = ami_actions.add_parser(
        "prune", help="deregister old images and delete their snapshots, keeping the newest"
    )
    prune.add_argument("--keep", type=int, required=True, help="newest images to keep, 1 or more")
    prune.add_argument("--role", default="gpu", help="the images' gpufleet:role (default gpu)")
    prune.add_argument(
        "--region", action="append", default=[], help="region (repeatable; default AWS_REGION)"
    )
    prune.add_argument("--ssm-parameter", default=ami.PARAMETER)
    prune.add_argument("--dry-run", action="store_true", help="say what would go; change nothing")


def _bake(args: argparse.Namespace) -> int:
    variables = {}
    for assignment in args.var:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            raise BakeError(f"--var {assignment!r} is not NAME=VALUE")
        variables[name] = value
    request = bake.BakeRequest(
        source=args.only,
        variables=variables,
        var_file=args.var_file,
        manifest=args.manifest,
        packer=args.packer,
    )
    started = time.monotonic()
    bake.bake(request)
    print(f"bake: built in {time.monotonic() - started:.0f} s; manifest {args.manifest}")
    if not args.no_publish:
        _publish(args.manifest, args.ssm_parameter)
    return 0


def _publish(manifest: Path, parameter: str) -> None:
    baked = ami.read_manifest(manifest)
    if not baked.images:
        print("bake: the manifest names no image (a build over SSH): nothing to publish")
        return
    published = ami.publish(baked, parameter)
    name = ami.parameter_name(parameter, baked.role)
    for region, image in published.items():
        print(f"bake: {region} {image} published in {name}")
    # The bake workflow's output: the image ids by region.
    outputs = os.environ.get("GITHUB_OUTPUT")
    if outputs:
        with Path(outputs).open("a") as out:
            out.write(f"ami_ids={json.dumps(published)}\n")


def _ami(args: argparse.Namespace) -> int:
    if args.action == "publish":
        _publish(args.manifest, args.ssm_parameter)
        return 0
    if args.keep < 1:
        raise ami.AmiError(f"--keep {args.keep}: keep at least the newest image")
    default = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    regions = args.region or ([default] if default else [])
    if not regions:
        raise ami.AmiError("no region: give --region or set AWS_REGION")
    for region in regions:
        verdicts = ami.plan_prune(region, args.role, args.keep, args.ssm_parameter)
        for verdict in verdicts:
            print(f"{region}  {verdict}")
        if not args.dry_run:
            ami.prune(region, verdicts)
        gone = sum(not v.keep for v in verdicts)
        done = "would go" if args.dry_run else "deregistered, with their snapshots"
        print(f"{region}: {len(verdicts) - gone} kept, {gone} {done}")
    return 0


def _lab(argv: list[str]) -> int:
    """The lab's own command, imported only here: the product needs none of it."""
    try:
        from gpufleet.lab import cli as lab_cli
    except ImportError as exc:
        print(f"{LAB_EXTRA} ({exc})", file=sys.stderr)
        return 2
    return lab_cli.main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["lab"]:
        return _lab(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "bake":
            return _bake(args)
        return _ami(args)
    except (BakeError, ami.AmiError) as exc:
        where = " ".join(filter(None, [args.command, getattr(args, "action", "")]))
        print(f"gpufleet {where}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
