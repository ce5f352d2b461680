"""Prometheus fed by the lab, and the Grafana dashboard's queries run against it.

Debian's Prometheus runs on the controller (the lab's monitoring host, which the hosts'
firewalls let in) and scrapes the lab as docs/monitoring/prometheus.yml scrapes EC2: node
exporter on the GPU hosts (with the gpu_metrics textfile) and HAProxy's exporter on the LB
hosts, labelled by host name and pool. Every query of docs/monitoring/grafana-dashboard.json
is then run; the GPU panels stay empty, as the lab has no GPU, and the scaler's, which runs in
its own drill (tests/monitoring feeds them a recorded nvidia-smi and the scaler's own metrics
server). Optionally headless Chromium takes a screenshot of Prometheus' graph
page.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpufleet.lab import LabError, system
from gpufleet.lab.topology import LabTopology

DASHBOARD = Path(__file__).resolve().parents[3] / "docs" / "monitoring" / "grafana-dashboard.json"
NODE_EXPORTER_PORT = 9100
HAPROXY_EXPORTER_PORT = 8405
# Metrics the lab's scrape cannot have, and why: their panels may be empty there.
LAB_LACKS = {
    "gpufleet_gpu_utilization_ratio": "the lab has no GPU",
    "gpufleet_gpu_memory_used_bytes": "the lab has no GPU",
    "gpufleet_scaler_": "the scaler runs in `gpufleet lab scaler-drill`",
}
SCRAPE_INTERVAL_S = 2
# How long Prometheus or an exporter may take to answer after it starts.
READY_TIMEOUT_S = 30
# The panel `--screenshot` graphs: it has data in the lab, GPU or not.
SCREENSHOT_PANEL = "Requests per model backend"

# (address:port, labels) per target, by job name.
Jobs = dict[str, list[tuple[str, dict[str, str]]]]


@dataclass(frozen=True)
class PanelResult:
    title: str
    expression: str
    series: int
    # Why the lab's scrape cannot answer it ("" when it can).
    lab_lacks: str


def dashboard_queries(dashboard: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(name, PromQL) for every target of every panel: the panel's title, and in a panel of
    several targets what each one's legend adds ("Requests per model backend, 5xx")."""
    panels = json.loads(dashboard.read_text())["panels"]
    return [
        (_target_name(panel, target), target["expr"])
        for panel in panels
        for target in panel["targets"]
    ]


def _target_name(panel: dict, target: dict) -> str:
    extra = re.sub(r"\{\{.*?\}\}", "", target.get("legendFormat", "")).strip()
    return f"{panel['title']}, {extra}" if extra and len(panel["targets"]) > 1 else panel["title"]


def lab_jobs(topology: LabTopology) -> Jobs:
    """The lab's hosts as the example's EC2 discovery and relabelling name them."""
    gpu = [
        (f"{h.address}:{NODE_EXPORTER_PORT}", {"instance": h.name, "pool": h.pool})
        for h in topology.hosts
        if h.role == "gpu"
    ]
    lb = [
        (f"{h.address}:{HAPROXY_EXPORTER_PORT}", {"instance": h.name})
        for h in topology.hosts
        if h.role == "lb"
    ]
    return {"gpufleet-gpu": gpu, "gpufleet-lb": lb}


def prometheus_config(
    jobs: Jobs, interval_s: int = SCRAPE_INTERVAL_S, rules: Path | None = None
) -> str:
    """A Prometheus configuration with static targets, and the rule file evaluated at the
    scrape interval; JSON, which YAML reads."""
    interval = f"{interval_s}s"
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        **({"rule_files": [str(rules)]} if rules else {}),
        "scrape_configs": [
            {
                "job_name": name,
                "static_configs": [{"targets": [t], "labels": labels} for t, labels in targets],
            }
            for name, targets in jobs.items()
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def answers(url: str) -> bool:
    try:
        # The URLs are Prometheus' and the exporters' on loopback, built here: http only.
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310
            return True
    except OSError:
        return False


@contextmanager
def running(argv: list[str], ready_url: str) -> Iterator[None]:
    """A program started for the block, stopped after it; ready when ready_url answers."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        started = system.wait_until(
            lambda: process.poll() is not None or answers(ready_url), READY_TIMEOUT_S
        )
        if process.poll() is not None:
            errors = process.stderr.read()
            raise LabError(f"{argv[0]} exited {process.returncode}: {errors}")
        if not started:
            raise LabError(f"{ready_url} did not answer within {READY_TIMEOUT_S} s")
        yield
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def prometheus(config: str) -> Iterator[str]:
    """Prometheus on a free loopback port with config and a throwaway database; its URL."""
    if shutil.which("prometheus") is None:
        raise LabError("prometheus is not installed: run `make deps`")
    with tempfile.TemporaryDirectory(prefix="gpufleet-prometheus-") as work:
        config_file = Path(work) / "prometheus.yml"
        config_file.write_text(config)
        base = f"http://127.0.0.1:{system.free_port()}"
        argv = [
            "prometheus",
            f"--config.file={config_file}",
            f"--storage.tsdb.path={Path(work) / 'data'}",
            f"--web.listen-address={base.removeprefix('http://')}",
        ]
        with running(argv, f"{base}/-/ready"):
            yield base


def query(base: str, expression: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - Prometheus on loopback
        answer = json.load(reply)
    if answer.get("status") != "success":
        raise LabError(f"Prometheus refused `{expression}`: {answer}")
    return answer["data"]["result"]


def rule_health(base: str) -> dict[str, str]:
    """Each loaded rule's name (a record's or an alert's) and its health after Prometheus'
    last evaluation: ok, unknown (not evaluated yet) or the evaluation's error."""
    with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10) as reply:  # noqa: S310
        groups = json.load(reply)["data"]["groups"]
    return {
        rule["name"]: rule["health"] if rule["health"] != "err" else rule.get("lastError", "err")
        for group in groups
        for rule in group["rules"]
    }


def lab_lacks(expression: str) -> str:
    """Why the lab's scrape cannot answer the expression; "" when it can."""
    return next((why for metric, why in LAB_LACKS.items() if metric in expression), "")


def run_dashboard(base: str, timeout: float = 60, complete: bool = False) -> list[PanelResult]:
    """Every dashboard query, asked until it has data (rate() needs two scrapes) or the
    time is up; on the lab's scrape (complete false) a panel whose data the lab lacks (a
    GPU's, the scaler's) is asked once, as its data cannot come."""
    deadline = time.monotonic() + timeout
    results = []
    for title, expression in dashboard_queries():
        series = query(base, expression)
        waits = complete or not lab_lacks(expression)
        while not series and waits and time.monotonic() < deadline:
            time.sleep(1)
            series = query(base, expression)
        results.append(PanelResult(title, expression, len(series), lab_lacks(expression)))
    return results


def screenshot(url: str, path: Path) -> None:
    """Prometheus' page at url as a PNG, rendered by headless Chromium."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise LabError("--screenshot needs Chromium: apt-get install chromium")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            "--virtual-time-budget=15000",
            f"--screenshot={path}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def graph_url(base: str, expression: str, range_input: str = "2m") -> str:
    return f"{base}/graph?" + urllib.parse.urlencode(
        {"g0.expr": expression, "g0.tab": "0", "g0.range_input": range_input}
    )
