"""The collector runs on its timer on a lab host with no GPU, no Ollama and no fleet agent."""

import re
import time


def test_timer_is_enabled_and_active(host):
    timer = host.service("gpufleet-gpu-metrics.timer")
    assert timer.is_enabled and timer.is_running


def test_metrics_file_says_no_gpu_no_ollama_and_no_agent(host):
    prom = host.file("/var/lib/node_exporter/textfile/gpufleet_gpu.prom")
    for _attempt in range(20):
        if prom.exists:
            break
        time.sleep(1)
    assert prom.is_symlink
    assert prom.linked_to == "/var/lib/gpufleet-gpu-metrics/gpufleet_gpu.prom"
    written = host.file(prom.linked_to)
    assert written.user == "gpufleet-metrics" and written.mode == 0o644
    assert prom.contains("^gpufleet_gpu_up 0$")
    assert prom.contains("^gpufleet_ollama_up 0$")
    assert prom.contains("^gpufleet_agent_up 0$")
    assert prom.contains("^# TYPE gpufleet_gpu_up gauge$")


def test_the_last_run_succeeded_as_its_own_user(host):
    shown = host.check_output(
        "systemctl show gpufleet-gpu-metrics.service -p Result -p User -p TimeoutStartUSec"
    )
    assert "Result=success" in shown
    assert "User=gpufleet-metrics" in shown
    assert "TimeoutStartUSec=30s" in shown


def test_the_unit_exposes_little(host):
    """systemd-analyze security rates exposure from 0 (locked down) to 10."""
    out = host.check_output("systemd-analyze security --no-pager gpufleet-gpu-metrics.service")
    exposure = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
    assert exposure <= 4.5, out
