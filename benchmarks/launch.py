"""Benchmark: how long a host launched from the baked image takes to serve, against the model
store's copy of the image's models onto its NVMe alone.

On the fleet lab: a clean image is taken from `gpufleet lab images`, or baked first on a
bake host (the lab is brought up with one if it is absent). Each round launches one host from
it with one instance-store disk (a lab it brings up itself serves models of 400 MB, as `make
demo` does) (`gpufleet lab launch`) and times, from the launch command's
start, the first generate asked of the host's Ollama that ends with "done": true, asked from
the LB host (the only hosts its firewall lets in) every 0.2 s, with a probe in Python's
standard library (the LB host has no Ollama client). The baseline is the same
host's copy of the seed onto NVMe as its model store's journal line times it. Everything
between the two is the boot: the disk, the namespace, systemd, the address found at boot, the
agent. Prints one JSON line of figures last.

    .venv/bin/python benchmarks/launch.py [--rounds 3] [--keep-lab]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LB = "lb-1"
MODELS = "llama3.1:8b=400MB,qwen2.5:7b=400MB"
HYDRATED = re.compile(r"hydrated \S+ \(.*\): (\d+) files, (.+?) in ([\d.]+) s")
LAUNCHED = re.compile(r"^lab launch: (\S+) at (\S+) from ")


def gpufleet(*argv: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(BIN / "gpufleet"), *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        sys.exit(
            f"gpufleet {' '.join(argv[:3])} exited {result.returncode}:\n{result.stderr[-3000:]}"
        )
    return result.stdout


def clean_image() -> tuple[str, str]:
    """The newest clean image and its first model, baking one on bake-1 if there is none."""
    for _round in range(2):
        rows = [
            line.split() for line in gpufleet("lab", "images").splitlines() if "audit clean" in line
        ]
        if rows:
            image, models = rows[-1][0], rows[-1][rows[-1].index("models") + 1]
            return image, models.split(",")[0]
        print("benchmark: no clean image in the lab, baking bake-1 (several minutes)", flush=True)
        gpufleet("lab", "bake", "bake-1")
    sys.exit("benchmark: the bake kept no clean image")


# Run on the LB host: ask Ollama for a generate every 0.2 s until its stream ends with done.
PROBE = """
import json, sys, time, urllib.request
url, model, deadline = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
body = json.dumps({"model": model, "prompt": "hello", "options": {"num_predict": 4}}).encode()
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body), timeout=10) as answer:
            lines = [json.loads(line) for line in answer if line.strip()]
        if lines and lines[-1].get("done"):
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
"""


def serving_after(address: str, model: str, started: float, timeout: float = 300) -> float:
    """Seconds from started until a generate at address ends with done, asked from the LB."""
    url = f"http://{address}:11434/api/generate"
    gpufleet("lab", "ssh", LB, f"python3 -c '{PROBE}' {url} {model} {timeout}")
    return time.monotonic() - started


def one_round(image: str, model: str) -> dict[str, float | str]:
    started = time.monotonic()
    launched = gpufleet("lab", "launch", "--image", image, "--model", model, "--nvme-disks", "1")
    name, address = next(
        m.groups() for line in launched.splitlines() if (m := LAUNCHED.match(line))
    )
    ssh_ready = time.monotonic() - started
    serving = serving_after(address, model, started)
    journal = gpufleet("lab", "ssh", name, "sudo journalctl -b -u gpufleet-model-store -o cat")
    hydrated = HYDRATED.search(journal)
    if hydrated is None:
        sys.exit(f"benchmark: {name} did not copy its models onto NVMe:\n{journal}")
    return {
        "host": name,
        "launch_to_ssh_s": round(ssh_ready, 2),
        "launch_to_serving_s": round(serving, 2),
        "copy_s": float(hydrated.group(3)),
        "copied": hydrated.group(2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args()
    status = json.loads(
        subprocess.run(
            [str(BIN / "gpufleet"), "lab", "status", "--json"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    )
    brought_up = status["state"] == "absent"
    if brought_up:
        # Models of make demo's size, so the copy onto NVMe takes measurable time.
        gpufleet("lab", "up", "--bake-hosts", "1", env={"GPUFLEET_LAB_MODELS": MODELS})
    try:
        image, model = clean_image()
        rounds = [one_round(image, model) for _round in range(args.rounds)]
    finally:
        if brought_up and not args.keep_lab:
            gpufleet("lab", "down", check=False)
    serving = statistics.median(r["launch_to_serving_s"] for r in rounds)
    copy = statistics.median(r["copy_s"] for r in rounds)
    print(
        json.dumps(
            {
                "benchmark": "launch",
                "image": image,
                "model": model,
                "launch_to_serving_s": serving,
                "copy_s": copy,
                "boot_beyond_copy_s": round(serving - copy, 2),
                "serving_to_copy_ratio": round(serving / copy, 2) if copy else None,
                "rounds": rounds,
            }
        )
    )


if __name__ == "__main__":
    main()
