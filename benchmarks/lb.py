"""Benchmark: what the load balancer costs a request, against going straight to Ollama.

On loopback: the Ollama stand-in serves one model, and HAProxy runs the haproxy role's own
configuration (its template and defaults, rendered by Ansible) with that one backend behind
it, once routing by the model in the body and once sending everything to the default
backend. Both have the front door on as the role sets it by default (an API key checked on
every request, the allowlist, the per-key limits, set high enough not to refuse the
benchmark), TLS aside: the figures are of HAProxy's HTTP work. Every request carries the key,
direct ones too. Each path gets the same work, in turns, in the same run:

- short non-streaming generates (one token, no token delay) from 8 clients on keep-alive
  connections: requests per second and the median latency;
- 20 concurrent streams of 200 tokens: wall time.

Targets: LB throughput at least 0.95 of direct, at most 2 ms added at the median. The
stand-in is Python, so figures are of this machine; the ratios are what carry over.
Prints one JSON line of figures and ratios last.

    .venv/bin/python benchmarks/lb.py [--requests 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from gpufleet.lab.standins.ollama.registry import Registry
from gpufleet.lab.system import free_port

REPO = Path(__file__).resolve().parents[1]
MODEL = "llama3.1:8b"
CLIENTS = 8
STREAMS = 20
STREAM_TOKENS = 200
API_KEY = secrets.token_urlsafe(32)
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
RENDER = """
- name: Render the haproxy role's configuration for the benchmark
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files:
    - {repo}/roles/haproxy/defaults/main.yml
    - {repo}/roles/haproxy/vars/main.yml
  tasks:
    - name: Render the configuration and the model map
      ansible.builtin.template:
        src: "{repo}/roles/haproxy/templates/{{{{ item.src }}}}"
        dest: "{{{{ item.dest }}}}"
        mode: "0644"
      loop:
        - {{src: haproxy.cfg.j2, dest: "{{{{ bench_dir }}}}/haproxy.cfg"}}
        - {{src: models.map.j2, dest: "{{{{ haproxy_models_map }}}}"}}
        - {{src: api-keys.map.j2, dest: "{{{{ haproxy_api_keys_map }}}}"}}
    - name: Render the API keys' limits
      ansible.builtin.template:
        src: "{repo}/roles/haproxy/templates/api-key-limits.map.j2"
        dest: "{{{{ item.dest }}}}"
        mode: "0644"
      vars:
        haproxy_api_key_limit: "{{{{ item.limit }}}}"
      loop:
        - {{limit: requests_per_minute, dest: "{{{{ haproxy_api_key_rates_map }}}}"}}
        - {{limit: concurrent_requests, dest: "{{{{ haproxy_api_key_concurrency_map }}}}"}}
"""
INVENTORY = """
all:
  children:
    role_gpu:
      hosts:
        direct:
          ec2_private_ip: 127.0.0.1
          ec2_tags: {{"gpufleet:model": "{model}"}}
