#!/usr/bin/python3
"""Write GPU and Ollama metrics for node exporter's textfile collector.

Run every 15 s by a systemd timer. Reads per-GPU utilisation, memory, temperature,
power and ECC errors from `nvidia-smi --query-gpu ... --format=csv`, the loaded
models and their memory from Ollama's /api/ps, the models on disk from /api/tags, and
from the fleet agent's /state whether it drains the host, the spot interruption notice
and rebalance recommendation it read from IMDS, and the models the host should serve.
No GPU or no driver gives `gpufleet_gpu_up 0`, and an Ollama or an agent that does not
answer, or answers something other than its JSON, `gpufleet_ollama_up 0` or
`gpufleet_agent_up 0`: none is a failure. The file is written to a temporary name and
renamed, so node exporter never reads half of it; a failed write leaves no temporary file
behind and exits 1 with one line.

    gpufleet_gpu_metrics.py --output /var/lib/node_exporter/textfile/gpufleet.prom \
        --ollama http://10.0.1.5:11434 --agent http://10.0.1.5:11441
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "power.draw",
    "ecc.errors.corrected.volatile.total",
    "ecc.errors.uncorrected.volatile.total",
)
MIB = 1024 * 1024
HELP = {
    "gpufleet_gpu_up": ("gauge", "1 when nvidia-smi answered, 0 with no GPU or no driver."),
    "gpufleet_gpu_info": ("gauge", "One series per GPU with its name and UUID."),
    "gpufleet_gpu_utilization_ratio": ("gauge", "GPU utilisation, 0 to 1."),
    "gpufleet_gpu_memory_used_bytes": ("gauge", "GPU memory in use."),
    "gpufleet_gpu_memory_total_bytes": ("gauge", "GPU memory in all."),
    "gpufleet_gpu_temperature_celsius": ("gauge", "GPU temperature."),
    "gpufleet_gpu_power_watts": ("gauge", "GPU power draw."),
    "gpufleet_gpu_ecc_errors_total": ("counter", "ECC errors since the driver loaded."),
    "gpufleet_ollama_up": ("gauge", "1 when Ollama's API answered."),
    "gpufleet_ollama_model_loaded_bytes": ("gauge", "Memory of each loaded model."),
    "gpufleet_ollama_model_vram_bytes": ("gauge", "GPU memory of each loaded model."),
    "gpufleet_ollama_model_disk_bytes": ("gauge", "Size on disk of each model."),
    "gpufleet_agent_up": ("gauge", "1 when the fleet agent's /state answered."),
    "gpufleet_agent_draining": (
        "gauge",
        "1 while the fleet agent tells HAProxy to drain the host.",
    ),
    "gpufleet_spot_interruption_notice": (
        "gauge",
        "1 once IMDS has given the instance a spot interruption notice.",
    ),
    "gpufleet_rebalance_recommendation": (
        "gauge",
        "1 once IMDS has given the instance a rebalance recommendation.",
    ),
    "gpufleet_model_expected": ("gauge", "One series per model the host should serve."),
    "gpufleet_metrics_timestamp_seconds": ("gauge", "When these metrics were written."),
}


def number(text: str) -> float | None:
    """A CSV field as a number; None for [N/A], [Not Supported] and the like."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return None


def parse_nvidia_smi(output: str) -> list[dict[str, object]]:
    """One dict per GPU from `--format=csv,noheader,nounits` output."""
    gpus = []
    for row in csv.reader(io.StringIO(output), skipinitialspace=True):
        if len(row) != len(QUERY_FIELDS):
            continue
        fields = dict(zip(QUERY_FIELDS, (cell.strip() for cell in row), strict=True))
        gpus.append(fields)
    return gpus


def label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def gpu_samples(gpus: list[dict[str, object]]) -> list[tuple[str, dict[str, object], float]]:
    samples: list[tuple[str, dict[str, object], float]] = []
    for gpu in gpus:
        index = {"gpu": gpu["index"]}
        samples.append(
            ("gpufleet_gpu_info", {**index, "name": gpu["name"], "uuid": gpu["uuid"]}, 1.0)
        )
        scaled = (
            ("gpufleet_gpu_utilization_ratio", "utilization.gpu", 0.01, {}),
            ("gpufleet_gpu_memory_used_bytes", "memory.used", MIB, {}),
            ("gpufleet_gpu_memory_total_bytes", "memory.total", MIB, {}),
            ("gpufleet_gpu_temperature_celsius", "temperature.gpu", 1.0, {}),
            ("gpufleet_gpu_power_watts", "power.draw", 1.0, {}),
            (
                "gpufleet_gpu_ecc_errors_total",
                "ecc.errors.corrected.volatile.total",
                1.0,
                {"type": "corrected"},
            ),
            (
                "gpufleet_gpu_ecc_errors_total",
                "ecc.errors.uncorrected.volatile.total",
                1.0,
                {"type": "uncorrected"},
            ),
        )
        for metric, field, factor, extra in scaled:
            value = number(str(gpu[field]))
            if value is not None:
                samples.append((metric, {**index, **extra}, value * factor))
    return samples


