"""A pool's fleet on loopback for gpufleet-scaler: a real moto server's pool group and LB
instance, a real HAProxy (its read-only runtime API over TCP, as on every LB) whose model
backend's servers are the group's instances at 127.0.0.x, each a stand-in that holds every
request until released, so streams and a queue are there when a test wants them. The
scaler's tests and benchmarks/scaler.py share it."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import repo_scripts
from moto_region import aws
from running_haproxy import ADMIN_AND_HTTP, free_port, running_haproxy

for name in ("haproxy_runtime", "fleet_backends", "spot_fallback", "fleet_instances", "scaling"):
    repo_scripts.load(f"plugins/module_utils/{name}.py", f"gpufleet_{name}")
scaler = repo_scripts.load("roles/scaler/files/gpufleet_scaler.py")

BACKEND = "be_model_qwen2.5:7b"
POOL_TAGS = {
    "gpufleet:role": "gpu",
    "gpufleet:env": "prod",
    "gpufleet:pool": "chat",
    "gpufleet:model": "qwen2.5:7b",
    "gpufleet:on-demand-base": "1",
}
# Windows of a second, checked every second: the rule's timing is test_scaling's.
POOL = {
    "min": 1,
    "max": 4,
    "scale_out_queue": 2,
    "scale_out_window": 1,
    "scale_in_queue": 1,
    "scale_in_window": 1,
    "step_factor": 3,
    "error_ratio": 0.1,
}


class HeldRequests:
    """An Ollama host's stand-in for the LB: each request is held until released; /fail is
    answered 500 at once."""

    def __init__(self, address: str, port: int) -> None:
        self.release = threading.Event()
        release = self.release

        class Held(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/fail":
                    self.send_error(500, "the host's own error")
                    return
                if self.path != "/health":
                    release.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_args: object) -> None:
                """Quiet."""

        class Server(ThreadingHTTPServer):
            def handle_error(self, *_args: object) -> None:
                """A client that gave up on a held request is no news."""

        self.server = Server((address, port), Held)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def scaler_fleet(moto: str, directory: Path, pool: dict | None = None) -> Iterator[dict]:
    """An LB instance at 127.0.0.1 running HAProxy, and the pool chat's group of 2 (on-demand
    base 1) whose instances, at 127.0.0.x, are the model backend's servers; the scaler's
    settings for them, with the pool's settings `pool`."""
    ec2, autoscaling = aws(moto, "ec2"), aws(moto, "autoscaling")
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.0.0/24", AvailabilityZone="us-east-1a")
    subnet_id = subnet["Subnet"]["SubnetId"]
    image = sorted(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])[0]
    lb_tags = [{"Key": "gpufleet:role", "Value": "lb"}, {"Key": "gpufleet:env", "Value": "prod"}]
    ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet_id,
        PrivateIpAddress="127.0.0.1",
        TagSpecifications=[{"ResourceType": "instance", "Tags": lb_tags}],
    )
    ec2.create_launch_template(
        LaunchTemplateName="gpufleet-prod-chat",
        LaunchTemplateData={"ImageId": image, "InstanceType": "g5.xlarge"},
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="gpufleet-prod-chat",
        MinSize=1,
        MaxSize=4,
        DesiredCapacity=2,
        VPCZoneIdentifier=subnet_id,
        MixedInstancesPolicy={
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {"LaunchTemplateName": "gpufleet-prod-chat"},
                "Overrides": [{"InstanceType": "g5.xlarge"}, {"InstanceType": "g6.xlarge"}],
            },
            "InstancesDistribution": {
                "OnDemandBaseCapacity": 1,
                "OnDemandPercentageAboveBaseCapacity": 0,
            },
        },
        Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": True} for k, v in POOL_TAGS.items()],
    )
    members = instances(moto)
    port, read_port, frontend = free_port(), free_port(), free_port()
    admin, config = directory / "admin.sock", directory / "haproxy.cfg"
    servers = "".join(
        f"    server m{n} {address}:{port} maxconn 1 check inter 200ms\n"
        for n, address in enumerate(sorted(members.values()))
    )
    config.write_text(
        ADMIN_AND_HTTP.format(socket=admin)
        .replace("global\n", f"global\n    stats socket ipv4@127.0.0.1:{read_port} level user\n", 1)
        .replace("timeout server 5s", "timeout server 30s")
        + f"    timeout queue 30s\nfrontend fe\n    bind 127.0.0.1:{frontend}\n"
        + f"    default_backend {BACKEND}\nbackend {BACKEND}\n    option httpchk GET /health\n"
        + servers
    )
    hosts = [HeldRequests(address, port) for address in members.values()]
    settings = {
        "region": "us-east-1",
        "env": "prod",
        "endpoint_url": moto,
        "read_port": read_port,
        "interval": 1,
        "max_instances": 0,
        "max_dollars_per_hour": 0,
        "drain_timeout": 60,
        "pool_defaults": pool or POOL,
        "pools": {"chat": {}},
    }
    try:
        with running_haproxy(config, admin):
            fleet = {"moto": moto, "admin": admin, "frontend": frontend, "hosts": hosts}
            fleet |= {"settings": settings, "members": members}
            wait_for(lambda: count_status(fleet, "UP") == 2, "both servers UP", fleet)
            yield fleet
    finally:
        for host in hosts:
            host.stop()