"""


def start_ollama(directory: Path, registry: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    environment = {
        **os.environ,
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "OLLAMA_MODELS": str(directory / "models"),
        "OLLAMA_STANDIN_REGISTRY": registry,
        "OLLAMA_STANDIN_TOKENS_PER_SECOND": "0",
        "OLLAMA_NUM_PARALLEL": "64",
        "OLLAMA_KEEP_ALIVE": "-1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gpufleet.lab.standins.ollama", "serve"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    post(port, "/api/pull", {"model": MODEL, "insecure": True, "stream": False})
    return process, port


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/")
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing answered on 127.0.0.1:{port}")


def post(port: int, path: str, body: dict) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    answer = connection.getresponse().read()
    connection.close()
    return answer


def start_haproxy(directory: Path, ollama_port: int, route_by_model: bool) -> tuple:
    """HAProxy with the role's configuration, its one server the stand-in; (process, port)."""
    bench = directory / ("routed" if route_by_model else "plain")
    bench.mkdir()
    port = free_port()
    settings = {
        "bench_dir": str(bench),
        "haproxy_route_by_model": route_by_model,
        "haproxy_bind_address": "127.0.0.1",
        "haproxy_port": port,
        "haproxy_ollama_port": ollama_port,
        "haproxy_agent_port": free_port(),
        "haproxy_server_maxconn": 64,
        "haproxy_prometheus_address": "127.0.0.1",
        "haproxy_prometheus_port": free_port(),
        "haproxy_runtime_socket": str(bench / "admin.sock"),
        "haproxy_server_state_file": str(bench / "server-state"),
        "haproxy_models_map": str(bench / "models.map"),
        "haproxy_tls": False,
        "haproxy_api_keys": [
            {
                "name": "benchmark",
                "key": API_KEY,
                "requests_per_minute": 1_000_000_000,
                "concurrent_requests": 1_000,
            }
        ],
        "haproxy_api_keys_map": str(bench / "api-keys.map"),
        "haproxy_api_key_rates_map": str(bench / "api-key-rates.map"),
        "haproxy_api_key_concurrency_map": str(bench / "api-key-concurrency.map"),
        # A journal line per benchmark request would measure syslog, not the LB.
        "haproxy_frontend_extra": ["no log"],
    }
    (bench / "render.yml").write_text(RENDER.format(repo=REPO))
    (bench / "inventory.yml").write_text(INVENTORY.format(model=MODEL))
    subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(bench / "inventory.yml"),
            str(bench / "render.yml"),
            "-e",
            json.dumps(settings),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
    )
    process = subprocess.Popen(
        ["haproxy", "-f", str(bench / "haproxy.cfg")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    # Let the first health check mark the server up.
    time.sleep(3)
    return process, port


def short_requests(port: int, total: int) -> tuple[float, list[float]]:
    """Requests per second and each request's latency, CLIENTS keep-alive clients."""
    body = json.dumps(
        {"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
    )
    latencies: list[float] = []
    lock = threading.Lock()

    def client(count: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        for _request in range(count):
            started = time.perf_counter()
            connection.request("POST", "/api/generate", body, HEADERS)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"port {port}: HTTP {response.status}")
            mine.append(time.perf_counter() - started)
        connection.close()
        with lock:
            latencies.extend(mine)

    workers = [
        threading.Thread(target=client, args=(total // CLIENTS,)) for _client in range(CLIENTS)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return len(latencies) / (time.perf_counter() - started), latencies


def streams(port: int) -> float:
    """Wall time of STREAMS concurrent streams of STREAM_TOKENS tokens."""
    body = json.dumps({"model": MODEL, "prompt": "hi", "options": {"num_predict": STREAM_TOKENS}})

    def stream() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("POST", "/api/generate", body, HEADERS)
        last = b""
        for line in connection.getresponse():
            last = line or last
        if json.loads(last).get("done") is not True:
            raise SystemExit(f"port {port}: a stream ended without done")
        connection.close()

    workers = [threading.Thread(target=stream) for _stream in range(STREAMS)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


def measure(paths: dict[str, int], requests: int, rounds: int) -> dict[str, dict[str, float]]:
    """Each path in turn, round after round, so drift on a shared machine hits all alike."""
    rates: dict[str, list[float]] = {name: [] for name in paths}
    latencies: dict[str, list[float]] = {name: [] for name in paths}
    walls: dict[str, list[float]] = {name: [] for name in paths}
    for _round in range(rounds):
        for name, port in paths.items():
            rate, each = short_requests(port, requests)
            rates[name].append(rate)
            latencies[name] += each
            walls[name].append(streams(port))
    return {
        name: {
            "requests_per_s": round(statistics.median(rates[name]), 1),
            "p50_ms": round(statistics.median(latencies[name]) * 1000, 3),
            "streams_wall_s": round(statistics.median(walls[name]), 3),
        }
        for name in paths
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--requests", type=int, default=400, help="short requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    registry = Registry({MODEL: 1_000_000})
    processes = []
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        try:
            ollama, ollama_port = start_ollama(directory, registry.start())
            processes.append(ollama)
            routed, routed_port = start_haproxy(directory, ollama_port, route_by_model=True)
            plain, plain_port = start_haproxy(directory, ollama_port, route_by_model=False)
            processes += [routed, plain]
            paths = {"direct": ollama_port, "lb_routed": routed_port, "lb_plain": plain_port}
            figures = measure(paths, args.requests, args.rounds)
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=10)
            registry.stop()
    direct = figures["direct"]
    for name in ("lb_routed", "lb_plain"):
        print(f"{name}: {figures[name]} against direct {direct}", file=sys.stderr)
    result = {
        **{f"{name}_{k}": v for name, values in figures.items() for k, v in values.items()},
        "routed_throughput_ratio": round(
            figures["lb_routed"]["requests_per_s"] / direct["requests_per_s"], 3
        ),
        "plain_throughput_ratio": round(
            figures["lb_plain"]["requests_per_s"] / direct["requests_per_s"], 3
        ),
        "routed_added_p50_ms": round(figures["lb_routed"]["p50_ms"] - direct["p50_ms"], 3),
        "plain_added_p50_ms": round(figures["lb_plain"]["p50_ms"] - direct["p50_ms"], 3),
        "routed_streams_ratio": round(
            direct["streams_wall_s"] / figures["lb_routed"]["streams_wall_s"], 3
        ),
        "targets": {"throughput_ratio_min": 0.95, "added_p50_ms_max": 2.0},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
