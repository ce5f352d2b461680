#!/usr/bin/python3
"""The fleet agent: tells HAProxy whether this GPU host should take new requests.

Answers HAProxy's agent-check (a TCP connection, one line back) and serves its state as
JSON over HTTP for playbooks. Every interval it looks at:

- the maintenance flag file, which playbooks set and clear, and the models file (the models
  this host serves, one per line), which playbooks write; a change to either is seen within
  a quarter of a second, not at the next interval (a pool alias is one of the models: an
  Ollama copy of the model the host serves);
- EC2's instance metadata (IMDSv2, a token first), every --imds-interval seconds: a spot
  interruption notice, a rebalance recommendation, the instance's tag gpufleet:drain (the
  scaler's scale-in sets it; instance tags are in the metadata where the launch template
  allows it, as gpufleet's do) and its Auto Scaling target lifecycle state (Terminated
  while its group terminates it, held in a termination lifecycle hook);
- Ollama's /api/version (is it up), /api/tags (are the expected models on disk) and
  /api/ps (are they loaded).

Any of these but Ollama's loaded models says `drain`: HAProxy sends the host no new requests
and lets its streams finish. Otherwise the host is ready, at full weight when its expected
models are loaded and at --cold-weight percent while they are not, so a cold host gets fewer
requests.

HAProxy cancels a drain set through its runtime API when an agent says `ready`, so the agent
says `ready` only for --ready-window seconds after it starts or after its own drain ends,
and otherwise only the weight. Every change of verdict is logged with its reasons.

A model backend's server line sends the backend's model first (HAProxy's `agent-send`): a
host that does not serve that model answers `maint`, so a model's backend can list every
host of its pool and the hosts that serve the model are the ones in it. A model swap moves
a host between backends by rewriting the models file, without restarting the agent or
touching the load balancers.

    gpufleet_fleet_agent.py --agent-listen 10.0.1.5:11440 --http-listen 10.0.1.5:11441 \
        --ollama http://10.0.1.5:11434 --models-file /etc/gpufleet-fleet-agent/models \
        --flag /var/lib/gpufleet-fleet-agent/maintenance --imds http://169.254.169.254
"""

from __future__ import annotations

import argparse
import json
import socket
import socketserver
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# The collection's model names (plugins/module_utils/model_names.py), installed beside this file.
from gpufleet_model_names import full_name

IMDS_TOKEN_TTL = 21600
SPOT_ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
# The scaler's drain, an instance tag, and the group's intent for the instance.
DRAIN_TAG_PATH = "/latest/meta-data/tags/instance/gpufleet:drain"
LIFECYCLE_PATH = "/latest/meta-data/autoscaling/target-lifecycle-state"
HTTP_TIMEOUT = 2.0
# HAProxy writes agent-send as soon as it connects; a check without it has nothing to read.
AGENT_SEND_WAIT = 0.5
AGENT_SEND_LIMIT = 512
# How often the flag and the models file are looked at between full checks.
WATCH_STEP = 0.25


@dataclass
class Verdict:
    state: str
    weight: int
    reasons: list[str] = field(default_factory=list)


@dataclass
class Observation:
    """What one round of checks saw."""

    flag: bool = False
    spot_action: dict | None = None
    rebalance: dict | None = None
    drain_tag: str | None = None
    terminating: bool = False
    ollama_error: str = ""
    # name -> manifest digest; a copy (an alias) has its model's digest, and Ollama loads
    # the model once for both names.
    models_on_disk: dict[str, str] = field(default_factory=dict)
    digests_loaded: set[str] = field(default_factory=set)


def decide(seen: Observation, expected: list[str], cold_weight: int) -> Verdict:
    reasons = []
    if seen.flag:
        reasons.append("maintenance flag is set")
    if seen.spot_action is not None:
        action = seen.spot_action
        reasons.append(f"spot interruption: {action.get('action')} at {action.get('time')}")
    if seen.rebalance is not None:
        reasons.append(f"rebalance recommendation at {seen.rebalance.get('noticeTime')}")
    if seen.drain_tag is not None:
        reasons.append(f"drain asked by the instance's tag gpufleet:drain ({seen.drain_tag})")
    if seen.terminating:
        reasons.append("its Auto Scaling group is terminating it (target lifecycle state)")
    if seen.ollama_error:
        reasons.append(f"Ollama is unhealthy: {seen.ollama_error}")
    else:
        missing = [m for m in expected if full_name(m) not in seen.models_on_disk]
        reasons += [f"expected model {m} is missing" for m in missing]
    if reasons:
        return Verdict("drain", 0, reasons)
    cold = [m for m in expected if seen.models_on_disk[full_name(m)] not in seen.digests_loaded]
    if cold:
        return Verdict("ready", cold_weight, [f"model {m} is not loaded yet" for m in cold])
    return Verdict("ready", 100)


