"""Prometheus fed by the lab: the controller, the lab's monitoring host, scrapes the GPU hosts'
node exporters and the LB's HAProxy exporter through their firewalls, and the Grafana
dashboard's queries return data, except the GPU panels (the lab has no GPU;
tests/monitoring feeds them a recorded nvidia-smi)."""

from __future__ import annotations

import json

from labctl import gpufleet

GPU_PANELS = {"GPU utilisation", "GPU memory used"}


def test_every_panel_that_needs_no_gpu_has_data_from_the_lab(fleet):
    result = gpufleet("lab", "prometheus", "--json", check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    panels = json.loads(result.stdout)
    assert {p["title"] for p in panels if not p["series"]} == GPU_PANELS, panels
    by_title = {p["title"]: p["series"] for p in panels}
    # One series per pool of the lab's GPU hosts; the default backend and a model's at least.
    assert by_title["Requests per pool"] >= 1
    assert by_title["Requests per model backend"] >= 2
    assert by_title["Models loaded per host"] >= 1
