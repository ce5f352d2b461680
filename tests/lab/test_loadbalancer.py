"""The load balancer in front of the lab's GPU fleet: routing by model, drains through the
fleet agent, spot notices, reloads, a killed Ollama, and what other hosts cannot reach.

The lab tests' one converged fleet (tests/lab/fleet.py) serves every test here; each test
leaves it as it found it.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
import urllib.request

import pytest
from fleet import (
    FLAG,
    INTERVAL,
    LB,
    LLAMA,
    LLAMA_BACKEND,
    QWEN,
    QWEN_BACKEND,
    SOCKET,
    STATS_PASSWORD,
    lb_vars,
    playbook,
    reach_from,
    reach_from_controller,
    servers,
    statuses,
    totals,
    wait_for,
)
from labctl import REPO, gpufleet, on_host

from gpufleet.lab.load import Load, stream_once


def load(fleet: dict, models: list[str], concurrency: int = 20, tokens: int = 40) -> Load:
    return Load(fleet["lb"], 11434, models, concurrency, tokens)


def test_a_second_run_of_both_playbooks_changes_nothing(fleet):
    for name, extra in (("gpu_hosts.yml", []), ("loadbalancer.yml", lb_vars())):
        output = playbook(fleet["lab"], name, *extra)
        recap = output[output.index("PLAY RECAP") :].splitlines()[1:5]
        changed = [line for line in recap if "changed=" in line and "changed=0" not in line]
        assert not changed, f"{name}: {changed}"


def test_requests_land_on_the_hosts_of_their_model_and_unknown_models_on_the_default(fleet):
    before = servers()
    for model in (LLAMA,) * 6 + (QWEN,) * 3 + ("mistral:7b",) * 2:
        stream_once(fleet["lb"], 11434, "generate", model, 1, 0)
    # The OpenAI-compatible path is routed by the same field.
    stream_once_openai(fleet["lb"], QWEN)
    after = servers()
    gained = {key: int(after[key]["stot"]) - int(before[key]["stot"]) for key in after}
    assert sum(v for (b, _), v in gained.items() if b == LLAMA_BACKEND) == 6, gained
    assert gained[(QWEN_BACKEND, "gpu-3")] == 4, gained
    assert sum(v for (b, _), v in gained.items() if b == "be_default") == 2, gained
    assert all(
        v == 0
        for (b, _), v in gained.items()
        if b not in (LLAMA_BACKEND, QWEN_BACKEND, "be_default")
    )


def stream_once_openai(address: str, model: str) -> None:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    with socket.create_connection((address, 11434), timeout=10) as connection:
        connection.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode()
        )
        while connection.recv(65536):
            pass


def test_a_model_named_beyond_the_buffer_goes_to_the_default_backend(fleet):
    """The documented limit: the model is read from the first tune.bufsize bytes only."""
    before = servers()
    padding = "x" * 70000
    body = json.dumps({"prompt": padding, "model": QWEN, "stream": False})
    with socket.create_connection((fleet["lb"], 11434), timeout=30) as connection:
        connection.sendall(
            f"POST /api/generate HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode()
        )
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    # Ollama answers (the default backend's host may lack the model: 404), not HAProxy.
    assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.1 404")), answer[:200]
    assert b"<html>" not in answer
    after = servers()
    assert int(after[(QWEN_BACKEND, "gpu-3")]["stot"]) == int(
        before[(QWEN_BACKEND, "gpu-3")]["stot"]
    )
    assert (
        sum(int(after[k]["stot"]) - int(before[k]["stot"]) for k in after if k[0] == "be_default")
        == 1
    )


def test_a_maintenance_flag_drains_the_host_and_its_streams_finish(fleet):
    with load(fleet, [LLAMA], concurrency=6, tokens=100) as running:
        time.sleep(1.5)
        in_flight = int(servers()[(LLAMA_BACKEND, "gpu-1")]["scur"])
        on_host("gpu-1", f"sudo touch {FLAG}")
        took = wait_for(lambda: statuses("gpu-1") == {"DRAIN"}, 3 * INTERVAL)
        served_before = totals("gpu-1")
        time.sleep(2 * INTERVAL)
        assert totals("gpu-1") == served_before, "a drained host took new requests"
    report = running.report
    on_host("gpu-1", f"sudo rm -f {FLAG}")
    wait_for(lambda: statuses("gpu-1") == {"UP"}, 4 * INTERVAL)
    print(f"maintenance flag to DRAIN in {took:.1f} s, {in_flight} streams in flight on it")
    assert in_flight > 0, "no stream was in flight on the host when it was drained"
    assert report.summary()["served"] > 6 and not report.problems(), report.problems()[:3]


def test_a_spot_notice_drains_the_host_within_10_s_with_no_failed_request(fleet):
    with load(fleet, [LLAMA], concurrency=20) as running:
        time.sleep(2)
        gpufleet("lab", "spot-notice", "gpu-2")
        took = wait_for(lambda: statuses("gpu-2") == {"DRAIN"}, 10)
        time.sleep(3)
    report = running.report
    print(f"spot notice to DRAIN in {took:.1f} s; {report.summary()}")
    gpufleet("lab", "spot-notice", "gpu-2", "--clear")
    # A notice stands until the instance goes; in the lab, a restarted agent forgets it.
    on_host("gpu-2", "sudo systemctl restart gpufleet-fleet-agent")
    wait_for(lambda: statuses("gpu-2") == {"UP"}, 6 * INTERVAL)
    assert report.summary()["served"] > 20 and not report.problems(), report.problems()[:3]


def test_a_reload_keeps_a_runtime_drain_and_a_bad_config_changes_nothing(fleet):
    drain = f"state=drain host=gpu-3 socket={SOCKET} wait=true wait_interval=1"
    haproxy_module(fleet, drain)
    assert statuses("gpu-3") == {"DRAIN"}
    playbook(fleet["lab"], "loadbalancer.yml", *lb_vars("-e", "haproxy_timeout_queue=3m"))
    assert "timeout queue 3m" in on_host(LB, "sudo cat /etc/haproxy/haproxy.cfg")
    assert statuses("gpu-3") == {"DRAIN"}, "the reload forgot the runtime drain"

    config_before = on_host(LB, "sudo sha256sum /etc/haproxy/haproxy.cfg")
    bad = json.dumps({"haproxy_frontend_extra": ["no-such-directive on"]})
    output = playbook(fleet["lab"], "loadbalancer.yml", *lb_vars("-e", bad), check=False)
    assert output.startswith("rc=2") or not output.startswith("rc=0"), output[-2000:]
    assert "no-such-directive" in output
    assert on_host(LB, "sudo sha256sum /etc/haproxy/haproxy.cfg") == config_before
    assert stream_once(fleet["lb"], 11434, "generate", LLAMA, 1, 0).verdict == "served"

    haproxy_module(fleet, f"state=enabled host=gpu-3 socket={SOCKET} wait=true wait_interval=1")
    playbook(fleet["lab"], "loadbalancer.yml", *lb_vars())
    assert statuses("gpu-3") == {"UP"}


def haproxy_module(fleet: dict, arguments: str) -> None:
    result = subprocess.run(
        [
            "ansible",
            "-i",
            fleet["lab"]["inventory"],
            LB,
            "--become",
            "-m",
            "community.general.haproxy",
            "-a",
            arguments,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_killing_ollama_fails_only_the_streams_it_was_serving(fleet):
    with load(fleet, [LLAMA], concurrency=12, tokens=60) as running:
        time.sleep(3)
        on_host("gpu-1", "sudo systemctl kill --signal=KILL ollama")
        killed_by = time.monotonic()
        time.sleep(2 * INTERVAL + 6)
    report = running.report
    failed = report.problems()
    print(f"Ollama killed on gpu-1: {report.summary()}")
    # Only streams gpu-1 had begun answering are lost (at most its maxconn, 4); requests it
    # had not answered yet are retried on gpu-2, and nothing after the kill fails.
    assert all(o.verdict == "truncated" and o.started < killed_by for o in failed), failed[:5]
    assert len(failed) <= 4, failed[:5]
    late = [o for o in report.outcomes if o.started > killed_by + 2 * INTERVAL]
    assert late and all(o.verdict == "served" for o in late)
    wait_for(lambda: statuses("gpu-1") == {"UP"}, 30)


def test_runtime_api_and_stats_are_not_reachable_from_other_hosts(fleet):
    lb = fleet["lb"]
    # From a GPU host the firewall drops the stats and exporter ports: no answer at all.
    for port in (8404, 8405):
        assert reach_from("gpu-1", lb, port) == "timeout", port
    # From the monitoring host the firewall lets 8404 through, and HAProxy listens for stats on
    # loopback only: refused.
    assert reach_from_controller(lb, 8404) == "refused"
    assert fetch_on(LB, "http://127.0.0.1:8404/", ("gpufleet", STATS_PASSWORD)).startswith("200")
    denied = on_host(
        LB, f"socat -t 2 stdio UNIX-CONNECT:{SOCKET} </dev/null 2>&1; echo rc=$?", check=False
    )
    assert "Permission denied" in denied
    assert on_host(LB, f"stat -c '%a %U' {SOCKET}").strip() == "600 root"
    with urllib.request.urlopen(f"http://{lb}:8405/metrics", timeout=10) as exporter:
        assert "haproxy_server_status" in exporter.read().decode()


FETCH = """
import base64, sys, urllib.request
url, user, password = sys.argv[1:4]
request = urllib.request.Request(url)
if user:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", "Basic " + token)
with urllib.request.urlopen(request, timeout=5) as response:
    print(response.status, response.read().decode())
