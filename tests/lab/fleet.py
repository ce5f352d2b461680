"""The lab tests' one converged fleet: gpu_hosts.yml and loadbalancer.yml on the lab, once
per session, for every test that needs GPU hosts behind an LB; and the helpers that read the
LB's runtime API. Tests that change the fleet put it back, or run last (the model swap).
"""

from __future__ import annotations

import functools
import json
import secrets
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from ansible_collections.gpufleet.fleet.plugins.module_utils.haproxy_runtime import parse_stat
from labctl import ansible_playbook, on_host

from gpufleet.lab import front_door
from gpufleet.lab.front_door import Target
from gpufleet.lab.topology import LabPaths

LB = "lb-1"
LLAMA, QWEN = "llama3.1:8b", "qwen2.5:7b"
LLAMA_BACKEND, QWEN_BACKEND = "be_model_llama3.1:8b", "be_model_qwen2.5:7b"
INTERVAL = 2
STATS_PASSWORD = secrets.token_hex(12)
SOCKET = "/run/haproxy/admin.sock"
FLAG = "/var/lib/gpufleet-fleet-agent/maintenance"


def playbook(lab: dict, name: str, *extra: str, check: bool = True) -> str:
    result = ansible_playbook(lab["inventory"], f"playbooks/{name}", *extra)
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        pytest.fail(f"{name} exited {result.returncode}:\n{output[-4000:]}")
    return output if check else f"rc={result.returncode}\n{output}"


def playbooks_at_once(lab: dict, *runs: tuple[str, ...]) -> list[str]:
    """Playbooks on hosts no two of them share, run at once: each spends most of its time
    waiting on its hosts. Their outputs, in the order given; any failure fails the test."""
    with ThreadPoolExecutor(len(runs)) as pool:
        started = [pool.submit(playbook, lab, name, *extra) for name, *extra in runs]
        return [run.result() for run in started]


@functools.cache
def vaulted_lb_secrets() -> tuple[Path, Path]:
    """The LB's secrets as ops keep them: a vars file encrypted with Ansible Vault (the stats
    password, and the lab's API keys and certificate, the same as its group_vars give), and the
    vault password's file. Written once per session, outside the repository."""
    directory = Path(tempfile.mkdtemp(prefix="gpufleet-vault-"))
    password_file = directory / "vault-password"
    password_file.write_text(secrets.token_hex(16) + "\n")
    password_file.chmod(0o600)
    secrets_file = directory / "lb-secrets.yml"
    lab_secrets = json.loads(front_door.lb_vars_file(LabPaths.from_environment()).read_text())
    secrets_file.write_text(
        json.dumps({**lab_secrets, "haproxy_stats_password": STATS_PASSWORD}) + "\n"
    )
    vault = ["ansible-vault", "encrypt", "--vault-password-file", str(password_file)]
    subprocess.run(
        [*vault, str(secrets_file)],
        check=True,
        capture_output=True,
    )
    return secrets_file, password_file


def lb_vars(*pairs: str) -> list[str]:
    secrets_file, password_file = vaulted_lb_secrets()
    return ["-e", f"@{secrets_file}", "--vault-password-file", str(password_file), *pairs]


def target(fleet: dict, key_name: str | None = front_door.LOAD_KEY) -> Target:
    """The lab's LB as its clients call it: TLS with the lab's CA, the named API key."""
    return front_door.lb_target(LabPaths.from_environment(), fleet["lb"], key_name)


def runtime(command: str) -> str:
    return on_host(LB, f"echo '{command}' | sudo socat -t 5 stdio UNIX-CONNECT:{SOCKET}")


def servers() -> dict[tuple[str, str], dict[str, str]]:
    """show stat's rows of servers, by (backend, server)."""
    rows = parse_stat(runtime("show stat -1 4 -1"))
    return {(row["pxname"], row["svname"]): row for row in rows}


def totals(server: str) -> int:
    return sum(int(row["stot"]) for (_backend, name), row in servers().items() if name == server)


def statuses(server: str) -> set[str]:
    """The status word of server in each backend that routes to it: UP, DRAIN (shown as
    "DRAIN (agent)"), DOWN. Backends of models the host does not serve, where its agent
    answers maint, are left out."""
    rows = servers().items()
    return {row["status"].split()[0] for (_backend, name), row in rows if name == server} - {
        "MAINT"
    }


def wait_for(condition, timeout: float, step: float = 0.2) -> float:
    """Seconds until condition() held; fails the test past timeout."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout} s: {condition.__doc__ or condition}")
        time.sleep(step)
    return time.monotonic() - started


def reach_from(host: str, address: str, port: int) -> str:
    """From a lab host: 'open', 'refused' or 'timeout' for a TCP connection."""
    probe = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('{address}', {port}), timeout=3); print('open')\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except TimeoutError: print('timeout')\n"
    )
    return on_host(host, f'python3 -c "{probe}"').strip()


def reach_from_controller(address: str, port: int) -> str:
    """From the controller (the lab's ops and monitoring host): the same three answers."""
    try:
        socket.create_connection((address, port), timeout=3).close()
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    return "open"
