"""gpufleet's mtail programs compile, and count HAProxy's log lines as the LB writes them.

tests/unit/haproxy_log/requests.log holds lines a real HAProxy sent over UDP syslog with the
haproxy role's configuration (benchmarks/lb.py's set-up with the log target on): a request
without a key (401) at start-up, a native and an OpenAI stream served with the key
`benchmark`, another request without a key, and a DELETE the allowlist refused (403).
"""

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROGRAMS = REPO / "roles" / "mtail" / "files"
LOG = Path(__file__).parent / "haproxy_log" / "requests.log"


def mtail(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["mtail", "--logtostderr", "--progs", str(PROGRAMS), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_every_program_compiles():
    result = mtail("--compile_only")
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def counted() -> dict[str, float]:
    result = mtail("--one_shot", "--one_shot_format", "prometheus", "--logs", str(LOG))
    assert result.returncode == 0, result.stderr
    samples = re.findall(r"^(gpufleet_\w+\{[^}]*\}) (\S+)$", result.stdout, re.MULTILINE)
    return {re.sub(r',?prog="[^"]*"', "", name): float(value) for name, value in samples}


MODEL_BACKEND = "be_model_llama3_1_8b"


def test_requests_are_counted_by_key_backend_and_status(counted):
    requests, sent = "gpufleet_lb_requests_total", "gpufleet_lb_response_bytes_total"
    assert counted == {
        f'{requests}{{api_key="-",backend="ollama",code="401"}}': 2,
        f'{requests}{{api_key="benchmark",backend="{MODEL_BACKEND}",code="200"}}': 2,
        f'{requests}{{api_key="benchmark",backend="ollama",code="403"}}': 1,
        f'{sent}{{api_key="-",backend="ollama"}}': 380,
        f'{sent}{{api_key="benchmark",backend="{MODEL_BACKEND}"}}': 1911,
        f'{sent}{{api_key="benchmark",backend="ollama"}}': 199,
    }
