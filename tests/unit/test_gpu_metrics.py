"""The GPU metrics collector: nvidia-smi parsing, Ollama's API, real Prometheus text."""

import importlib.util
import stat
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

SCRIPT = Path(__file__).resolve().parents[2] / "roles/gpu_metrics/files/gpufleet_gpu_metrics.py"
SAMPLES = Path(__file__).resolve().parent / "nvidia_smi"
spec = importlib.util.spec_from_file_location("gpufleet_gpu_metrics", SCRIPT)
metrics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(metrics)


def parsed(text):
    """{(metric, frozenset(labels)): value} through Prometheus's own parser."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def fake_nvidia_smi(tmp_path, sample=None, status=0):
    script = tmp_path / "nvidia-smi"
    body = (SAMPLES / sample).read_text() if sample else ""
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{body}EOF\nexit {status}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


@pytest.mark.parametrize(
    ("sample", "gpus", "name"),
    [
        ("t4_g4dn_xlarge.csv", 1, "Tesla T4"),
        ("a10g_g5_12xlarge.csv", 4, "NVIDIA A10G"),
        ("l4_g6_xlarge.csv", 1, "NVIDIA L4"),
        ("h100_p5.csv", 2, "NVIDIA H100 80GB HBM3"),
    ],
)
def test_each_gpu_is_reported(tmp_path, sample, gpus, name):
    values = parsed(metrics.collect(fake_nvidia_smi(tmp_path, sample), None))
    assert values[("gpufleet_gpu_up", frozenset())] == 1
    infos = [k for k in values if k[0] == "gpufleet_gpu_info"]
    assert len(infos) == gpus
    assert all(("name", name) in labels for _, labels in infos)


def test_units_are_converted_to_ratio_bytes_watts(tmp_path):
    values = parsed(metrics.collect(fake_nvidia_smi(tmp_path, "t4_g4dn_xlarge.csv"), None))
    gpu0 = frozenset({("gpu", "0")})
    assert values[("gpufleet_gpu_utilization_ratio", gpu0)] == pytest.approx(0.87)
    assert values[("gpufleet_gpu_memory_used_bytes", gpu0)] == 11234 * 1024 * 1024
    assert values[("gpufleet_gpu_memory_total_bytes", gpu0)] == 15360 * 1024 * 1024
    assert values[("gpufleet_gpu_temperature_celsius", gpu0)] == 61
    assert values[("gpufleet_gpu_power_watts", gpu0)] == pytest.approx(68.42)


def test_ecc_counters_by_type(tmp_path):
    values = parsed(metrics.collect(fake_nvidia_smi(tmp_path, "a10g_g5_12xlarge.csv"), None))
    key = ("gpufleet_gpu_ecc_errors_total", frozenset({("gpu", "2"), ("type", "corrected")}))
    assert values[key] == 3


def test_not_available_fields_are_left_out_not_faked(tmp_path):
    l4 = parsed(metrics.collect(fake_nvidia_smi(tmp_path, "l4_g6_xlarge.csv"), None))
    assert not [k for k in l4 if k[0] == "gpufleet_gpu_ecc_errors_total"]
    h100 = parsed(metrics.collect(fake_nvidia_smi(tmp_path, "h100_p5.csv"), None))
    assert ("gpufleet_gpu_power_watts", frozenset({("gpu", "0")})) in h100
    assert ("gpufleet_gpu_power_watts", frozenset({("gpu", "1")})) not in h100


@pytest.mark.parametrize("nvidia_smi", ["/nonexistent/nvidia-smi", "failing"])
def test_no_gpu_or_no_driver_is_gpu_up_0_not_a_failure(tmp_path, nvidia_smi):
    binary = fake_nvidia_smi(tmp_path, status=9) if nvidia_smi == "failing" else nvidia_smi
    values = parsed(metrics.collect(binary, None))
    assert values[("gpufleet_gpu_up", frozenset())] == 0
    assert not [k for k in values if k[0].startswith("gpufleet_gpu_") and k[0] != "gpufleet_gpu_up"]


def test_ollama_models_loaded_and_on_disk(tmp_path, standin):
    import ollama

    api = ollama.Client(host=standin.url)
    api.pull("llama3.1:8b")
    api.pull("qwen2.5:7b")
    api.generate(model="llama3.1:8b", prompt="")
    values = parsed(metrics.collect("/nonexistent/nvidia-smi", standin.url))
    assert values[("gpufleet_ollama_up", frozenset())] == 1
    loaded = [k for k in values if k[0] == "gpufleet_ollama_model_loaded_bytes"]
    assert loaded == [("gpufleet_ollama_model_loaded_bytes", frozenset({("model", "llama3.1:8b")}))]
    on_disk = {dict(k[1])["model"] for k in values if k[0] == "gpufleet_ollama_model_disk_bytes"}
    assert on_disk == {"llama3.1:8b", "qwen2.5:7b"}


def test_ollama_down_is_reported_as_down():
    values = parsed(metrics.collect("/nonexistent/nvidia-smi", "http://127.0.0.1:9"))
    assert values[("gpufleet_ollama_up", frozenset())] == 0


def test_the_file_is_replaced_whole(tmp_path):
    import subprocess

    out = tmp_path / "textfile" / "gpufleet.prom"
    out.parent.mkdir()
    (out.parent / "other.prom").write_text("x 1\n")
    for _ in range(2):
        subprocess.run(
            [
                sys.executable,
                str(SCRIPT),
                "--output",
                str(out),
                "--nvidia-smi",
                fake_nvidia_smi(tmp_path, "h100_p5.csv"),
            ],
            check=True,
        )
    assert sorted(p.name for p in out.parent.iterdir()) == ["gpufleet.prom", "other.prom"]
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert parsed(out.read_text())[("gpufleet_gpu_up", frozenset())] == 1
