"""EC2's instance metadata service (IMDSv2), as far as the fleet agent reads it.

Stands in for http://169.254.169.254 on the lab bridge: one server for every lab host,
which tells hosts apart by their source address, as each instance has its own IMDS.

- PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds (1 to 21600) gives a
  session token; without the header, 400. A request carrying X-Forwarded-For is refused
  with 403, as IMDSv2 refuses tokens through proxies.
- GET /latest/meta-data/... needs a valid X-aws-ec2-metadata-token, else 401 (IMDSv2
  required, as gpufleet's launch templates set it).
- GET /latest/meta-data/local-ipv4: the host's private address (its source address), which
  the image's boot-time code binds the services to.
- GET /latest/meta-data/spot/instance-action: {"action": "terminate", "time": ...} once a
  spot interruption is noticed, 404 before; .../events/recommendations/rebalance:
  {"noticeTime": ...} likewise. `gpufleet lab spot-notice HOST` gives a host either.
- GET /latest/meta-data/tags/instance: the instance's tag keys, one per line, and
  .../tags/instance/KEY its value (404 for a key it lacks), read from the lab's EC2 API,
  only where the instance's metadata options enable tags (InstanceMetadataTags), else 404.
- GET /latest/meta-data/autoscaling/target-lifecycle-state: InService, or Terminated once
  its Auto Scaling group is terminating it (a lifecycle state Terminating...), from the
  lab's Auto Scaling API; 404 for an instance in no group.

The instance is looked up by its private address (the request's source) at most once a
second.

    python -m gpufleet.lab.standins.imds --listen 10.77.0.1:PORT --notices DIR \
        --ec2 http://127.0.0.1:PORT --region REGION
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gpufleet.lab.ec2 import CREDENTIALS, endpoint
from gpufleet.lab.system import (
    free_port,
    python_module,
    read_pid,
    start_daemon,
    stop_daemon,
    tcp_open,
)
from gpufleet.lab.topology import LabPaths, LabTopology

IMDS_MODULE = "gpufleet.lab.standins.imds"
TOKEN_PATH = "/latest/api/token"  # noqa: S105 (a path, not a secret)
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 (a header name)
MAX_TTL = 21600
# Each kind of notice: its file under <notices>/<host address>/, and its metadata path.
NOTICE_FILES = {"spot": "spot-instance-action.json", "rebalance": "rebalance.json"}
NOTICE_PATHS = {
    "/latest/meta-data/spot/instance-action": "spot",
    "/latest/meta-data/events/recommendations/rebalance": "rebalance",
}
LOCAL_IPV4_PATH = "/latest/meta-data/local-ipv4"
TAGS_PATH = "/latest/meta-data/tags/instance"
LIFECYCLE_PATH = "/latest/meta-data/autoscaling/target-lifecycle-state"
# Seconds an instance's description is reused: agents ask every second.
LOOKUP_SECONDS = 1.0
# A spot interruption notice comes two minutes before the instance is stopped.
SPOT_WARNING = timedelta(minutes=2)


def notice_document(kind: str, now: datetime) -> dict[str, str]:
    """The JSON EC2 serves: the instance action with its time, or the rebalance notice time."""
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    if kind == "spot":
        return {"action": "terminate", "time": (now + SPOT_WARNING).strftime(stamp)}
    return {"noticeTime": now.strftime(stamp)}


def notice_path(notices: Path, address: str, kind: str) -> Path:
    return notices / address / NOTICE_FILES[kind]


class Tokens:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.expiry: dict[str, float] = {}

    def issue(self, ttl: int) -> str:
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.expiry[token] = time.monotonic() + ttl
        return token

    def valid(self, token: str | None) -> bool:
        with self.lock:
            return token is not None and self.expiry.get(token, 0.0) > time.monotonic()


class Instances:
    """Each lab instance's tags and group lifecycle, by private address, from the lab's EC2
    and Auto Scaling APIs, looked up at most once every LOOKUP_SECONDS."""

    def __init__(self, ec2_url: str, region: str) -> None:
        import boto3

        self.lock = threading.Lock()
        self.seen: dict[str, tuple[float, dict[str, Any]]] = {}
        # Made at start: a client's first making takes longer than an agent waits for IMDS.
        session = boto3.session.Session(**CREDENTIALS, region_name=region)
        self.clients = {s: session.client(s, endpoint_url=ec2_url) for s in ("ec2", "autoscaling")}

    def client(self, service: str) -> Any:
        return self.clients[service]

    def describe(self, address: str) -> dict[str, Any]:
        """{"tags": {...} or None where tags are not in the metadata, "lifecycle": the group
        lifecycle state or ""}; {} for no running instance at that address."""
        with self.lock:
            when, found = self.seen.get(address, (0.0, {}))
            if time.monotonic() - when < LOOKUP_SECONDS:
                return found
            found = self.look_up(address)
            self.seen[address] = (time.monotonic(), found)
            return found

    def look_up(self, address: str) -> dict[str, Any]:
        filters = [
            {"Name": "private-ip-address", "Values": [address]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
        pages = self.client("ec2").describe_instances(Filters=filters)["Reservations"]
        instances = [i for r in pages for i in r["Instances"]]
        if not instances:
            return {}
        instance = instances[0]
        enabled = instance.get("MetadataOptions", {}).get("InstanceMetadataTags") == "enabled"
        groups = self.client("autoscaling").describe_auto_scaling_instances(
            InstanceIds=[instance["InstanceId"]]
        )["AutoScalingInstances"]
        return {
            "tags": {t["Key"]: t["Value"] for t in instance.get("Tags", [])} if enabled else None,
            "lifecycle": groups[0]["LifecycleState"] if groups else "",
        }


def metadata(instances: Instances, address: str, path: str) -> str | None:
    """The answer to a tags or lifecycle path for the instance at address; None: 404."""
    found = instances.describe(address)
    if path == LIFECYCLE_PATH:
        lifecycle = found.get("lifecycle", "")
        if not lifecycle:
            return None
        return "Terminated" if lifecycle.startswith("Terminat") else "InService"
    tags = found.get("tags")
    if tags is None:
        return None
    if path == TAGS_PATH:
        return "\n".join(sorted(tags))
    return tags.get(path.removeprefix(TAGS_PATH + "/"))


def handler(notices: Path, tokens: Tokens, instances: Instances) -> type[BaseHTTPRequestHandler]:
    class Imds(BaseHTTPRequestHandler):
        def reply(self, status: int, body: str = "") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            if self.path != TOKEN_PATH:
                self.reply(404)
                return
            if self.headers.get("X-Forwarded-For"):
                self.reply(403)
                return
            ttl = self.headers.get(TTL_HEADER, "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= MAX_TTL:
                self.reply(400)
                return
            self.reply(200, tokens.issue(int(ttl)))

        def do_GET(self) -> None:
            if not tokens.valid(self.headers.get(TOKEN_HEADER)):
                self.reply(401)
                return
            if self.path == LOCAL_IPV4_PATH:
                self.reply(200, self.client_address[0])
                return
            if self.path == LIFECYCLE_PATH or self.path.startswith(TAGS_PATH):
                answer = metadata(instances, self.client_address[0], self.path)
                if answer is None:
                    self.reply(404)
                else:
                    self.reply(200, answer)
                return
            kind = NOTICE_PATHS.get(self.path)
            found = notice_path(notices, self.client_address[0], kind) if kind else None
            if found is None or not found.is_file():
                self.reply(404)
                return
            self.reply(200, found.read_text())

        def log_message(self, *_args: object) -> None:
            """The agents poll every few seconds; their requests are not worth a log line."""

    return Imds


def give_notice(notices: Path, address: str, kind: str) -> dict[str, str]:
    """Make the host at address see a spot interruption (kind spot) or a rebalance notice."""
    document = notice_document(kind, datetime.now(UTC))
    path = notice_path(notices, address, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return document


def clear_notices(notices: Path, address: str) -> None:
    for kind in NOTICE_FILES:
        notice_path(notices, address, kind).unlink(missing_ok=True)


def start(paths: LabPaths, topology: LabTopology) -> int:
    """Serve IMDS on the bridge address; return the port."""
    port = topology.imds_port or free_port(topology.gateway)
    argv = python_module(
        IMDS_MODULE,
        "--listen",
        f"{topology.gateway}:{port}",
        "--notices",
        str(paths.imds_dir / "notices"),
        "--ec2",
        endpoint(topology.ec2_port),
        "--region",
        topology.region,
    )
    start_daemon(
        argv,
        paths.imds_dir,
        "imds",
        ready=lambda: tcp_open(topology.gateway, port),
        what=f"the lab's IMDS on {topology.gateway}:{port}",
    )
    return port


def running(paths: LabPaths) -> bool:
    return read_pid(paths.imds_dir / "imds.pid") is not None


def stop(paths: LabPaths) -> None:
    stop_daemon(paths.imds_dir / "imds.pid")


def main() -> None:
    parser = argparse.ArgumentParser(description="the lab's stand-in of EC2's IMDSv2")
    parser.add_argument("--listen", required=True, help="ADDRESS:PORT")
    parser.add_argument("--notices", type=Path, required=True)
    parser.add_argument("--ec2", required=True, help="the lab's EC2 API endpoint")
    parser.add_argument("--region", required=True)
    args = parser.parse_args()
    host, _colon, port = args.listen.rpartition(":")
    instances = Instances(args.ec2, args.region)
    server = ThreadingHTTPServer((host, int(port)), handler(args.notices, Tokens(), instances))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
