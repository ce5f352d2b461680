"""The collector runs on its timer on a lab host with no GPU and no Ollama."""

import time


def test_timer_is_enabled_and_active(host):
    timer = host.service("gpufleet-gpu-metrics.timer")
    assert timer.is_enabled and timer.is_running


def test_metrics_file_says_no_gpu_and_no_ollama(host):
    prom = host.file("/var/lib/node_exporter/textfile/gpufleet_gpu.prom")
    for _ in range(20):
        if prom.exists:
            break
        time.sleep(1)
    assert prom.mode == 0o644
    assert prom.contains("^gpufleet_gpu_up 0$")
    assert prom.contains("^gpufleet_ollama_up 0$")
    assert prom.contains("^# TYPE gpufleet_gpu_up gauge$")