def agent_reply(verdict: Verdict, say_ready: bool) -> str:
    """The line HAProxy's agent-check reads: `drain`, `ready 100%` or `100%`."""
    if verdict.state == "drain":
        return "drain\n"
    return f"{'ready ' if say_ready else ''}{verdict.weight}%\n"


def agent_reply_for(model: str, verdict: Verdict, say_ready: bool, served: list[str]) -> str:
    """The line for one backend: `maint` where the backend's model (from agent-send) is not
    one this host serves; an empty model (be_default sends none) gets the host's verdict."""
    if model and full_name(model) not in {full_name(m) for m in served}:
        return "maint\n"
    return agent_reply(verdict, say_ready)


def read_models(path: Path) -> list[str]:
    """The models file: one model per line; blank lines and # comments are skipped. No file
    means no model is expected."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def file_stamp(path: Path) -> tuple[int, int] | None:
    """What tells a file changed: its modification time and size; None when it is absent."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def http_text(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> str:
    """The body at an http URL; the URLs come from the unit's own arguments."""
    request = urllib.request.Request(url, method=method, headers=headers or {})  # noqa: S310
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
        return response.read().decode()


def http_json(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> object:
    """JSON from an http URL."""
    return json.loads(http_text(url, method, headers) or "null")


def model_digests(listing: object) -> dict[str, str]:
    """name -> digest, from /api/tags or /api/ps."""
    if not isinstance(listing, dict) or not isinstance(listing.get("models"), list):
        raise ValueError("answered without a models list")
    return {
        full_name(str(m.get("name", ""))): str(m.get("digest", ""))
        for m in listing["models"]
        if isinstance(m, dict)
    }


def look_at_ollama(base_url: str, seen: Observation) -> None:
    try:
        http_json(f"{base_url}/api/version")
        seen.models_on_disk = model_digests(http_json(f"{base_url}/api/tags"))
        seen.digests_loaded = set(model_digests(http_json(f"{base_url}/api/ps")).values())
    except (OSError, ValueError) as exc:
        seen.ollama_error = str(exc) or type(exc).__name__


class Imds:
    """IMDSv2: a session token from PUT /latest/api/token, sent with every read."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = ""
        self.token_expires = 0.0

    def _token(self) -> str:
        if time.monotonic() >= self.token_expires:
            request = urllib.request.Request(  # noqa: S310
                f"{self.base_url}/latest/api/token",
                method="PUT",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL)},
            )
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
                self.token = response.read().decode().strip()
            self.token_expires = time.monotonic() + IMDS_TOKEN_TTL - 60
        return self.token

    def text(self, path: str) -> str | None:
        """The text at path, or None while IMDS answers 404 (nothing there). A token IMDS no
        longer takes (401) is replaced once."""
        for attempt in (1, 2):
            try:
                return http_text(
                    self.base_url + path, headers={"X-aws-ec2-metadata-token": self._token()}
                )
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                if exc.code == 401 and attempt == 1:
                    self.token_expires = 0.0
                    continue
                raise
        return None

    def notice(self, path: str) -> dict | None:
        """The JSON document at path, or None while there is none."""
        text = self.text(path)
        if text is None:
            return None
        found = json.loads(text or "null")
        return found if isinstance(found, dict) else {"notice": found}


class Agent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.imds = Imds(args.imds) if args.imds else None
        self.lock = threading.Lock()
        self.verdict = Verdict("drain", 0, ["starting"])
        self.since = time.time()
        # An agent that starts does not know whether it drained the host before.
        self.ready_until = time.monotonic() + args.ready_window
        self.spot_action: dict | None = None
        self.rebalance: dict | None = None
        self.drain_tag: str | None = None
        self.terminating = False
        self.imds_error = ""
        self.next_imds = 0.0
        self.expected: list[str] = []

    def poll_imds(self) -> None:
        if self.imds is None or time.monotonic() < self.next_imds:
            return
        self.next_imds = time.monotonic() + self.args.imds_interval
        try:
            # A notice, once given, stands: the instance is going away.
            self.spot_action = self.spot_action or self.imds.notice(SPOT_ACTION_PATH)
            self.rebalance = self.rebalance or self.imds.notice(REBALANCE_PATH)
            # The scaler may take its drain back (a scale-in given up): read at every poll.
            self.drain_tag = self.imds.text(DRAIN_TAG_PATH)
            self.terminating = self.terminating or self.imds.text(LIFECYCLE_PATH) == "Terminated"
            error = ""
        except (OSError, ValueError) as exc:
            error = f"instance metadata unreadable: {exc}"
        if error != self.imds_error:
            log(error or "instance metadata readable again")
            self.imds_error = error

    def check(self) -> None:
        self.poll_imds()
        expected = read_models(self.args.models_file)
        seen = Observation(
            flag=self.args.flag.exists(),
            spot_action=self.spot_action,
            rebalance=self.rebalance,
            drain_tag=self.drain_tag,
            terminating=self.terminating,
        )
        look_at_ollama(self.args.ollama, seen)
        if expected != self.expected:
            log(f"models this host serves: {', '.join(expected) or 'none'}")
        self.settle(decide(seen, expected, self.args.cold_weight), expected)

    def settle(self, verdict: Verdict, expected: list[str]) -> None:
        with self.lock:
            self.expected = expected
            previous = self.verdict
            self.verdict = verdict
            if (verdict.state, verdict.weight) == (previous.state, previous.weight):
                return
            self.since = time.time()
            if previous.state == "drain" and verdict.state == "ready":
                self.ready_until = time.monotonic() + self.args.ready_window
        why = "; ".join(verdict.reasons) or "healthy, models loaded"
        log(f"{previous.state} {previous.weight}% -> {verdict.state} {verdict.weight}%: {why}")

    def reply(self, model: str = "") -> str:
        with self.lock:
            say_ready = time.monotonic() < self.ready_until
            return agent_reply_for(model, self.verdict, say_ready, self.expected)

    def state(self) -> dict[str, object]:
        with self.lock:
            return {
                **asdict(self.verdict),
                "since": self.since,
                "agent_reply": agent_reply(self.verdict, False).strip(),
                "maintenance_flag": str(self.args.flag),
                "spot_action": self.spot_action,
                "rebalance": self.rebalance,
                "drain_tag": self.drain_tag,
                "terminating": self.terminating,
                "imds_error": self.imds_error,
                # As Ollama lists them (name:latest for a name without a tag).
                "expected_models": [full_name(model) for model in self.expected],
            }

    def watched(self) -> tuple:
        """What a playbook changes: the flag and the models file."""
        return self.args.flag.exists(), file_stamp(self.args.models_file)

    def run_checks(self) -> None:
        """A check every interval, and at once when a playbook changed what the agent watches."""
        while True:
            before = self.watched()
            self.check()
            next_check = time.monotonic() + self.args.interval
            while time.monotonic() < next_check and self.watched() == before:
                time.sleep(WATCH_STEP)


def log(line: str) -> None:
    print(line, flush=True)


def address(text: str) -> tuple[str, int]:
    host, _colon, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not ADDRESS:PORT")
    return host, int(port)


def read_agent_send(connection: socket.socket) -> str:
    """The model a backend's agent-send names (one line), or "" when HAProxy sends nothing."""
    connection.settimeout(AGENT_SEND_WAIT)
    received = b""
    try:
        while b"\n" not in received and len(received) < AGENT_SEND_LIMIT:
            chunk = connection.recv(AGENT_SEND_LIMIT)
            if not chunk:
                break
            received += chunk
    except TimeoutError:
        pass
    return received.split(b"\n", 1)[0].decode("utf-8", "replace").strip()


def serve_agent_check(agent: Agent, where: tuple[str, int]) -> socketserver.BaseServer:
    class AgentCheck(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(agent.reply(read_agent_send(self.request)).encode())

    server = socketserver.ThreadingTCPServer(where, AgentCheck, bind_and_activate=False)
    server.allow_reuse_address = True
    server.daemon_threads = True
    server.server_bind()
    server.server_activate()
    return server


def serve_state(agent: Agent, where: tuple[str, int]) -> ThreadingHTTPServer:
    class State(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path not in ("/", "/state"):
                self.send_error(404, "only /state is served")
                return
            body = json.dumps(agent.state()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            """Requests are not worth a journal line each."""

    server = ThreadingHTTPServer(where, State)
    server.daemon_threads = True
    return server


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--agent-listen", type=address, required=True)
    parser.add_argument("--http-listen", type=address, required=True)
    parser.add_argument("--ollama", required=True, help="Ollama's base URL")
    parser.add_argument(
        "--models-file", type=Path, required=True, help="the models this host serves, one per line"
    )
    parser.add_argument("--flag", type=Path, required=True, help="the maintenance flag file")
    parser.add_argument("--imds", default="", help="IMDS base URL; empty outside EC2")
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--imds-interval", type=float, default=5.0)
    parser.add_argument("--cold-weight", type=int, choices=range(1, 101), default=10)
    parser.add_argument("--ready-window", type=float, default=10.0)
    args = parser.parse_args(argv)
    args.ollama = args.ollama.rstrip("/")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    agent = Agent(args)
    agent.check()
    try:
        servers = [
            serve_agent_check(agent, args.agent_listen),
            serve_state(agent, args.http_listen),
        ]
    except OSError as exc:
        log(f"cannot listen: {exc}")
        return 1
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    log(f"answering agent checks on {args.agent_listen[0]}:{args.agent_listen[1]}")
    agent.run_checks()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
