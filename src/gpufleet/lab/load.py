"""Streaming load through the lab's load balancer, checked request by request.

Each worker sends Ollama streaming requests (/api/generate and /api/chat, in turn) one
after another and reads every NDJSON line. A request counts as served when the answer is
200 and its last line says `"done": true`; as failed on any other status or a connection
error; as truncated when the stream ends without that line. Only lab addresses are used.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import itertools
import json
import subprocess
import threading
import time
from dataclasses import dataclass, field

from gpufleet.lab import LabError
from gpufleet.lab.topology import BRIDGE


@dataclass(frozen=True)
class Outcome:
    kind: str
    model: str
    started: float
    ended: float
    status: int
    verdict: str  # served, failed or truncated
    detail: str = ""


@dataclass
class LoadReport:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, verdict: str) -> int:
        return sum(o.verdict == verdict for o in self.outcomes)

    def summary(self) -> dict[str, int]:
        return {v: self.count(v) for v in ("served", "failed", "truncated")}

    def problems(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.verdict != "served"]


def request_body(kind: str, model: str, tokens: int, number: int) -> dict:
    options = {"num_predict": tokens}
    if kind == "chat":
        messages = [{"role": "user", "content": f"request {number}: say something"}]
        return {"model": model, "messages": messages, "stream": True, "options": options}
    return {"model": model, "prompt": f"request {number}: say something", "options": options}


@functools.cache
def check_lab_address(address: str) -> None:
    """Load goes to loopback or to a host behind the lab's bridge, never anywhere else."""
    if ipaddress.ip_address(address).is_loopback:
        return
    route = subprocess.run(
        ["ip", "route", "get", address], capture_output=True, text=True, check=False
    ).stdout
    if f" dev {BRIDGE} " not in f" {route} ":
        raise LabError(f"{address} is not a lab host (not routed through {BRIDGE}): is the lab up?")


def stream_once(host: str, port: int, kind: str, model: str, tokens: int, number: int) -> Outcome:
    check_lab_address(host)
    started = time.monotonic()
    path = "/api/chat" if kind == "chat" else "/api/generate"
    body = json.dumps(request_body(kind, model, tokens, number))
    connection = http.client.HTTPConnection(host, port, timeout=120)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            detail = response.read(200).decode(errors="replace")
            return Outcome(
                kind, model, started, time.monotonic(), response.status, "failed", detail
            )
        last = {}
        for line in response:
            if line.strip():
                last = json.loads(line)
        verdict = "served" if last.get("done") is True else "truncated"
        return Outcome(kind, model, started, time.monotonic(), 200, verdict)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return Outcome(kind, model, started, time.monotonic(), 0, "failed", repr(exc))
    finally:
        connection.close()


class Load:
    """`concurrency` workers streaming until stop(); the report holds every request."""

    def __init__(
        self, host: str, port: int, models: list[str], concurrency: int = 20, tokens: int = 40
    ) -> None:
        check_lab_address(host)
        self.host, self.port = host, port
        self.models, self.tokens = models, tokens
        self.report = LoadReport()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.numbers = itertools.count()
        self.workers = [
            threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(concurrency)
        ]

    def _work(self, index: int) -> None:
        kinds = itertools.cycle(("generate", "chat") if index % 2 else ("chat", "generate"))
        while not self.stopping.is_set():
            number = next(self.numbers)
            model = self.models[number % len(self.models)]
            outcome = stream_once(self.host, self.port, next(kinds), model, self.tokens, number)
            with self.lock:
                self.report.outcomes.append(outcome)

    def start(self) -> Load:
        for worker in self.workers:
            worker.start()
        return self

    def stop(self) -> LoadReport:
        """Let every request in flight finish, then return the report."""
        self.stopping.set()
        for worker in self.workers:
            worker.join(timeout=180)
        return self.report

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
