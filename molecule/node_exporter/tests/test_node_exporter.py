"""node exporter from its release archive on a lab host, with the GPU metrics beside it."""

import time


def metrics(host):
    address = host.interface("eth0").addresses[0]
    fetch = f"import urllib.request as u; print(u.urlopen('http://{address}:9100/metrics').read().decode())"
    return host.check_output(f'python3 -c "{fetch}"')


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
    for _ in range(20):
        text = metrics(host)
        if "gpufleet_gpu_up" in text:
            break
        time.sleep(1)
    assert "node_cpu_seconds_total" in text
    assert "\ngpufleet_gpu_up 0\n" in text
