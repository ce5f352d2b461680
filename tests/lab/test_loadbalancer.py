"""The load balancer in front of the lab's GPU fleet: routing by model, drains through the
fleet agent, spot notices, reloads, a killed Ollama, what other hosts cannot reach, and the
front door (TLS, API keys, per-key limits, the allowlist) as clients meet it.

The lab tests' one converged fleet (tests/lab/fleet.py) serves every test here; each test
leaves it as it found it.
"""

from __future__ import annotations

import collections
import http.client
import json
import re
import socket
import ssl
import subprocess
import threading
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
    playbooks_at_once,
    reach_from,
    reach_from_controller,
    runtime,
    servers,
    statuses,
    target,
    totals,
    wait_for,
)
from labctl import REPO, gpufleet, on_host
from test_model_swap import GPU_HOSTS, models_on

from gpufleet.lab.front_door import CLIENT_KEY, LOAD_KEY, TIGHT_KEY
from gpufleet.lab.load import Load, stream_once


def models_on_gpu_hosts(fleet: dict) -> dict[str, set[str]]:
    return {host: models_on(fleet, host) for host in GPU_HOSTS}


def load(fleet: dict, models: list[str], concurrency: int = 20, tokens: int = 40) -> Load:
    return Load(target(fleet), models, concurrency, tokens)


def test_a_second_run_of_both_playbooks_changes_nothing(fleet):
    """gpu_hosts.yml again on gpu-1 (two NVMe disks in RAID0, the model store's longest path),
    loadbalancer.yml on the LB. The three hosts' disk layouts each pass a second run in the
    model_store molecule scenario, and the other roles do not differ by host: a second run
    on all three costs the suite about a minute more for no new path."""
    runs = (("gpu_hosts.yml", "--limit", "gpu-1"), ("loadbalancer.yml", *lb_vars()))
    outputs = playbooks_at_once(fleet["lab"], *runs)
    for (name, *_extra), host, output in zip(runs, ("gpu-1", LB), outputs, strict=True):
        recap = output[output.index("PLAY RECAP") :].splitlines()[1:5]
        assert any(line.startswith(f"{host} ") for line in recap), recap
        changed = [line for line in recap if "changed=" in line and "changed=0" not in line]
        assert not changed, f"{name}: {changed}"
        assert "PRIVATE KEY" not in output and "API keys are off" not in output


def test_requests_land_only_on_hosts_that_serve_their_model_or_alias(fleet):
    """On the lab's mixed pool (gpu-1 and gpu-2 on llama, gpu-3 on qwen, alias chat on all):
    a model's requests reach only its hosts, the alias's any host of the pool, and a model no
    host serves is the LB's own 404 in the error shape of the API called; no GPU host sees it."""
    before = servers()
    outcomes = [
        stream_once(target(fleet), "generate", model, 1, number)
        for number, model in enumerate((LLAMA,) * 6 + (QWEN,) * 3 + ("chat",) * 6)
    ]
    # The OpenAI-compatible path is routed by the same field.
    outcomes.append(stream_once(target(fleet), "openai-chat", QWEN, 1, 0))
    assert all(o.verdict == "served" for o in outcomes), [o for o in outcomes if o.detail]
    unserved = [
        stream_once(target(fleet), kind, "mistral:7b", 1, 0) for kind in ("chat", "openai-chat")
    ]
    after = servers()
    gained = {key: int(after[key]["stot"]) - int(before[key]["stot"]) for key in after}
    assert sum(v for (b, _server), v in gained.items() if b == LLAMA_BACKEND) == 6, gained
    assert gained[(QWEN_BACKEND, "gpu-3")] == 4, gained
    assert {h: gained[("be_alias_chat", h)] for h in GPU_HOSTS} == dict.fromkeys(GPU_HOSTS, 2)
    assert all(
        v == 0
        for (b, _server), v in gained.items()
        if b not in (LLAMA_BACKEND, QWEN_BACKEND, "be_alias_chat")
    ), gained
    assert [(o.status, o.detail) for o in unserved] == [
        (404, "model 'mistral:7b' is not served by this fleet")
    ] * 2, unserved
    # Models listed in the path are routed like those in a body.
    status, answer, _headers = call(fleet, "GET", "/v1/models/mistral:7b")
    assert status == 404 and json.loads(answer)["error"]["code"] == "model_not_found", answer
    status, answer, _headers = call(fleet, "GET", "/v1/models/chat")
    assert status == 200 and json.loads(answer)["id"] == "chat", answer


