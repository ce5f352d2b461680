"""The host security baseline on the converged fleet: who reaches which port, SSH with keys
only, a rule set nft refuses leaving the loaded one, and secrets kept out of hosts.

The controller is the lab's ops and monitoring host; gpu-2 stands for any host that is not an
LB. A dropped connection times out; nothing listening answers "refused".
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from fleet import (
    LB,
    STATS_PASSWORD,
    playbook,
    reach_from,
    reach_from_controller,
    vaulted_lb_secrets,
)
from labctl import on_host

GPU = "gpu-1"
PORTS_TABLE = Path(__file__).resolve().parents[2] / "docs" / "security.md"
TABLE_ROW = re.compile(r"^\| (gpu|lb) \| (\d+)/tcp \|", re.MULTILINE)


def test_only_the_lb_hosts_reach_ollama_and_the_agent_on_a_gpu_host(fleet):
    address = fleet["hosts"][GPU]
    for port in (11434, 11440):
        assert reach_from(LB, address, port) == "open", port
        assert reach_from("gpu-2", address, port) == "timeout", port
        assert reach_from_controller(address, port) == "timeout", port
    # The agent's state: the LB hosts and ops (playbooks read it); node exporter: monitoring.
    assert reach_from_controller(address, 11441) == "open"
    assert reach_from("gpu-2", address, 11441) == "timeout"
    assert reach_from_controller(address, 9100) == "open"
    assert reach_from("gpu-2", address, 9100) == "timeout"
    # And SSH only from ops.
    assert reach_from("gpu-2", address, 22) == "timeout"
    assert reach_from(LB, address, 22) == "timeout"


def test_the_lb_frontend_takes_clients_and_its_exporter_only_monitoring(fleet):
    lb = fleet["lb"]
    assert reach_from("gpu-2", lb, 11434) == "open"
    assert reach_from("gpu-2", lb, 8405) == "timeout"
    assert reach_from_controller(lb, 8405) == "open"
    # The read-only runtime API: monitoring and the LBs (the scaler), no other host.
    assert reach_from("gpu-2", lb, 9999) == "timeout"
    assert reach_from_controller(lb, 9999) == "open"


def ssh_attempt(fleet: dict, host: str, *options: str) -> subprocess.CompletedProcess:
    """An SSH login from the controller to host, with options for the client."""
    return subprocess.run(
        ["ssh", "-F", fleet["lab"]["ssh_config"], *options, fleet["hosts"][host], "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("host", [GPU, LB])
def test_ssh_refuses_passwords_root_and_old_ciphers(fleet, host):
    password_only = ssh_attempt(
        fleet,
        host,
        *("-o", "PubkeyAuthentication=no"),
        *("-o", "PreferredAuthentications=password,keyboard-interactive"),
    )
    # The server offers publickey and nothing else.
    assert password_only.returncode == 255
    assert "Permission denied (publickey)." in password_only.stderr
    old_cipher = ssh_attempt(fleet, host, "-c", "aes128-cbc")
    assert old_cipher.returncode == 255
    assert "no matching cipher found" in old_cipher.stderr
    effective = dict(
        line.split(" ", 1) for line in on_host(host, "sudo sshd -T").splitlines() if " " in line
    )
    assert effective["permitrootlogin"] == "no"
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective["authenticationmethods"] == "publickey"


def loaded_rules(host: str) -> tuple[str, str]:
    """The gpufleet table as the kernel has it, and the rule file's sha256."""
    table = on_host(host, "sudo nft list table inet gpufleet")
    return table, on_host(host, "sha256sum /etc/nftables.conf").split()[0]


def test_a_rule_set_nft_refuses_changes_nothing(fleet):
    before = loaded_rules(GPU)
    broken = json.dumps({"host_firewall_extra_input_rules": ["tcp dport 8080 acept"]})
    output = playbook(fleet["lab"], "gpu_hosts.yml", "--limit", GPU, "-e", broken, check=False)
    assert output.startswith("rc=2"), output[-3000:]
    assert "failed to validate" in output
    assert "acept" in output
    assert loaded_rules(GPU) == before
    # And ops still get in.
    assert on_host(GPU, "echo in").strip() == "in"


def test_firewall_sources_that_would_lock_ops_out_or_are_wrong_are_refused(fleet):
    before = loaded_rules(GPU)
    gateway = fleet["lab"]["registry"].split("//")[1].split(":")[0]
    cases = {
        json.dumps({"fleet_ops_cidrs": ["192.0.2.0/24"]}): (
            f"this run connects from {gateway}, which host_firewall_ssh_sources (192.0.2.0/24) "
            "leaves out"
        ),
        json.dumps({"fleet_ops_cidrs": []}): "and is empty. Nothing was changed.",
        json.dumps({"fleet_monitoring_cidrs": ["10.77.0.300/32"]}): (
            "service 'node exporter' (port 9100) may be reached from 10.77.0.300/32, not an "
            "address or network: set fleet_monitoring_cidrs. Nothing was changed."
        ),
    }
    for extra, message in cases.items():
        output = playbook(fleet["lab"], "gpu_hosts.yml", "--limit", GPU, "-e", extra, check=False)
        assert output.startswith("rc=2"), (extra, output[-3000:])
        assert message in " ".join(output.split()), (extra, output[-3000:])
        assert f"{GPU}                      : ok=" in output
        assert "changed=0" in output.split("PLAY RECAP")[-1]
    assert loaded_rules(GPU) == before


def test_the_stats_password_comes_from_vault_and_only_its_hash_reaches_the_lb(fleet):
    secrets_file, _vault_password = vaulted_lb_secrets()
    assert secrets_file.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    config = on_host(LB, "sudo cat /etc/haproxy/haproxy.cfg")
    assert STATS_PASSWORD not in config
    assert "password '$6$" in config
    found = on_host(LB, f"sudo grep -rl {STATS_PASSWORD} /etc /var/lib /run || true")
    assert found.strip() == ""


def test_unattended_upgrades_and_the_kernel_settings_as_apt_and_the_kernel_read_them(fleet):
    for host in (GPU, LB):
        blocklist = on_host(host, "apt-config dump Unattended-Upgrade::Package-Blacklist")
        for pattern in ("^linux-", "^nvidia-", "^libnvidia-"):
            assert f'"{pattern}";' in blocklist, (host, blocklist)
        periodic = on_host(host, "apt-config dump APT::Periodic::Unattended-Upgrade")
        assert periodic.strip().endswith('"0";'), (host, periodic)
        redirects = on_host(host, "cat /proc/sys/net/ipv4/conf/all/accept_redirects")
        assert redirects.strip() == "0"
        # Kernel-wide settings belong to the lab's machine: written for the next boot.
        kept = on_host(host, "cat /etc/sysctl.d/60-gpufleet.conf")
        assert "kernel.dmesg_restrict=1" in kept.replace(" ", ""), kept


def test_every_port_a_host_listens_on_is_in_the_ports_table(fleet):
    documented: dict[str, set[int]] = {"gpu": set(), "lb": set()}
    for kind, port in TABLE_ROW.findall(PORTS_TABLE.read_text()):
        documented[kind].add(int(port))
    for kind, host in (("gpu", GPU), ("lb", LB)):
        listening = {
            int(line.split()[3].rsplit(":", 1)[1])
            for line in on_host(host, "sudo ss -Htln").splitlines()
        }
        assert listening == documented[kind], (host, sorted(listening))