"""


def fetch_on(host: str, url: str, auth: tuple[str, str] = ("", "")) -> str:
    """GET url from a lab host: its status, then its body."""
    return on_host(host, f"python3 -c '{FETCH}' {url} '{auth[0]}' '{auth[1]}'")


def test_tls_termination_with_a_self_signed_certificate(fleet, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=lb-1",
            "-addext",
            f"subjectAltName=IP:{fleet['lb']}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    tls = json.dumps(
        {"haproxy_tls_certificate": cert.read_text(), "haproxy_tls_private_key": key.read_text()}
    )
    output = playbook(fleet["lab"], "loadbalancer.yml", *lb_vars("-e", tls))
    assert "BEGIN PRIVATE KEY" not in output
    try:
        context = ssl.create_default_context(cafile=str(cert))
        with (
            socket.create_connection((fleet["lb"], 11434), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=fleet["lb"]) as tls_socket,
        ):
            assert tls_socket.version() == "TLSv1.3"
            tls_socket.sendall(
                b"GET /api/version HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"
            )
            assert tls_socket.recv(4096).startswith(b"HTTP/1.1 200")
        # A client that offers TLS 1.1 alone (allowed on its side) is refused by the LB.
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(str(cert))
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        with (
            pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL"),
            socket.create_connection((fleet["lb"], 11434), timeout=10) as raw,
        ):
            old.wrap_socket(raw, server_hostname=fleet["lb"])
    finally:
        playbook(fleet["lab"], "loadbalancer.yml", *lb_vars())