def test_a_model_named_beyond_the_buffer_goes_to_the_default_backend(fleet):
    """The documented limit: the model is read from the first tune.bufsize bytes only."""
    before = servers()
    padding = "x" * 70000
    status, answer, _headers = call(
        fleet, "POST", "/api/generate", {"prompt": padding, "model": QWEN}
    )
    # Ollama answers (the default backend's host may lack the model: 404), not HAProxy.
    assert status in (200, 404), answer[:200]
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
    # The GPU metrics collector, on its 15 s timer, reads the notice from the host's agent.
    textfile = "cat /var/lib/node_exporter/textfile/gpufleet_gpu.prom"
    wait_for(lambda: "gpufleet_spot_interruption_notice 1" in on_host("gpu-2", textfile), 30, 1)
    metrics = on_host("gpu-2", textfile)
    assert "gpufleet_agent_draining 1" in metrics, metrics
    assert 'gpufleet_model_expected{model="llama3.1:8b"} 1' in metrics, metrics
    gpufleet("lab", "spot-notice", "gpu-2", "--clear")
    # A notice stands until the instance goes; in the lab, a restarted agent forgets it.
    on_host("gpu-2", "sudo systemctl restart gpufleet-fleet-agent")
    wait_for(lambda: statuses("gpu-2") == {"UP"}, 6 * INTERVAL)
    assert report.summary()["served"] > 20 and not report.problems(), report.problems()[:3]


def qwen_later(fleet: dict) -> tuple[threading.Thread, list]:
    """A chat for qwen, the model only gpu-3 serves, started now in a thread."""
    answers: list = []
    thread = threading.Thread(
        target=lambda: answers.append(stream_once(target(fleet), "chat", QWEN, 1, 0))
    )
    thread.start()
    return thread, answers


def test_a_model_whose_hosts_all_drain_waits_at_the_lb_then_503_and_a_reload_keeps_drains(fleet):
    """gpu-3 is qwen's only host. Drained, qwen's requests wait at the LB, never going to a
    host without qwen: served once gpu-3 is back, else a JSON 503 at timeout queue."""
    drain = f"state=drain host=gpu-3 socket={SOCKET} wait=true wait_interval=1"
    enable = f"state=enabled host=gpu-3 socket={SOCKET} wait=true wait_interval=1"
    haproxy_module(fleet, drain)
    before = backend_totals()
    thread, answers = qwen_later(fleet)
    time.sleep(3)
    assert backend_totals() == before, "a request for qwen went to a host without it"
    haproxy_module(fleet, enable)
    thread.join(timeout=30)
    waited = answers[0].ended - answers[0].started
    assert answers[0].verdict == "served" and waited >= 3, (answers, waited)

    haproxy_module(fleet, drain)
    assert statuses("gpu-3") == {"DRAIN"}
    playbook(fleet["lab"], "loadbalancer.yml", *lb_vars("-e", "haproxy_timeout_queue=4s"))
    assert "timeout queue 4s" in on_host(LB, "sudo cat /etc/haproxy/haproxy.cfg")
    assert statuses("gpu-3") == {"DRAIN"}, "the reload forgot the runtime drain"
    before = backend_totals()
    thread, answers = qwen_later(fleet)
    thread.join(timeout=30)
    waited = answers[0].ended - answers[0].started
    assert (answers[0].status, answers[0].detail) == (
        503,
        "no host serving this model is available now; try again shortly",
    ), answers
    assert 4 <= waited < 10 and backend_totals() == before, waited

    config_before = on_host(LB, "sudo sha256sum /etc/haproxy/haproxy.cfg")
    bad = json.dumps({"haproxy_frontend_extra": ["no-such-directive on"]})
    output = playbook(fleet["lab"], "loadbalancer.yml", *lb_vars("-e", bad), check=False)
    assert output.startswith("rc=2") or not output.startswith("rc=0"), output[-2000:]
    assert "no-such-directive" in output
    assert on_host(LB, "sudo sha256sum /etc/haproxy/haproxy.cfg") == config_before
    assert stream_once(target(fleet), "generate", LLAMA, 1, 0).verdict == "served"

    haproxy_module(fleet, enable)
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


