"""What the ollama role leaves on a lab host, checked from outside with testinfra."""

import json
import os
import re
from pathlib import Path


def lab_releases():
    """The Ollama releases the lab serves, newest first."""
    lab_vars = json.loads(Path(os.environ["GPUFLEET_LAB_VARS"]).read_text())
    return list(lab_vars["lab_ollama_releases"])


def test_binary_is_linked_to_its_version(host):
    link = host.file("/usr/bin/ollama")
    assert link.is_symlink
    assert link.linked_to.startswith("/opt/ollama/")
    assert host.run("/usr/bin/ollama --version").stdout.startswith("ollama version is ")


def test_service_runs_as_ollama_in_the_gpu_groups(host):
    assert host.service("ollama").is_running
    assert host.service("ollama").is_enabled
    user = host.user("ollama")
    assert {"render", "video"} <= set(user.groups)
    with host.sudo():
        models = host.file("/var/lib/ollama/models")
        assert (models.user, models.group, models.mode) == ("ollama", "ollama", 0o750)


def test_unit_is_hardened_but_keeps_devices(host):
    show = host.run(
        "systemctl show ollama -p ProtectSystem -p NoNewPrivileges "
        "-p PrivateDevices -p ProtectHome -p PrivateTmp -p User"
    ).stdout
    values = dict(line.split("=", 1) for line in show.split())
    assert values == {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateDevices": "no",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "User": "ollama",
    }


def test_listens_on_the_private_address_found_at_boot_only(host):
    """OLLAMA_HOST comes from the address the boot-time unit wrote, not from the converge."""
    address = host.interface("eth0").addresses[0]
    found = host.file("/run/gpufleet/instance-address.env").content_string
    assert f"GPUFLEET_INSTANCE_ADDRESS={address}\n" in found
    start = host.run("systemctl show ollama -p ExecStart").stdout
    assert "OLLAMA_HOST=${GPUFLEET_INSTANCE_ADDRESS}:11434" in start
    requires = host.run("systemctl show ollama -p Requires").stdout
    assert "gpufleet-instance-address.service" in requires
    assert host.socket(f"tcp://{address}:11434").is_listening
    assert not host.socket("tcp://0.0.0.0:11434").is_listening


def api(host, path):
    address = host.interface("eth0").addresses[0]
    fetch = f"import urllib.request as u; print(u.urlopen('http://{address}:11434{path}').read().decode())"
    return json.loads(host.check_output(f'python3 -c "{fetch}"'))


def test_api_answers_and_the_model_is_loaded(host):
    assert api(host, "/api/version")["version"]
    running = api(host, "/api/ps")
    assert [m["name"] for m in running["models"]] == ["llama3.1:8b"]


def test_after_two_downgrades_and_an_upgrade_one_previous_version_is_kept(host):
    """The side effect went newest -> older -> oldest -> newest: the newest runs, the
    oldest stays for a rollback, the one between them is gone with its archive."""
    newest, *_between, oldest = lab_releases()
    assert api(host, "/api/version")["version"] == newest
    assert host.file("/usr/bin/ollama").linked_to == f"/opt/ollama/{newest}/bin/ollama"
    assert sorted(host.run("ls /opt/ollama").stdout.split()) == sorted(
        [
            newest,
            oldest,
            f"ollama-{newest}-linux-amd64.tar.zst",
            f"ollama-{oldest}-linux-amd64.tgz",
        ]
    )


def test_the_unit_exposes_little(host):
    """systemd-analyze security rates exposure from 0 (locked down) to 10."""
    out = host.check_output("systemd-analyze security --no-pager ollama.service")
    exposure = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
    assert exposure <= 4.5, out
