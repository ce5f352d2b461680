"""The monitoring examples against the real programs, on loopback: promtool checks the scrape
configuration, and every query of the Grafana dashboard returns data from a real Prometheus
scraping a real node exporter (its textfile holding the gpu_metrics collector's output for a
T4, with Ollama's documented /api/ps and /api/tags answers) and a real HAProxy's exporter.

The GPU is the only stand-in: nvidia-smi's CSV recorded on a g4dn.xlarge.
"""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import repo_scripts
from canned_http import Reply, canned_http

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "docs" / "monitoring"
NVIDIA_SMI_SAMPLE = REPO / "tests" / "unit" / "nvidia_smi" / "t4_g4dn_xlarge.csv"
GiB = 1024**3
OLLAMA_PS = {
    "models": [
        {"name": "llama3.1:8b", "model": "llama3.1:8b", "size": 6 * GiB, "size_vram": 6 * GiB},
    ]
}
OLLAMA_TAGS = {"models": [{"name": "llama3.1:8b", "model": "llama3.1:8b", "size": 5 * GiB}]}

metrics = repo_scripts.load("roles/gpu_metrics/files/gpufleet_gpu_metrics.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args[0]} exited {process.returncode}: {process.stderr.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {timeout} s")


def start(stack: ExitStack, argv: list[str], ready_url: str) -> None:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stack.callback(process.wait, 10)
    stack.callback(process.terminate)
    wait_until_ready(ready_url, process)


def gpu_textfile(directory: Path) -> None:
    """What the gpu_metrics timer writes on a T4 host serving llama3.1:8b."""
    nvidia_smi = directory.parent / "nvidia-smi"
    nvidia_smi.write_text(f"#!/bin/sh\ncat <<'EOF'\n{NVIDIA_SMI_SAMPLE.read_text()}EOF\n")
    nvidia_smi.chmod(nvidia_smi.stat().st_mode | stat.S_IEXEC)
    replies = {
        "/api/ps": Reply(json.dumps(OLLAMA_PS).encode()),
        "/api/tags": Reply(json.dumps(OLLAMA_TAGS).encode()),
    }
    with canned_http(replies) as ollama:
        text = metrics.collect(str(nvidia_smi), ollama)
    metrics.write_atomically(directory / "gpufleet_gpu.prom", text)


def haproxy_config(path: Path, exporter_port: int, server_port: int) -> None:
    """A model backend and the default one with gpu-1 in each, as the haproxy role names them,
    and the exporter frontend of the role."""
    path.write_text(
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n"
        "    timeout server 5s\n"
        f"frontend prometheus\n    bind 127.0.0.1:{exporter_port}\n"
        "    http-request use-service prometheus-exporter if { path /metrics }\n"
        "    http-request deny\n"
        f"backend be_model_llama3_1_8b\n    server gpu-1 127.0.0.1:{server_port}\n"
        f"backend be_default\n    server gpu-1 127.0.0.1:{server_port}\n"
    )


def prometheus_config(path: Path, node_port: int, haproxy_port: int) -> None:
    """The example's jobs, with static targets labelled as its relabelling labels EC2's."""
    path.write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n"
        "  - job_name: gpufleet-gpu\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{node_port}']\n"
        "        labels: {instance: gpu-1, pool: chat}\n"
        "  - job_name: gpufleet-lb\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{haproxy_port}']\n"
        "        labels: {instance: lb-1}\n"
    )


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("monitoring")
    textfile = work / "textfile"
    gpu_textfile(textfile)
    node, exporter, prom = free_port(), free_port(), free_port()
    haproxy_config(work / "haproxy.cfg", exporter, free_port())
    prometheus_config(work / "prometheus.yml", node, exporter)
    with ExitStack() as stack:
        start(
            stack,
            [
                "prometheus-node-exporter",
                f"--web.listen-address=127.0.0.1:{node}",
                "--collector.disable-defaults",
                "--collector.textfile",
                f"--collector.textfile.directory={textfile}",
            ],
            f"http://127.0.0.1:{node}/metrics",
        )
        start(
            stack,
            ["haproxy", "-db", "-f", str(work / "haproxy.cfg")],
            f"http://127.0.0.1:{exporter}/metrics",
        )
        start(
            stack,
            [
                "prometheus",
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom}",
            ],
            f"http://127.0.0.1:{prom}/-/ready",
        )
        yield f"http://127.0.0.1:{prom}"


def query(prometheus: str, expression: str) -> list[dict]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=10) as reply:
        answer = json.load(reply)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def test_promtool_accepts_the_scrape_configuration():
    result = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(MONITORING / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("title", "expression"), dashboard_queries())
def test_every_dashboard_query_returns_data(prometheus, title, expression):
    # rate() needs two scrapes inside its range: a few seconds at the 1 s interval.
    deadline = time.monotonic() + 60
    while not (result := query(prometheus, expression)):
        if time.monotonic() > deadline:
            pytest.fail(f"{title}: `{expression}` returned no data within 60 s")
        time.sleep(1)
    assert all(len(series["value"]) == 2 for series in result)


def test_the_per_pool_queries_name_the_pool_of_the_lbs_server(prometheus):
    pools = query(prometheus, dict(dashboard_queries())["Requests per pool"])
    assert [series["metric"] for series in pools] == [{"pool": "chat"}]
    loaded = query(prometheus, dict(dashboard_queries())["Models loaded per host"])
    assert loaded[0]["metric"] == {"instance": "gpu-1"} and loaded[0]["value"][1] == "1"
