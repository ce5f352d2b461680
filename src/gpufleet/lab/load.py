"""Load through the lab's load balancer as users' code makes it, checked request by request.

Each worker holds the official clients a user would, `ollama` for Ollama's API and `openai`
for the OpenAI-compatible one, calling the LB over TLS with an API key, and sends in turn:
a native chat stream, a native generate stream, an OpenAI-compatible chat stream, and an
embedding of two inputs. A request counts as served when it is answered 2xx and complete: a
native stream's last chunk says `done`, an OpenAI stream ends with `data: [DONE]`, an embedding
has a vector per input. Any other status (404 included) or a connection error is failed; a
stream that ends without its end mark is truncated. Only lab addresses are used.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import httpx2
import ollama
import openai

from gpufleet.lab import LabError
from gpufleet.lab.front_door import Target
from gpufleet.lab.topology import BRIDGE

KINDS = ("chat", "generate", "openai-chat", "embed")
DONE_EVENT = b"data: [DONE]"
TIMEOUT_SECONDS = 120
# A worker whose request failed waits this long before its next one, as a client's retry loop
# would: without it, instant 404s turn a few workers into hundreds of requests a second that
# starve the 2-core lab machine of the CPU the run under test needs.
RETRY_PAUSE_SECONDS = 0.05


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


class DoneWatch(httpx2.HTTPTransport):
    """The OpenAI client's transport, noting whether the last response carried `data: [DONE]`:
    the client itself ends a stream the same way with or without it."""

    done_seen = False

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = super().handle_request(request)
        self.done_seen = False
        response.stream = _Watched(response.stream, self)
        return response


class _Watched(httpx2.SyncByteStream):
    def __init__(self, stream: httpx2.SyncByteStream, watch: DoneWatch) -> None:
        self.stream, self.watch = stream, watch

    def __iter__(self) -> Iterator[bytes]:
        tail = b""
        for chunk in self.stream:
            tail = (tail + chunk)[-2 * len(DONE_EVENT) :]
            if DONE_EVENT in tail:
                self.watch.done_seen = True
            yield chunk

    def close(self) -> None:
        self.stream.close()


class Clients:
    """One user's clients of the LB, kept across requests as users' code keeps them."""

    def __init__(self, target: Target) -> None:
        check_lab_address(target.address)
        verify = target.ssl_context()
        headers = {"Authorization": f"Bearer {target.key}"} if target.key else {}
        self.ollama = ollama.Client(
            host=target.url, headers=headers, verify=verify, timeout=TIMEOUT_SECONDS
        )
        self.watch = DoneWatch(verify=verify)
        self.openai = openai.OpenAI(
            base_url=target.url + "/v1/",
            # The client insists on a key; the LB refuses a wrong one as it refuses none.
            api_key=target.key or "none",
            # A retry would hide the failure this load is here to count.
            max_retries=0,
            http_client=openai.DefaultHttpxClient(transport=self.watch, timeout=TIMEOUT_SECONDS),
        )

    def close(self) -> None:
        self.ollama.close()
        self.openai.close()

    def call(self, kind: str, model: str, tokens: int, number: int) -> Outcome:
        started = time.monotonic()
        # Set once a stream's first chunk arrives: a stream cut after it is truncated.
        self.answering = False

        def outcome(status: int, verdict: str, detail: str = "") -> Outcome:
            return Outcome(kind, model, started, time.monotonic(), status, verdict, detail)

        try:
            complete = getattr(self, "_" + kind.replace("-", "_"))(model, tokens, number)
        except ollama.ResponseError as exc:
            return outcome(exc.status_code, "failed", exc.error[:200])
        except openai.APIStatusError as exc:
            # The client hands over the body's `error` object: OpenAI's {message, type, code}.
            body = exc.body
            text = body.get("message", body) if isinstance(body, dict) else body
            return outcome(exc.status_code, "failed", str(text)[:200])
        except (
            OSError,
            ConnectionError,
            httpx.HTTPError,
            httpx2.HTTPError,
            openai.APIError,
            ValueError,
        ) as exc:
            if self.answering:
                return outcome(200, "truncated", repr(exc)[:200])
            return outcome(0, "failed", repr(exc)[:200])
        return outcome(200, "served" if complete else "truncated")

    def _chat(self, model: str, tokens: int, number: int) -> bool:
        messages = [{"role": "user", "content": f"request {number}: say something"}]
        parts = self.ollama.chat(
            model=model, messages=messages, stream=True, options={"num_predict": tokens}
        )
        return self._last(parts).done is True

    def _generate(self, model: str, tokens: int, number: int) -> bool:
        parts = self.ollama.generate(
            model=model,
            prompt=f"request {number}: say something",
            stream=True,
            options={"num_predict": tokens},
        )
        return self._last(parts).done is True

    def _openai_chat(self, model: str, tokens: int, number: int) -> bool:
        stream = self.openai.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"request {number}: say something"}],
            max_tokens=tokens,
            stream=True,
        )
        last = self._last(c for c in stream if c.choices)
        return last.choices[0].finish_reason == "stop" and self.watch.done_seen

    def _embed(self, model: str, _tokens: int, number: int) -> bool:
        inputs = [f"request {number}", "say something"]
        return len(self.ollama.embed(model=model, input=inputs).embeddings) == len(inputs)

    def _last(self, parts: Iterator) -> Any:
        """A stream's last chunk, noting when its first arrives."""
        last = None
        for part in parts:
            self.answering = True
            last = part
        if last is None:
            raise ValueError("the stream ended before its first chunk")
        return last


def stream_once(target: Target, kind: str, model: str, tokens: int, number: int) -> Outcome:
    """One request with fresh clients, as a one-off script would make it."""
    clients = Clients(target)
    try:
        return clients.call(kind, model, tokens, number)
    finally:
        clients.close()


class Load:
    """`concurrency` workers calling the LB until stop(); the report holds every request."""

    def __init__(
        self,
        target: Target,
        models: list[str],
        concurrency: int = 20,
        tokens: int = 40,
        kinds: tuple[str, ...] = KINDS,
    ) -> None:
        check_lab_address(target.address)
        self.target, self.models, self.tokens, self.kinds = target, models, tokens, kinds
        self.report = LoadReport()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.numbers = itertools.count()
        self.workers = [
            threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(concurrency)
        ]

    def _work(self, index: int) -> None:
        # Workers start at different kinds, so every kind is in flight from the start.
        kinds = itertools.islice(itertools.cycle(self.kinds), index % len(self.kinds), None)
        clients = Clients(self.target)
        try:
            while not self.stopping.is_set():
                number = next(self.numbers)
                model = self.models[number % len(self.models)]
                outcome = clients.call(next(kinds), model, self.tokens, number)
                with self.lock:
                    self.report.outcomes.append(outcome)
                if outcome.verdict != "served":
                    self.stopping.wait(RETRY_PAUSE_SECONDS)
        finally:
            clients.close()

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
