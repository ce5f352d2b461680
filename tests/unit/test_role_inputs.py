"""Roles refuse bad input by name before they touch a host (meta/argument_specs.yml)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PLAYBOOK = """
- name: Apply {role} with bad input
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: gpufleet.fleet.{role}
"""


SHA = "a" * 64


@pytest.mark.parametrize(
    ("role", "bad_vars", "named"),
    [
        ("base", "base_apt_cache_valid_time=soon", "base_apt_cache_valid_time"),
        ("base", "base_time_sync=maybe", "base_time_sync"),
        ("base", '{"base_packages": {"curl": 1}}', "base_packages"),
        ("base", "base_ssh_permit_root_login=yes", "base_ssh_permit_root_login"),
        ("base", "base_unattended_upgrades=sometimes", "base_unattended_upgrades"),
        ("base", '{"base_sysctl": ["kernel.dmesg_restrict=1"]}', "base_sysctl"),
        ("host_firewall", "host_firewall_ssh_port=ssh", "host_firewall_ssh_port"),
        (
            "host_firewall",
            '{"host_firewall_services": [{"name": "Ollama API", "port": 11434}]}',
            "sources",
        ),
        (
            "host_firewall",
            "host_firewall_check_own_address=perhaps",
            "host_firewall_check_own_address",
        ),
        ("ollama", "ollama_version=0.14.2", "ollama_release_sha256"),
        ("ollama", "ollama_release_sha256=abc123", "ollama_release_sha256"),
        ("ollama", f"ollama_release_sha256={SHA} ollama_port=http", "ollama_port"),
        ("ollama", f"ollama_release_sha256={SHA} ollama_version=latest", "ollama_version"),
        ("nvidia_driver", "nvidia_driver_source=runfile", "nvidia_driver_source"),
        ("nvidia_driver", "nvidia_driver_module_flavor=closed", "nvidia_driver_module_flavor"),
        (
            "nvidia_driver",
            "nvidia_driver_source=distribution",
            "nvidia_driver_module_flavor is auto",
        ),
        ("node_exporter", "node_exporter_archive_sha256=nope", "node_exporter_archive_sha256"),
        ("node_exporter", "node_exporter_install_method=snap", "node_exporter_install_method"),
        (
            "node_exporter",
            f"node_exporter_archive_sha256={SHA} node_exporter_tls_cert_file=/c",
            "node_exporter_tls_key_file",
        ),
        (
            "model_store",
            '{"model_store_models": ["llama3.1:8b", "Llama 3"]}',
            "'Llama 3' is not an Ollama",
        ),
        ("model_store", '{"model_store_models": "llama3.1:8b"}', "model_store_models"),
        ("model_store", "model_store_raid_backend=lvm", "model_store_raid_backend"),
        ("model_store", "model_store_copy_workers=many", "model_store_copy_workers"),
        ("fleet_agent", "fleet_agent_cold_weight=cold", "fleet_agent_cold_weight"),
        ("fleet_agent", "fleet_agent_cold_weight=0", "fleet_agent_cold_weight must be 1 to 100"),
        ("fleet_agent", '{"fleet_agent_expected_models": {"a": 1}}', "fleet_agent_expected_models"),
        ("haproxy", "haproxy_port=http", "haproxy_port"),
        ("haproxy", '{"haproxy_incoming_models": ["chat"]}', "haproxy_incoming_models"),
        ("model_swap", "model_swap_drain_timeout=forever", "model_swap_drain_timeout"),
        ("model_swap", "model_swap_remove_old=perhaps", "model_swap_remove_old"),
        ("haproxy", "haproxy_gpu_group=role_gpu", "the group role_gpu (haproxy_gpu_group)"),
        ("haproxy", "haproxy_tls_min_version=TLSv1.1", "haproxy_tls_min_version"),
        (
            "haproxy",
            '{"haproxy_gpu_group": "ungrouped", "haproxy_tls": false, "haproxy_api_keys": '
            '[{"name": "team-a", "key": "short"}]}',
            "key 'team-a' is shorter than 32 characters",
        ),
        (
            "haproxy",
            '{"haproxy_gpu_group": "ungrouped", "haproxy_api_keys_required": false}',
            "TLS is on (haproxy_tls) and needs both haproxy_tls_certificate",
        ),
        (
            "haproxy",
            '{"haproxy_gpu_group": "ungrouped", "haproxy_timeout_queue": "soon"}',
            "haproxy_timeout_queue soon is not a time as HAProxy takes it",
        ),
        ("mtail", '{"mtail_programs": ["nginx"]}', "mtail_programs"),
        ("scaler", "scaler_interval=often", "scaler_interval"),
        (
            "scaler",
            '{"scaler_region": "us-east-1", "scaler_env": "prod", '
            '"scaler_pools": {"chat": {"scale_in_queue": 12, "scale_out_window": 5}}}',
            "scaler_pools.chat.scale_in_queue (12) must be below scale_out_queue (10); "
            "scaler_pools.chat.scale_out_window (5 s) is shorter than scaler_interval (10 s)",
        ),
        (
            "scaler",
            '{"scaler_region": "us-east-1", "scaler_env": "prod", "scaler_max_instances": 1, '
            '"scaler_pools": {"chat": {"min": 2}, "batch": {}}}',
            "scaler_max_instances (1) is below the pools' minimums together (3)",
        ),
        ("mtail", "mtail_port=metrics", "mtail_port"),
        ("patch", "patch_hold_kernel=perhaps", "patch_hold_kernel"),
        ("service_user", '{"service_user_groups": "video"}', "service_user_name"),
        (
            "release_archive",
            "release_archive_url=https://example.invalid/x.tgz",
            "release_archive_sha256",
        ),
        ("patch", "patch_drain_timeout=forever", "patch_drain_timeout"),
        ("patch", '{"patch_reboot_services": {"dbus": 1}}', "patch_reboot_services"),
        ("fleet_drain", "fleet_drain_timeout=soon", "fleet_drain_timeout"),
    ],
)
def test_bad_input_fails_before_any_task_and_names_the_variable(tmp_path, role, bad_vars, named):
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK.format(role=role))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            "localhost,",
            str(playbook),
            "-e",
            bad_vars,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert named in output
    assert "Validating arguments against arg spec" in output
    # Nothing past validation and the input checks ran: no task touched the host.
    changing = [
        line
        for line in output.splitlines()
        if line.startswith("TASK [")
        and "Validating arguments" not in line
        and "Check the inputs" not in line
    ]
    assert changing == [], changing
