"""Prometheus fed by the lab: the controller, the lab's monitoring host, scrapes the GPU hosts'
node exporters and the LB's HAProxy exporter through their firewalls, and the Grafana
dashboard's queries return data, except the panels whose data the lab's scrape cannot have:
the GPU panels (the lab has no GPU) and the scaler's (it runs in its own drill);
tests/monitoring feeds both, a recorded nvidia-smi and the scaler's own metrics server."""

from __future__ import annotations

import json

from labctl import gpufleet

GPU_PANELS = {"GPU utilisation", "GPU memory used"}
SCALER_PANEL = "Scaler: why each pool grew or shrank"


def test_every_panel_that_needs_no_gpu_has_data_from_the_lab(fleet):
    result = gpufleet("lab", "prometheus", "--json", check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    panels = json.loads(result.stdout)
    empty = {p["title"] for p in panels if not p["series"]}
    # Every panel is answered unless the lab cannot have its data, and says why.
    assert empty == {p["title"] for p in panels if p["lab_lacks"]}, panels
    assert GPU_PANELS | {SCALER_PANEL} <= empty, panels
    by_title = {p["title"]: p["series"] for p in panels}
    # One series per pool of the lab's GPU hosts; the default backend and a model's at least.
    assert by_title["Requests per pool"] >= 1
    assert by_title["Requests per model backend"] >= 2
    assert by_title["Models loaded per host"] >= 1
