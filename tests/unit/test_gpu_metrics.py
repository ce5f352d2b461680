"""The GPU metrics collector: nvidia-smi parsing, Ollama's API, real Prometheus text."""

import sys
from pathlib import Path

import pytest
import repo_scripts
from canned_http import Reply, canned_http
from fake_nvidia_smi import fake_nvidia_smi
from prometheus_client.parser import text_string_to_metric_families

metrics = repo_scripts.load("roles/gpu_metrics/files/gpufleet_gpu_metrics.py")
SCRIPT = Path(metrics.__file__)


def parsed(text):
    """{(metric, frozenset(labels)): value} through Prometheus's own parser."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


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
    assert all(("name", name) in labels for _metric, labels in infos)


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
    for _scrape in range(2):
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


def test_output_that_is_not_utf8_is_read_not_fatal(tmp_path):
    script = tmp_path / "nvidia-smi"
    row = b"0, Tesla T4 \xff\xfe, GPU-1, 5, 100, 15360, 40, 30.5, 0, 0\n"
    script.write_bytes(b"#!/bin/sh\nprintf '" + row.replace(b"\n", b"\\n") + b"'\n")
    script.chmod(0o755)
    values = parsed(metrics.collect(str(script), None))
    assert values[("gpufleet_gpu_up", frozenset())] == 1
    (info,) = [labels for name, labels in values if name == "gpufleet_gpu_info"]
    assert dict(info)["name"].startswith("Tesla T4 ")


@pytest.mark.parametrize(
    ("tags", "ps", "up"),
    [
        (b'{"models": "none"}', b'{"models": []}', 0),
        (b"[]", b'{"models": []}', 0),
        (b"<html>proxy error</html>", b'{"models": []}', 0),
        (b'{"models": [{"name": 5}, {"size": 1}]}', b'{"models": null}', 1),
        (b'{"models": [{"name": "a:1", "size": "big"}]}', b'{"models": [{"name": "a:1"}]}', 1),
    ],
)
def test_unexpected_ollama_answers_are_not_fatal(tags, ps, up):
    replies = {"/api/tags": Reply(tags), "/api/ps": Reply(ps)}
    with canned_http(replies) as url:
        values = parsed(metrics.collect("/nonexistent/nvidia-smi", url))
    assert values[("gpufleet_ollama_up", frozenset())] == up
    named = {dict(labels).get("model") for name, labels in values if "model" in dict(labels)}
    assert named <= {"a:1"}


def test_a_failed_write_leaves_no_temporary_file_and_says_why(tmp_path):
    import subprocess

    textfile = tmp_path / "textfile"
    (textfile / "gpufleet.prom").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(textfile / "gpufleet.prom")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("gpufleet_gpu_metrics: cannot write ")
    assert "Traceback" not in result.stderr
    assert [p.name for p in textfile.iterdir()] == ["gpufleet.prom"]
