"""Benchmark: one Ollama stand-in on a lab host serves 200 concurrent streams.

The stand-in must never be the bottleneck of a fleet benchmark. This starts it on
gpu-1 from the lab's release archive, measures one stream alone (the baseline),
then 200 concurrent streams of the same length from the controller, while
sampling the server's resident memory on the host.

Goal: all 200 streams complete, wall time close to one stream's (ratio near 1),
peak RSS under 150 MB. Prints one JSON line of figures and ratios last.

    .venv/bin/python benchmarks/ollama_standin.py [--streams 200] [--tokens 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

PORT = 11434
RATE = 20
RSS_BUDGET_MB = 150
INSTALL_DIR = "/opt/gpufleet-standin-bench"


def gpufleet(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", *args], check=True, capture_output=True, text=True
    ).stdout


def on_host(host: str, command: str) -> str:
    return gpufleet("lab", "ssh", host, command)


def start_standin(host: str, address: str, registry: str, release_url: str) -> None:
    script = f"""set -e
sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd curl
sudo rm -rf {INSTALL_DIR} && sudo install -d -o "$(id -un)" {INSTALL_DIR}
mkdir {INSTALL_DIR}/models
curl -fsS {release_url} | tar --zstd -x -C {INSTALL_DIR}
export OLLAMA_HOST={address}:{PORT} OLLAMA_MODELS={INSTALL_DIR}/models OLLAMA_KEEP_ALIVE=-1
export OLLAMA_NUM_PARALLEL=512 OLLAMA_STANDIN_REGISTRY={registry}
export OLLAMA_STANDIN_TOKENS_PER_SECOND={RATE}
setsid {INSTALL_DIR}/bin/ollama serve >/dev/null 2>{INSTALL_DIR}/serve.log </dev/null &
for i in $(seq 50); do curl -fs http://{address}:{PORT}/ >/dev/null && break; sleep 0.2; done
{INSTALL_DIR}/bin/ollama pull llama3.1:8b >/dev/null
"""
    on_host(host, script)


def stop_standin(host: str) -> None:
    # The bracket keeps pkill from matching this very command line.
    on_host(
        host,
        f"pkill -f '[{INSTALL_DIR[0]}]{INSTALL_DIR[1:]}/bin/ollama serve'; "
        f"sudo rm -rf {INSTALL_DIR}",
    )


async def one_stream(address: str, tokens: int) -> int:
    """Stream one generation; return the tokens received."""
    reader, writer = await asyncio.open_connection(address, PORT)
    body = json.dumps(
        {"model": "llama3.1:8b", "prompt": "hi", "options": {"num_predict": tokens}}
    ).encode()
    writer.write(
        b"POST /api/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    await writer.drain()
    received = 0
    async for line in reader:
        received += line.count(b'"done": false')
    writer.close()
    return received


async def many_streams(address: str, streams: int, tokens: int) -> tuple[float, list[int]]:
    started = time.monotonic()
    results = await asyncio.wait_for(
        asyncio.gather(
            *(one_stream(address, tokens) for _stream in range(streams)), return_exceptions=True
        ),
        timeout=tokens / RATE * 10 + 30,
    )
    return time.monotonic() - started, [r if isinstance(r, int) else -1 for r in results]


def sample_rss(host: str, seconds: float, samples: list[int]) -> None:
    script = (
        f"pid=$(pgrep -f '[{INSTALL_DIR[0]}]{INSTALL_DIR[1:]}/bin/ollama serve'); "
        f"for i in $(seq {int(seconds / 0.2)}); do ps -o rss= -p $pid; sleep 0.2; done"
    )
    out = on_host(host, script)
    samples.extend(int(v) for v in out.split() if v.isdigit())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=100)
    args = parser.parse_args()
    gpufleet("lab", "up")
    status = json.loads(gpufleet("lab", "status", "--json"))
    host = next(h for h in status["hosts"] if h["role"] == "gpu")
    lab_vars = json.loads(Path(status["lab_vars"]).read_text())
    start_standin(host["name"], host["address"], status["registry"], lab_vars["ollama_release_url"])
    try:
        single_started = time.monotonic()
        assert asyncio.run(one_stream(host["address"], args.tokens)) == args.tokens
        single = time.monotonic() - single_started
        samples: list[int] = []
        sampler = threading.Thread(target=sample_rss, args=(host["name"], single * 2 + 5, samples))
        sampler.start()
        wall, received = asyncio.run(many_streams(host["address"], args.streams, args.tokens))
        sampler.join()
    finally:
        stop_standin(host["name"])
    complete = sum(1 for r in received if r == args.tokens)
    peak_mb = max(samples) / 1024 if samples else -1.0
    print(
        json.dumps(
            {
                "streams": args.streams,
                "tokens_per_stream": args.tokens,
                "tokens_per_second": RATE,
                "completed_streams": complete,
                "single_stream_s": round(single, 2),
                "concurrent_wall_s": round(wall, 2),
                "wall_to_single_ratio": round(wall / single, 3),
                "peak_rss_mb": round(peak_mb, 1),
                "rss_to_budget_ratio": round(peak_mb / RSS_BUDGET_MB, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