def test_tls_is_on_by_default_with_1_3_offered_and_1_1_refused(fleet):
    door = target(fleet)
    context = ssl.create_default_context(cafile=str(door.ca_file))
    with (
        socket.create_connection((fleet["lb"], 11434), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=fleet["lb"]) as tls_socket,
    ):
        assert tls_socket.version() == "TLSv1.3"
    # A client that offers TLS 1.1 alone (allowed on its side) is refused by the LB.
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(door.ca_file))
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL"),
        socket.create_connection((fleet["lb"], 11434), timeout=10) as raw,
    ):
        old.wrap_socket(raw, server_hostname=fleet["lb"])
    # Plain HTTP on the TLS port is not served.
    with pytest.raises(http.client.HTTPException):
        plain = http.client.HTTPConnection(fleet["lb"], 11434, timeout=10)
        plain.request("GET", "/api/version")
        plain.getresponse().read()


# -- the front door -----------------------------------------------------------------------------


def call(
    fleet: dict,
    method: str,
    path: str,
    body: dict | None = None,
    key: str | None = LOAD_KEY,
    headers: dict | None = None,
) -> tuple[int, bytes, dict]:
    """One HTTPS request to the LB with the named lab key: its status, body and headers."""
    door = target(fleet, key)
    connection = http.client.HTTPSConnection(
        fleet["lb"], 11434, timeout=30, context=door.ssl_context()
    )
    sent = {"Content-Type": "application/json", **(headers or {})}
    if door.key:
        sent["Authorization"] = f"Bearer {door.key}"
    try:
        connection.request(method, path, json.dumps(body) if body is not None else None, sent)
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def backend_totals() -> int:
    """Requests every server of every backend has had: what reached GPU hosts."""
    return sum(int(row["stot"]) for row in servers().values())


def test_no_key_a_wrong_key_or_no_bearer_is_401_and_reaches_no_gpu_host(fleet):
    before, models_before = backend_totals(), models_on_gpu_hosts(fleet)
    wrong = {"Authorization": "Bearer " + "x" * 43}
    basic = {"Authorization": "Basic " + target(fleet).key}
    bare = {"Authorization": target(fleet).key}
    for headers in ({}, wrong, basic, bare):
        for method, path in (
            ("GET", "/api/tags"),
            ("POST", "/api/chat"),
            ("DELETE", "/api/delete"),
        ):
            status, body, answered = call(fleet, method, path, {"model": LLAMA}, None, headers)
            assert status == 401, (headers, path, body)
            assert answered["www-authenticate"] == "Bearer"
            assert "API key is required" in json.loads(body)["error"]
    # The official clients meet the same refusal.
    for kind in ("chat", "openai-chat"):
        refused = stream_once(target(fleet, None), kind, LLAMA, 1, 0)
        assert (refused.status, refused.verdict) == (401, "failed"), refused
    assert backend_totals() == before
    assert models_on_gpu_hosts(fleet) == models_before


