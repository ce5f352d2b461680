"""node exporter from its release archive on lab hosts, with the GPU metrics beside it:
plain HTTP on gpu-2, TLS with basic auth on gpu-1."""

import json
import re
import time

import pytest

TLS_CERT = "/etc/node_exporter/tls/node_exporter.crt"
SCRAPE_USER, SCRAPE_PASSWORD = "prometheus", "lab-scrape"

FETCH = """
import base64, json, ssl, sys, urllib.error, urllib.request
url, cafile, auth = sys.argv[1], sys.argv[2], sys.argv[3]
request = urllib.request.Request(url)
if auth:
    request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
context = ssl.create_default_context(cafile=cafile) if cafile else None
try:
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        print(json.dumps({"status": response.status, "body": response.read().decode()}))
except urllib.error.HTTPError as error:
    print(json.dumps({"status": error.code, "body": ""}))
"""


def serves_tls(host):
    return host.file("/etc/node_exporter/web.yml").exists


def scrape(host, scheme="http", cafile="", auth=""):
    address = host.interface("eth0").addresses[0]
    url = f"{scheme}://{address}:9100/metrics"
    # The certificate's directory is for root and the exporter's group only.
    with host.sudo():
        out = host.check_output(f"python3 -c '{FETCH}' {url} '{cafile}' '{auth}'")
    return json.loads(out)


def metrics(host):
    if serves_tls(host):
        answer = scrape(host, "https", TLS_CERT, f"{SCRAPE_USER}:{SCRAPE_PASSWORD}")
    else:
        answer = scrape(host)
    assert answer["status"] == 200
    return answer["body"]


def test_binary_comes_from_the_release_layout(host):
    link = host.file("/usr/local/bin/node_exporter")
    assert link.is_symlink and link.linked_to.startswith("/opt/node_exporter/node_exporter-")


def test_runs_as_its_user_on_the_private_address_only(host):
    assert host.service("node_exporter").is_running and host.service("node_exporter").is_enabled
    address = host.interface("eth0").addresses[0]
    assert host.socket(f"tcp://{address}:9100").is_listening
    assert not host.socket("tcp://0.0.0.0:9100").is_listening
    assert host.run("systemctl show node_exporter -p User").stdout.strip() == "User=node-exp"


def test_serves_node_and_textfile_gpu_metrics(host):
    for _attempt in range(20):
        text = metrics(host)
        if "gpufleet_gpu_up" in text:
            break
        time.sleep(1)
    assert "node_cpu_seconds_total" in text
    assert "\ngpufleet_gpu_up 0\n" in text


def test_a_host_without_web_config_serves_plain_http(host):
    if serves_tls(host):
        pytest.skip("this host serves TLS")
    assert (
        "--web.config.file"
        not in host.file("/etc/systemd/system/node_exporter.service").content_string
    )


def test_tls_host_refuses_scrapes_without_the_password(host):
    if not serves_tls(host):
        pytest.skip("this host serves plain HTTP")
    assert scrape(host, "https", TLS_CERT)["status"] == 401
    assert scrape(host, "https", TLS_CERT, f"{SCRAPE_USER}:wrong")["status"] == 401


def test_tls_host_answers_plain_http_with_an_error(host):
    if not serves_tls(host):
        pytest.skip("this host serves plain HTTP")
    assert scrape(host)["status"] == 400


def test_tls_host_keeps_its_key_from_other_users(host):
    if not serves_tls(host):
        pytest.skip("this host serves plain HTTP")
    with host.sudo():
        key = host.file("/etc/node_exporter/tls/node_exporter.key")
        assert (key.user, key.group, key.mode) == ("root", "node-exp", 0o640)
        web = host.file("/etc/node_exporter/web.yml")
        assert (web.user, web.group, web.mode) == ("root", "node-exp", 0o640)
    assert not host.file("/etc/node_exporter/tls/node_exporter.key").is_file


def test_the_unit_exposes_little(host):
    """systemd-analyze security rates exposure from 0 (locked down) to 10."""
    out = host.check_output("systemd-analyze security --no-pager node_exporter.service")
    exposure = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
    assert exposure <= 4.5, out
