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
    counters = {name: value for name, value in counted.items() if name.startswith((requests, sent))}
    assert counters == {
        f'{requests}{{api_key="-",backend="ollama",code="401"}}': 2,
        f'{requests}{{api_key="benchmark",backend="{MODEL_BACKEND}",code="200"}}': 2,
        f'{requests}{{api_key="benchmark",backend="ollama",code="403"}}': 1,
        f'{sent}{{api_key="-",backend="ollama"}}': 380,
        f'{sent}{{api_key="benchmark",backend="{MODEL_BACKEND}"}}': 1911,
        f'{sent}{{api_key="benchmark",backend="ollama"}}': 199,
    }


def test_only_requests_a_host_answered_are_timed_in_seconds(counted):
    """The two streams: queue + connect + answer 0+0+3 and 0+1+4 ms to the first byte, 4 and
    5 ms in all; the 401s and the 403, which no host answered (Tr -1), are not timed."""
    labels = f'api_key="benchmark",backend="{MODEL_BACKEND}"'
    first, whole = "gpufleet_lb_time_to_first_byte_seconds", "gpufleet_lb_request_seconds"
    assert counted[f"{first}_count{{{labels}}}"] == 2
    assert counted[f"{first}_sum{{{labels}}}"] == pytest.approx(0.008)
    assert counted[f"{whole}_count{{{labels}}}"] == 2
    assert counted[f"{whole}_sum{{{labels}}}"] == pytest.approx(0.009)
    assert not [name for name in counted if name.startswith((first, whole)) and "-" in name]


def test_a_queued_slow_stream_lands_in_the_buckets_of_its_wait_and_its_length(tmp_path):
    """A recorded line with its timers changed: 1.5 s in the LB's queue, 0.7 s to the host's
    first byte (2.2 s felt), 9 s in all; and a host that never answered (504, Tr -1)."""
    stream = LOG.read_text().splitlines()[1]
    slow = stream.replace(" 0/0/0/3/4 200 ", " 0/1500/0/700/9000 200 ")
    unanswered = stream.replace(" 0/0/0/3/4 200 ", " 0/0/0/-1/30000 504 ")
    log = tmp_path / "haproxy.log"
    log.write_text(f"{slow}\n{unanswered}\n")
    result = mtail("--one_shot", "--one_shot_format", "prometheus", "--logs", str(log))
    assert result.returncode == 0, result.stderr
    found = re.findall(
        r'^(gpufleet_lb_\w+)_bucket\{[^}]*le="([^"]+)"\} (\d+)$', result.stdout, re.MULTILINE
    )
    # Each histogram's smallest bucket holding the one timed request.
    first_in = {
        name: min(float(le) for n, le, count in found if n == name and count == "1")
        for name in {n for n, _le, _count in found}
    }
    assert first_in == {
        "gpufleet_lb_time_to_first_byte_seconds": 3.0,
        "gpufleet_lb_request_seconds": 10.0,
    }
    code_504 = (
        'gpufleet_lb_requests_total{api_key="benchmark",backend="be_model_llama3_1_8b",code="504"'
    )
    assert code_504 in result.stdout