MANAGEMENT_CALLS = [
    ("DELETE", "/api/delete", {"model": LLAMA}),
    ("POST", "/api/pull", {"model": "mistral:7b"}),
    ("POST", "/api/push", {"model": LLAMA}),
    ("POST", "/api/create", {"model": "mine", "from": LLAMA}),
    ("POST", "/api/copy", {"source": LLAMA, "destination": "mine"}),
    ("POST", "/api/blobs/sha256:" + "0" * 64, None),
    ("HEAD", "/api/blobs/sha256:" + "0" * 64, None),
    ("GET", "/api/generate", None),
    ("POST", "/api//delete", {"model": LLAMA}),
    ("POST", "/api/chat/../delete", {"model": LLAMA}),
    ("GET", "/v1/models/../../api/tags", None),
    ("GET", "/", None),
    ("GET", "/metrics", None),
]


def test_management_calls_with_a_valid_key_are_403_naming_the_path_and_reach_no_gpu_host(fleet):
    before, models_before = backend_totals(), models_on_gpu_hosts(fleet)
    for method, path, body in MANAGEMENT_CALLS:
        status, answer, _headers = call(fleet, method, path, body)
        assert status == 403, (method, path, answer)
        if method != "HEAD":
            assert json.loads(answer)["error"].startswith(f"{method} {path} is not served"), answer
    assert backend_totals() == before
    assert models_on_gpu_hosts(fleet) == models_before


def test_client_calls_pass_with_a_key_native_and_openai_compatible(fleet):
    for method, path, body in (
        ("GET", "/api/tags", None),
        ("GET", "/api/ps", None),
        ("GET", "/api/version", None),
        ("GET", "/v1/models", None),
        ("GET", f"/v1/models/{QWEN}", None),
        ("POST", "/api/show", {"model": QWEN}),
        ("POST", "/api/embed", {"model": QWEN, "input": "sky"}),
        ("POST", "/api/embeddings", {"model": QWEN, "prompt": "sky"}),
        ("POST", "/v1/embeddings", {"model": QWEN, "input": "sky"}),
        ("POST", "/v1/completions", {"model": QWEN, "prompt": "hi", "max_tokens": 2}),
    ):
        status, answer, _headers = call(fleet, method, path, body)
        assert status == 200, (method, path, answer[:300])
    for kind in ("chat", "generate", "openai-chat", "embed"):
        assert stream_once(target(fleet), kind, QWEN, 3, 0).verdict == "served", kind
    # The demo's check of the same, as ops run it: every answer as it must be, exit 0.
    checked = gpufleet("lab", "front-door")
    lines = checked.stdout.splitlines()
    answers = [line for line in lines if " -> " in line]
    assert len(answers) == 6 and all(" as it must" in line for line in answers), checked.stdout
    assert sum(line.endswith(": 200 served") for line in lines) == 2, checked.stdout


def test_a_body_over_the_limit_is_413_at_the_lb(fleet):
    before = backend_totals()
    status, answer, _headers = call(
        fleet, "POST", "/api/chat", {"model": LLAMA}, headers={"Content-Length": "40000000"}
    )
    assert status == 413 and "over the load balancer limit" in json.loads(answer)["error"]
    assert backend_totals() == before


