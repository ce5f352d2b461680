"""The monitoring examples against the real programs, on loopback: promtool checks the scrape
configuration, and every query of the Grafana dashboard returns data from a real Prometheus
scraping a real node exporter (its textfile holding the gpu_metrics collector's output for a
T4, with Ollama's documented /api/ps and /api/tags answers), a real HAProxy's exporter and
gpufleet-scaler's own metrics server (with the figures and decisions of a pass that grew the
pool chat).

The GPU is the only stand-in: nvidia-smi's CSV recorded on a g4dn.xlarge.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import repo_scripts
import yaml
from canned_http import Reply, canned_http
from fake_nvidia_smi import fake_nvidia_smi

from gpufleet.lab import monitoring
from gpufleet.lab.system import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "docs" / "monitoring"
GiB = 1024**3
OLLAMA_PS = {
    "models": [
        {"name": "llama3.1:8b", "model": "llama3.1:8b", "size": 6 * GiB, "size_vram": 6 * GiB},
    ]
}
OLLAMA_TAGS = {"models": [{"name": "llama3.1:8b", "model": "llama3.1:8b", "size": 5 * GiB}]}

metrics = repo_scripts.load("roles/gpu_metrics/files/gpufleet_gpu_metrics.py")
for name in ("haproxy_runtime", "fleet_backends", "spot_fallback", "fleet_instances", "scaling"):
    repo_scripts.load(f"plugins/module_utils/{name}.py", f"gpufleet_{name}")
scaler = repo_scripts.load("roles/scaler/files/gpufleet_scaler.py")


def scaler_metrics(port: int):
    """The scaler's metrics server, as after a pass that added a host to the pool chat."""
    memory = scaler.Memory()
    figures = {'queue{pool="chat"}': 14.0, 'desired{pool="chat"}': 3.0, 'serving{pool="chat"}': 2.0}
    scaler.publish(memory, {"up": 1.0, "dry_run": 0.0, **figures})
    memory.decisions[("chat", "out", "queue_over")] = 1
    memory.decisions[("chat", "hold", "launching")] = 4
    server = scaler.serve_metrics(memory, ("127.0.0.1", port))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def gpu_textfile(directory: Path) -> None:
    """What the gpu_metrics timer writes on a T4 host serving llama3.1:8b."""
    nvidia_smi = fake_nvidia_smi(directory.parent, "t4_g4dn_xlarge.csv")
    replies = {
        "/api/ps": Reply(json.dumps(OLLAMA_PS).encode()),
        "/api/tags": Reply(json.dumps(OLLAMA_TAGS).encode()),
    }
    with canned_http(replies) as ollama:
        text = metrics.collect(nvidia_smi, ollama)
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


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> Iterator[str]:
    """The example's jobs, with static targets labelled as its relabelling labels EC2's."""
    work = tmp_path_factory.mktemp("monitoring")
    textfile = work / "textfile"
    gpu_textfile(textfile)
    node, exporter, scaling = free_port(), free_port(), free_port()
    haproxy_config(work / "haproxy.cfg", exporter, free_port())
    jobs = {
        "gpufleet-gpu": [(f"127.0.0.1:{node}", {"instance": "gpu-1", "pool": "chat"})],
        "gpufleet-lb": [(f"127.0.0.1:{exporter}", {"instance": "lb-1"})],
        "gpufleet-scaler": [(f"127.0.0.1:{scaling}", {"instance": "lb-1"})],
    }
    node_exporter = [
        "prometheus-node-exporter",
        f"--web.listen-address=127.0.0.1:{node}",
        "--collector.disable-defaults",
        "--collector.textfile",
        f"--collector.textfile.directory={textfile}",
    ]
    haproxy = ["haproxy", "-db", "-f", str(work / "haproxy.cfg")]
    scaler_server = scaler_metrics(scaling)
    with (
        monitoring.running(node_exporter, f"http://127.0.0.1:{node}/metrics"),
        monitoring.running(haproxy, f"http://127.0.0.1:{exporter}/metrics"),
        monitoring.prometheus(
            monitoring.prometheus_config(jobs, interval_s=1, rules=MONITORING / "alerts.yml")
        ) as base,
    ):
        yield base
    scaler_server.shutdown()


def test_promtool_accepts_the_scrape_configuration():
    result = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(MONITORING / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_query_returns_data(prometheus):
    # rate() needs two scrapes inside its range: a few seconds at the 1 s interval.
    results = monitoring.run_dashboard(prometheus, timeout=60, complete=True)
    assert len(results) == len(monitoring.dashboard_queries()) >= 8
    empty = [(r.title, r.expression) for r in results if not r.series]
    assert empty == []


def test_the_per_pool_queries_name_the_pool_of_the_lbs_server(prometheus):
    queries = dict(monitoring.dashboard_queries())
    pools = monitoring.query(prometheus, queries["Requests per pool"])
    assert [series["metric"] for series in pools] == [{"pool": "chat"}]
    loaded = monitoring.query(prometheus, queries["Models loaded per host"])
    assert loaded[0]["metric"] == {"instance": "gpu-1"} and loaded[0]["value"][1] == "1"


def test_real_prometheus_evaluates_every_rule_and_the_pool_records_name_the_pool(prometheus):
    """The rules on the real exporters' series: each evaluates without an error, and the
    per-pool records find the LB server's pool through the GPU host's labels."""
    settled = wait_until(
        lambda: "unknown" not in monitoring.rule_health(prometheus).values(), 30, 0.5
    )
    health = monitoring.rule_health(prometheus)
    assert settled and set(health.values()) == {"ok"}, health
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    assert len(health) == sum(len(group["rules"]) for group in groups), health

    def pools() -> list[dict]:
        return [
            s["metric"] for s in monitoring.query(prometheus, "pool:gpufleet_lb_responses:rate5m")
        ]

    wait_until(lambda: bool(pools()), 30, 0.5)
    assert pools() == [{"__name__": "pool:gpufleet_lb_responses:rate5m", "pool": "chat"}]


def test_every_query_has_its_own_name():
    """A panel of several targets names each one, so a report or a test never mistakes the
    5xx query of a panel for its requests query."""
    names = [name for name, _query in monitoring.dashboard_queries()]
    assert len(names) == len(set(names)), names
    assert "Requests per model backend, 5xx" in names