def instances(moto: str) -> dict[str, str]:
    """The group's instances not on their way out: id -> private address."""
    group = aws(moto, "autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"][0]
    ids = [i["InstanceId"] for i in group["Instances"] if i["LifecycleState"] == "InService"]
    pages = aws(moto, "ec2").describe_instances(InstanceIds=ids)["Reservations"]
    return {i["InstanceId"]: i["PrivateIpAddress"] for r in pages for i in r["Instances"]}


def desired(moto: str) -> int:
    group = aws(moto, "autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"][0]
    return group["DesiredCapacity"]


def tagged(moto: str) -> list[str]:
    """The instances tagged to drain."""
    pages = aws(moto, "ec2").describe_instances(
        Filters=[{"Name": "tag-key", "Values": [scaler.DRAIN_TAG]}]
    )["Reservations"]
    return [
        i["InstanceId"] for r in pages for i in r["Instances"] if i["State"]["Name"] == "running"
    ]


def rows(fleet) -> list[dict[str, str]]:
    answer = scaler.haproxy_runtime.command(str(fleet["admin"]), "show stat")
    return scaler.haproxy_runtime.parse_stat(answer)


def count_status(fleet, status: str) -> int:
    """The model backend's servers (not its BACKEND row) in that status."""
    return sum(
        1
        for r in rows(fleet)
        if r["pxname"] == BACKEND and r["svname"] != "BACKEND" and r["status"] == status
    )


def backend_row(fleet) -> dict[str, str]:
    return next(r for r in rows(fleet) if r["pxname"] == BACKEND and r["svname"] == "BACKEND")


def wait_for(condition, what: str, fleet: dict | None = None, seconds: float = 15) -> None:
    """Until condition() holds; a failure names what, and the servers' states at the end."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            states = (
                [(r["svname"], r["status"], r["scur"], r["qcur"]) for r in rows(fleet)]
                if fleet
                else []
            )
            pytest.fail(f"waited {seconds} s for {what}: {states}")
        time.sleep(0.1)


def requests(fleet, count: int) -> list[threading.Thread]:
    """count requests through the LB, each held until its host releases it."""
    url = f"http://127.0.0.1:{fleet['frontend']}/api/generate"

    def one() -> None:
        with urllib.request.urlopen(url, timeout=40) as response:
            response.read()

    threads = [threading.Thread(target=one, daemon=True) for _thread in range(count)]
    for thread in threads:
        thread.start()
    return threads


def failing(fleet, count: int) -> None:
    """count requests through the LB that its hosts answer 500."""
    for _request in range(count):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{fleet['frontend']}/fail", timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code == 500, exc


def release(fleet, threads: list[threading.Thread]) -> None:
    for host in fleet["hosts"]:
        host.release.set()
    for thread in threads:
        thread.join(timeout=10)


def scaler_pass(fleet, memory) -> list[str]:
    aws_clients = {s: aws(fleet["moto"], s) for s in ("ec2", "autoscaling")}
    return scaler.one_pass(aws_clients, fleet["settings"], memory, dry_run=False)