def test_a_key_over_its_limits_gets_429_with_retry_after_and_its_counts_show(fleet):
    """lab-tight may have 3 requests at once and 20 a minute."""
    with Load(target(fleet, TIGHT_KEY), [LLAMA], concurrency=5, tokens=60) as running:
        time.sleep(3)
    refused = [o for o in running.report.outcomes if o.status == 429]
    assert refused and all("requests in flight, its limit" in o.detail for o in refused), (
        running.report.outcomes[:6]
    )
    assert 0 < running.report.count("served") <= 20
    statuses_seen, retry_after = [], set()
    for _attempt in range(25):
        status, answer, headers = call(fleet, "GET", "/api/version", key=TIGHT_KEY)
        statuses_seen.append(status)
        if status == 429:
            retry_after.add(headers["retry-after"])
            assert "over its limit of 20 requests a minute" in json.loads(answer)["error"]
    assert 429 in statuses_seen and retry_after == {"60"}, statuses_seen
    # Another key is not held back by it.
    assert call(fleet, "GET", "/api/version", key=CLIENT_KEY)[0] == 200
    table = runtime("show table st_api_keys")
    counts = dict(re.findall(r"key=(\S+) .*?http_req_cnt=(\d+)", table))
    assert int(counts[TIGHT_KEY]) >= len(running.report.outcomes) + 25, table
    logged = on_host(LB, "sudo grep key=lab-tight /var/log/haproxy.log")
    assert " 429 " in logged and " 200 " in logged

    # mtail's counters, as the monitoring host scrapes them: every request of the key, its 429s
    # and its 200s, a moment after HAProxy logged them.
    sent = len(running.report.outcomes) + 25

    def mtail_metrics() -> str:
        with urllib.request.urlopen(f"http://{fleet['lb']}:3903/metrics", timeout=10) as metrics:
            return metrics.read().decode()

    def every_request_counted() -> bool:
        """mtail counts every one of lab-tight's requests, its 429s and its 200s"""
        tight = r'gpufleet_lb_requests_total\{api_key="lab-tight",backend="[^"]+",'
        counted = collections.Counter()
        for code, value in re.findall(tight + r'code="(\d+)"[^}]*\} (\S+)', mtail_metrics()):
            counted[code] += float(value)
        return counted["429"] >= 1 and counted["200"] >= 1 and counted.total() >= sent

    wait_for(every_request_counted, 15, step=1)
    # Its time to first byte is timed for each request a host answered (those of a model's
    # backend), not for the 429s the LB answered itself.
    exported = mtail_metrics()
    answered = re.findall(
        r'gpufleet_lb_requests_total\{api_key="lab-tight",backend="be_[^"]+",[^}]*\} (\S+)',
        exported,
    )
    timed = re.findall(
        r'gpufleet_lb_time_to_first_byte_seconds_count\{api_key="lab-tight",[^}]*\} (\S+)', exported
    )
    assert sum(map(float, timed)) == sum(map(float, answered)) > 0, exported


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (
            {
                "haproxy_api_keys": [
                    {"name": "alpha", "key": "k" * 40},
                    {"name": "alpha", "key": "j" * 40},
                    {"name": "beta", "key": "short"},
                    {"name": "gamma", "key": "k" * 40, "requests_per_minute": 0},
                    {"name": "delta", "key": ""},
                ]
            },
            [
                "the name 'alpha' is given to 2 keys",
                "key 'beta' is shorter than 32 characters",
                "keys 'alpha' and 'gamma' are the same key",
                "key 'gamma': requests_per_minute must be a whole number above 0",
                "key 'delta' has an empty key",
            ],
        ),
        ({"haproxy_api_keys": []}, ["haproxy_api_keys is empty, and keys are required"]),
        (
            {"haproxy_api_key_concurrent_requests": -1},
            ["haproxy_api_key_concurrent_requests must be"],
        ),
        (
            {"haproxy_tls_certificate": ""},
            ["TLS is on (haproxy_tls) and needs both", "haproxy_tls_certificate is empty"],
        ),
        (
            {"lb_membership_spot_fallback_after": -1},
            ["lb_membership on lb-1:", "lb_membership_spot_fallback_after (is -1) 0 or more"],
        ),
    ],
)
def test_bad_front_door_settings_are_refused_before_the_lb_is_touched(fleet, settings, named):
    before = on_host(
        LB, "sudo sha256sum /etc/haproxy/haproxy.cfg /etc/haproxy/*.map /etc/nftables.conf"
    )
    output = playbook(
        fleet["lab"], "loadbalancer.yml", *lb_vars("-e", json.dumps(settings)), check=False
    )
    assert output.startswith("rc=2"), output[-3000:]
    said = " ".join(output.split())
    for sentence in named:
        assert sentence in said, (sentence, output[-3000:])
    assert "k" * 40 not in output and "j" * 40 not in output
    assert "changed=0" in output.split("PLAY RECAP")[-1]
    assert (
        on_host(LB, "sudo sha256sum /etc/haproxy/haproxy.cfg /etc/haproxy/*.map /etc/nftables.conf")
        == before
    )