def read_gpus(nvidia_smi: str) -> list[dict[str, object]] | None:
    """The GPUs, or None when there is no GPU or no driver."""
    try:
        result = subprocess.run(
            [nvidia_smi, f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            # A GPU name in another encoding must not stop the metrics.
            errors="replace",
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    gpus = parse_nvidia_smi(result.stdout)
    return gpus or None


def ollama_models(base_url: str, path: str) -> list[dict] | None:
    """The named models of /api/ps or /api/tags; None when Ollama does not answer with the
    documented shape, {"models": [{"name": ...}, ...]}."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + path, timeout=5) as response:  # noqa: S310
            answer = json.load(response)
    except (OSError, ValueError):
        return None
    if not isinstance(answer, dict):
        return None
    # Go writes an empty list as null.
    models = answer.get("models") or []
    if not isinstance(models, list):
        return None
    return [m for m in models if isinstance(m, dict) and isinstance(m.get("name"), str)]


def _bytes(model: dict, field: str) -> float:
    value = model.get(field, 0)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def ollama_samples(base_url: str) -> list[tuple[str, dict[str, object], float]]:
    running, local = ollama_models(base_url, "/api/ps"), ollama_models(base_url, "/api/tags")
    up = running is not None and local is not None
    samples: list[tuple[str, dict[str, object], float]] = [("gpufleet_ollama_up", {}, float(up))]
    if not up:
        return samples
    for model in running:
        labels = {"model": model["name"]}
        samples.append(("gpufleet_ollama_model_loaded_bytes", labels, _bytes(model, "size")))
        samples.append(("gpufleet_ollama_model_vram_bytes", labels, _bytes(model, "size_vram")))
    for model in local:
        samples.append(
            ("gpufleet_ollama_model_disk_bytes", {"model": model["name"]}, _bytes(model, "size"))
        )
    return samples


def agent_samples(base_url: str) -> list[tuple[str, dict[str, object], float]]:
    """The fleet agent's verdict, the IMDS notices it holds and the models it expects, from
    its /state; only gpufleet_agent_up 0 when it does not answer with a JSON object."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/state", timeout=5) as response:  # noqa: S310
            state = json.load(response)
    except (OSError, ValueError):
        state = None
    if not isinstance(state, dict):
        return [("gpufleet_agent_up", {}, 0.0)]
    expected = state.get("expected_models") or []
    return [
        ("gpufleet_agent_up", {}, 1.0),
        ("gpufleet_agent_draining", {}, float(state.get("state") == "drain")),
        ("gpufleet_spot_interruption_notice", {}, float(bool(state.get("spot_action")))),
        ("gpufleet_rebalance_recommendation", {}, float(bool(state.get("rebalance")))),
        *(
            ("gpufleet_model_expected", {"model": model}, 1.0)
            for model in expected
            if isinstance(model, str)
        ),
    ]


def render(samples: list[tuple[str, dict[str, object], float]]) -> str:
    """Prometheus text exposition, each metric's HELP and TYPE once, before its samples."""
    lines: list[str] = []
    for metric in HELP:
        rows = [(labels, value) for name, labels, value in samples if name == metric]
        if not rows:
            continue
        kind, text = HELP[metric]
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        for labels, value in rows:
            rendered = ",".join(f'{k}="{label(v)}"' for k, v in labels.items())
            text_value = str(int(value)) if value.is_integer() else repr(value)
            lines.append(
                f"{metric}{{{rendered}}} {text_value}" if rendered else f"{metric} {text_value}"
            )
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside path and rename it; on failure remove it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        Path(temporary).chmod(0o644)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def collect(nvidia_smi: str, ollama_url: str | None, agent_url: str | None = None) -> str:
    gpus = read_gpus(nvidia_smi)
    samples = [("gpufleet_gpu_up", {}, float(gpus is not None))]
    samples += gpu_samples(gpus or [])
    if ollama_url:
        samples += ollama_samples(ollama_url)
    if agent_url:
        samples += agent_samples(agent_url)
    samples.append(("gpufleet_metrics_timestamp_seconds", {}, round(time.time(), 3)))
    return render(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="the .prom file to write")
    parser.add_argument("--ollama", help="Ollama's base URL, such as http://10.0.1.5:11434")
    parser.add_argument(
        "--agent", help="the fleet agent's state URL, such as http://10.0.1.5:11441"
    )
    parser.add_argument("--nvidia-smi", default="nvidia-smi", help="nvidia-smi to run")
    args = parser.parse_args()
    try:
        write_atomically(args.output, collect(args.nvidia_smi, args.ollama, args.agent))
    except OSError as exc:
        sys.exit(f"gpufleet_gpu_metrics: cannot write {args.output}: {exc}")


if __name__ == "__main__":
    main()
