"""Benchmark: gpufleet_ec2 against amazon.aws.aws_ec2 and the floor no plugin can beat.

Seeds a local moto server (its own process, on loopback) with 1000 instances in one
region, then 3000 across three, and times `ansible-inventory --list` with our plugin
(cache off), with amazon.aws.aws_ec2 on the equivalent config, and with our plugin
on a warm cache. The floor is a raw boto3 paginate of describe_instances over the
same regions plus the start-up time of `ansible-inventory --list` on an empty
inventory. moto answers slower than AWS, so overheads above the floor are compared.

Goals: our overhead at most 0.1 of aws_ec2's, our total at most 1.3x the floor, a warm
cache under 1.0 s for 3000 hosts. The warm figure is given twice: loading the inventory
(what ansible-playbook pays before any play) and the whole `ansible-inventory --list`,
which also prints every host's variables. Prints one JSON line of figures and ratios last.

    .venv/bin/python benchmarks/inventory.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import yaml

from gpufleet.lab.ec2 import CREDENTIALS
from gpufleet.lab.system import free_port
from gpufleet.tags import fleet_tags

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REGIONS_3 = ["us-east-1", "us-west-2", "eu-west-1"]
TYPES = ["g4dn.xlarge", "g5.xlarge", "g6.12xlarge", "t3.medium"]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _attempt in range(100):
        try:
            boto3.client(
                "ec2", region_name="us-east-1", endpoint_url=url, **CREDENTIALS
            ).describe_regions()
            return proc, url
        except Exception:
            time.sleep(0.1)
    raise SystemExit("moto_server did not start")


def seed(url: str, region: str, count: int) -> None:
    client = boto3.client("ec2", region_name=region, endpoint_url=url, **CREDENTIALS)
    image = sorted(i["ImageId"] for i in client.describe_images(Owners=["amazon"])["Images"])[0]
    for batch in range(count // 100):
        role = "lb" if batch % 10 == 9 else "gpu"
        tags = fleet_tags(f"bench-{batch}", role, f"pool{batch % 3}", "bench", "llama3.1:8b")
        client.run_instances(
            ImageId=image,
            InstanceType=TYPES[batch % len(TYPES)],
            MinCount=100,
            MaxCount=100,
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
        )


# The same server-side filters the inventory sources use: moto evaluates them in Python,
# so an unfiltered paginate would be a floor no filtered query can reach.
FILTERS = [
    {"Name": "tag:gpufleet:env", "Values": ["bench"]},
    {"Name": "instance-state-name", "Values": ["running"]},
]


def raw_paginate(url: str, regions: list[str]) -> float:
    clients = [boto3.client("ec2", region_name=r, endpoint_url=url, **CREDENTIALS) for r in regions]

    def count(client: object) -> int:
        pages = client.get_paginator("describe_instances").paginate(  # type: ignore[attr-defined]
            Filters=FILTERS, PaginationConfig={"PageSize": 1000}
        )
        return sum(len(r["Instances"]) for p in pages for r in p["Reservations"])

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        list(pool.map(count, clients))
    return time.monotonic() - started


# The same group-name rule for both plugins, so their outputs have the same groups.
ANSIBLE_ENV = {
    **os.environ,
    "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
    "ANSIBLE_TRANSFORM_INVALID_GROUP_CHARS": "always",
}


def run_with_ansible(argv: list[str]) -> str:
    """Run argv in the checkout with the benchmark's Ansible settings; return its stdout."""
    return subprocess.run(
        argv, env=ANSIBLE_ENV, cwd=REPO, check=True, capture_output=True, text=True
    ).stdout


def list_inventory(source: Path) -> str:
    return run_with_ansible([str(BIN / "ansible-inventory"), "-i", str(source), "--list"])


def ansible_inventory(source: Path) -> float:
    started = time.monotonic()
    list_inventory(source)
    return time.monotonic() - started


LOAD_TIMER = """
import sys, time
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
init_plugin_loader()
started = time.monotonic()
InventoryManager(loader=DataLoader(), sources=[sys.argv[1]])
print(time.monotonic() - started)
"""


def inventory_load(source: Path) -> float:
    """Seconds to load the inventory in-process, as ansible-playbook does before any play."""
    out = run_with_ansible([sys.executable, "-c", LOAD_TIMER, str(source)])
    return float(out.strip().splitlines()[-1])


def plain(value: object) -> object:
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def static_copy(source: Path, target: Path) -> Path:
    """Our plugin's output as a static YAML inventory: what Ansible itself costs for the
    same hosts, variables and groups, with no plugin and no API at all."""
    listed = json.loads(list_inventory(source))
    hostvars = plain(listed.pop("_meta")["hostvars"])
    children = {
        group: {"hosts": {h: None for h in body.get("hosts", [])}}
        for group, body in listed.items()
        if group not in ("all", "ungrouped")
    }
    target.write_text(yaml.safe_dump({"all": {"hosts": hostvars, "children": children}}))
    return target


def sources(directory: Path, url: str, regions: list[str]) -> dict[str, Path]:
    common = {
        "regions": regions,
        "endpoint_url": url,
        "aws_access_key": "testing",
        "aws_secret_key": "testing",
        "filters": {"tag:gpufleet:env": "bench", "instance-state-name": ["running"]},
        "hostnames": ["instance-id"],
        "compose": {"ansible_host": "private_ip_address"},
        "keyed_groups": [
            {"key": "tags['gpufleet:role']", "prefix": "role"},
            {"key": "tags['gpufleet:pool']", "prefix": "pool"},
            {"key": "placement.availability_zone", "prefix": "az"},
            {"key": "instance_type", "prefix": "type"},
        ],
    }
    cache = {
        "cache": True,
        "cache_plugin": "ansible.builtin.jsonfile",
        "cache_connection": str(directory / "cache"),
        "cache_timeout": 3600,
    }
    files = {
        "ours": ("ours.gpufleet_ec2.yml", {"plugin": "gpufleet.fleet.gpufleet_ec2", **common}),
        "aws_ec2": ("theirs.aws_ec2.yml", {"plugin": "amazon.aws.aws_ec2", **common}),
        "warm": (
            "warm.gpufleet_ec2.yml",
            {"plugin": "gpufleet.fleet.gpufleet_ec2", **common, **cache},
        ),
        "empty": ("empty.yml", {"all": {"hosts": {}}}),
    }
    paths = {}
    for key, (name, content) in files.items():
        paths[key] = directory / name
        paths[key].write_text(yaml.safe_dump(content))
    return paths


def measure(url: str, regions: list[str], runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        files = sources(Path(tmp), url, regions)
        ansible_inventory(files["warm"])  # fills the cache
        static = static_copy(files["warm"], Path(tmp) / "static.yml")
        timings: dict[str, list[float]] = {
            k: []
            for k in (
                "raw",
                "startup",
                "ours",
                "aws_ec2",
                "warm",
                "warm_load",
                "empty_load",
                "static",
            )
        }
        for _run in range(runs):
            timings["raw"].append(raw_paginate(url, regions))
            timings["startup"].append(ansible_inventory(files["empty"]))
            timings["ours"].append(ansible_inventory(files["ours"]))
            timings["aws_ec2"].append(ansible_inventory(files["aws_ec2"]))
            timings["warm"].append(ansible_inventory(files["warm"]))
            timings["warm_load"].append(inventory_load(files["warm"]))
            timings["static"].append(ansible_inventory(static))
            timings["empty_load"].append(inventory_load(files["empty"]))
    median = {k: statistics.median(v) for k, v in timings.items()}
    floor = median["raw"] + median["startup"]
    return {
        "floor_s": round(floor, 3),
        "raw_paginate_s": round(median["raw"], 3),
        "startup_s": round(median["startup"], 3),
        "ours_s": round(median["ours"], 3),
        "aws_ec2_s": round(median["aws_ec2"], 3),
        "warm_cache_list_s": round(median["warm"], 3),
        "warm_cache_load_s": round(median["warm_load"], 3),
        "empty_load_s": round(median["empty_load"], 3),
        "ours_over_floor_s": round(median["ours"] - floor, 3),
        "aws_ec2_over_floor_s": round(median["aws_ec2"] - floor, 3),
        "overhead_ratio": round((median["ours"] - floor) / (median["aws_ec2"] - floor), 3),
        "ours_to_floor": round(median["ours"] / floor, 3),
        "static_same_output_s": round(median["static"], 3),
        "ours_over_raw_plus_static_s": round(median["ours"] - median["raw"] - median["static"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    moto, url = start_moto()
    try:
        seed(url, "us-east-1", 1000)
        one_region = measure(url, ["us-east-1"], args.runs)
        print(json.dumps({"case": "1000 hosts, 1 region", **one_region}), file=sys.stderr)
        for region in REGIONS_3[1:]:
            seed(url, region, 1000)
        three_regions = measure(url, REGIONS_3, args.runs)
        print(json.dumps({"case": "3000 hosts, 3 regions", **three_regions}), file=sys.stderr)
    finally:
        moto.terminate()
    print(
        json.dumps(
            {
                "hosts_1region": 1000,
                "hosts_3regions": 3000,
                **{f"r1_{k}": v for k, v in one_region.items()},
                **{f"r3_{k}": v for k, v in three_regions.items()},
                "warm_cache_load_3000_s": three_regions["warm_cache_load_s"],
                "warm_cache_list_3000_s": three_regions["warm_cache_list_s"],
            }
        )
    )


if __name__ == "__main__":
    main()
