"""Hosts launched from the baked image serve on their own, at their own addresses.

Two hosts are launched from the run's bake (tests/lab/baking.py) at new addresses, one with
an instance-store disk and one without, and no playbook runs on them: each finds its address
at boot, copies the image's models onto its NVMe (or serves the seed), and its firewall lets
in what the bake's ranges say. The LB's config was written before they were launched; its
membership service takes them into its backends' slots from the lab's EC2 API, and the
official client's requests reach them.
Last, one is booted at another address, and once where no address can be found."""

import ipaddress
import json
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from baking import HOST
from fleet import (
    LB,
    QWEN,
    lb_vars,
    reach_from,
    reach_from_controller,
    servers,
    target,
    wait_for,
)
from labctl import REPO, ec2_instances, gpufleet, on_host

from gpufleet.lab import disks, hosts, lab
from gpufleet.lab.load import stream_once
from gpufleet.lab.system import run
from gpufleet.lab.topology import LabPaths

pytestmark = pytest.mark.lab_after_scenarios
OLLAMA, AGENT_CHECK, NODE_EXPORTER = 11434, 11440, 9100
SEED_MODELS = {"qwen2.5:7b", "nomic-embed-text:latest"}


@pytest.fixture(scope="module")
def launched(lab, baked, tmp_path_factory):
    """Two hosts from the image: the first with one NVMe disk, the second with none.
    The molecule scenarios left lb-1 a fresh disk: loadbalancer.yml puts it back in the
    background, and the hosts are launched once it has read the inventory, so its config
    does not list them: the LB's membership service must take them in."""
    assert baked["image"], "the bake kept no image"
    log = tmp_path_factory.mktemp("lb") / "loadbalancer.log"
    with log.open("w") as output:
        converge = subprocess.Popen(
            ["ansible-playbook", "-i", lab["inventory"], "playbooks/loadbalancer.yml", *lb_vars()],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    wait_for(lambda: "PLAY [" in log.read_text() or converge.poll() is not None, 120)
    started = time.monotonic()
    result = gpufleet(
        "lab",
        "launch",
        "--image",
        baked["image"],
        "--count",
        "2",
        "--model",
        QWEN,
        "--nvme-disks",
        "1,0",
        "--lifecycle",
        "spot",
    )
    names = [line.split()[2] for line in result.stdout.splitlines() if " at " in line]
    topology = lab_topology()
    yield {
        "seconds": time.monotonic() - started,
        "hosts": [topology.host(name) for name in names],
        "output": result.stdout,
        "lb_converge": converge,
        "lb_log": log,
    }
    if converge.poll() is None:
        converge.kill()


def lab_topology():
    return lab.load(LabPaths.from_environment())


def ollama_tags(address: str) -> set[str]:
    """Ollama's models, asked from the LB host (the firewall lets only LB hosts in); none
    while it does not answer."""
    ask = (
        "import json, urllib.request; print(json.dumps([m['name'] for m in json.load("
        f"urllib.request.urlopen('http://{address}:{OLLAMA}/api/tags', timeout=5))['models']]))"
    )
    answer = on_host(LB, f'python3 -c "{ask}"', check=False).strip()
    return set(json.loads(answer)) if answer.startswith("[") else set()


def on_launched(host, command: str) -> str:
    return on_host(host.name, command)


def test_two_hosts_launch_from_the_image_at_new_addresses_as_ec2_instances(lab, launched):
    first, second = launched["hosts"]
    taken = {h["address"] for h in lab["hosts"]}
    assert first.address not in taken and second.address not in taken
    instances = ec2_instances(lab)
    for host in (first, second):
        instance, tags = instances[host.name]
        assert instance["ImageId"] == host.image == launched["hosts"][0].image
        assert instance["PrivateIpAddress"] == host.address
        assert instance["InstanceLifecycle"] == "spot"
        assert tags["gpufleet:model"] == QWEN and tags["gpufleet:pool"] == "chat"
    inventory = subprocess.run(
        ["ansible-inventory", "-i", lab["inventory"], "--list"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert {first.name, second.name} <= set(json.loads(inventory.stdout)["role_gpu"]["hosts"])
    print(f"lab launch of 2 hosts: {launched['seconds']:.1f} s")


def test_each_serves_the_images_models_at_its_new_address_with_no_playbook(launched):
    for host in launched["hosts"]:
        wait_for(lambda h=host: ollama_tags(h.address) >= SEED_MODELS, 120)
        address_line = on_launched(host, "sudo journalctl -b -u gpufleet-instance-address -o cat")
        assert f"private address {host.address} (from IMDS local-ipv4)" in address_line
        env = on_launched(host, "systemctl show ollama -p ExecStart")
        assert "GPUFLEET_INSTANCE_ADDRESS" in env


def test_the_models_are_copied_onto_nvme_or_served_from_the_seed_without_it(launched):
    with_disk, without = launched["hosts"]
    store = "sudo journalctl -b -u gpufleet-model-store -o cat"
    assert "hydrated" in on_launched(with_disk, store)
    assert "/mnt/nvme" in on_launched(with_disk, "findmnt -n -o TARGET /mnt/nvme")
    assert "no instance-store" in on_launched(without, store)
    # Its choice, for Prometheus: the seed without NVMe is by design, not a failed copy.
    textfile = "/var/lib/node_exporter/textfile/gpufleet_model_store.prom"
    metrics = f"grep -h '^gpufleet_model_store_[oh]' {textfile}"
    assert on_launched(with_disk, metrics).split() == [
        "gpufleet_model_store_on_seed",
        "0.0",
        "gpufleet_model_store_hydration_failed",
        "0.0",
    ]
    assert on_launched(without, metrics).split() == [
        "gpufleet_model_store_on_seed",
        "1.0",
        "gpufleet_model_store_hydration_failed",
        "0.0",
    ]


def test_the_agent_answers_haproxys_check_from_the_lb_only(launched):
    for host in launched["hosts"]:
        probe = (
            "import socket; s = socket.create_connection"
            f"(('{host.address}', {AGENT_CHECK}), 3); s.sendall(b'{QWEN}\\n');"
            " print(s.recv(64).decode().strip())"
        )
        answer = on_host(LB, f'python3 -c "{probe}"').strip()
        assert answer.endswith("%") and "maint" not in answer and "drain" not in answer, answer
    refused = reached({("gpu-1", h.address, AGENT_CHECK) for h in launched["hosts"]})
    assert set(refused.values()) == {"timeout"}, refused


def reached(probes: set[tuple[str, str, int]]) -> dict[tuple[str, str, int], str]:
    """Each probe (from a lab host, or "controller") at once: a dropped one waits its timeout."""

    def probe(where: tuple[str, str, int]) -> str:
        source, address, port = where
        if source == "controller":
            return reach_from_controller(address, port)
        return reach_from(source, address, port)

    with ThreadPoolExecutor(max_workers=len(probes)) as pool:
        return dict(zip(probes, pool.map(probe, probes), strict=True))


def test_ollama_answers_the_lb_only_and_node_exporter_monitoring_only(launched):
    """The controller is the lab's ops and monitoring host, not an LB."""
    expected = {}
    for host in launched["hosts"]:
        expected[(LB, host.address, OLLAMA)] = "open"
        expected[("gpu-1", host.address, OLLAMA)] = "timeout"
        expected[("controller", host.address, OLLAMA)] = "timeout"
        expected[("controller", host.address, NODE_EXPORTER)] = "open"
        expected[(LB, host.address, NODE_EXPORTER)] = "timeout"
    assert reached(set(expected)) == expected
    for host in launched["hosts"]:
        metrics = urllib.request.urlopen(
            f"http://{host.address}:{NODE_EXPORTER}/metrics", timeout=5
        )
        assert metrics.status == 200 and b"node_uname_info" in metrics.read()


def test_each_has_its_own_ssh_host_key_and_machine_id(launched):
    paths = LabPaths.from_environment()
    keys = [
        hosts.own_host_key(hosts.HostFiles(paths, h.name), h).split()[-1] for h in launched["hosts"]
    ]
    build_key = (paths.host_dir(HOST) / "ssh_host_ed25519_key.pub").read_text().split()[1]
    assert len(set(keys)) == 2 and build_key not in keys
    machine_ids = {on_launched(h, "cat /etc/machine-id").strip() for h in launched["hosts"]}
    assert len(machine_ids) == 2 and "" not in machine_ids


def test_with_no_playbook_the_lb_takes_them_in_and_the_official_clients_reach_them(lab, launched):
    """The LB's membership service puts each launched instance into free slots of its pool's
    backends from the lab's EC2 API; its agent's check then lets the traffic in."""
    converge = launched["lb_converge"]
    assert converge.wait(timeout=600) == 0, launched["lb_log"].read_text()[-4000:]
    assert not any(h.name in launched["lb_log"].read_text() for h in launched["hosts"])
    addresses = {f"{h.address}:{OLLAMA}" for h in launched["hosts"]}
    fleet = {"lb": next(h["address"] for h in lab["hosts"] if h["name"] == LB)}
    backend = f"be_model_{QWEN}"

    def slots_up() -> dict[str, str]:
        return {
            row["addr"]: name
            for (proxy, name), row in servers().items()
            if proxy == backend and row["addr"] in addresses and row["status"].startswith("UP")
        }

    waited = wait_for(lambda: len(slots_up()) == 2, 120)
    taken = slots_up()
    assert all(name.startswith("gpufleet-slot") for name in taken.values()), taken
    journal = on_host(LB, "sudo journalctl -u gpufleet-lb-membership -o cat --no-pager")
    assert all(f"at {h.address} joins" in journal for h in launched["hosts"]), journal
    before = {name: int(servers()[(backend, name)]["stot"]) for name in taken.values()}
    outcomes = [stream_once(target(fleet), "chat", QWEN, 8, n) for n in range(12)]
    assert [o.verdict for o in outcomes] == ["served"] * 12, [o.status for o in outcomes]
    served = {
        name: int(servers()[(backend, name)]["stot"]) - before[name] for name in taken.values()
    }
    assert all(count > 0 for count in served.values()), served
    print(f"launched hosts UP in the LB's slots {waited:.1f} s after loadbalancer.yml ended")


def restart(host, before_boot=None):
    """Power the host off and on again from outside, as EC2 stops and starts an instance."""
    paths = LabPaths.from_environment()
    files = hosts.HostFiles(paths, host.name)
    hosts.stop(files, host.netns)
    if before_boot:
        before_boot()
    loops = disks.ensure(paths, host, lab_topology().nvme_size)
    hosts.start(files, host, disks.nspawn_options(paths, host, loops))


def in_netns(host, *argv: str) -> None:
    run(["ip", "-netns", host.netns, *argv])


def at_address(host, address: str):
    """What readdresses the host's eth0 while it is off, with its default route."""
    topology = lab_topology()

    def readdress():
        in_netns(host, "address", "flush", "dev", "eth0")
        in_netns(host, "address", "add", f"{address}/{topology.prefixlen}", "dev", "eth0")
        in_netns(host, "route", "replace", "default", "via", topology.gateway)

    return readdress


def test_a_boot_at_another_address_serves_there(launched):
    _with_disk, host = launched["hosts"]
    new_address = str(ipaddress.IPv4Address(host.address) + 100)
    restart(host, at_address(host, new_address))
    wait_for(lambda: reach_from_controller(new_address, NODE_EXPORTER) == "open", 90)
    wait_for(lambda: ollama_tags(new_address) >= SEED_MODELS, 60)
    # Back where the lab's EC2 API says it is.
    restart(host, at_address(host, host.address))
    wait_for(lambda: reach_from_controller(host.address, NODE_EXPORTER) == "open", 90)


def test_a_boot_without_an_address_leaves_the_services_stopped_and_says_why(launched):
    """No route to IMDS and no default route: the address unit fails with one line, and
    Ollama, node exporter and the agent do not start."""
    _with_disk, host = launched["hosts"]
    topology = lab_topology()

    def cut():
        in_netns(host, "route", "del", "default")
        in_netns(host, "route", "add", "unreachable", f"{topology.gateway}/32")

    restart(host, cut)
    try:
        journal = wait_for_journal(host, "gpufleet-instance-address", "no private address found")
        why = [line for line in journal.splitlines() if "no private address found" in line]
        assert len(why) == 1, journal
        assert "did not answer" in why[0] and "there is no default route" in why[0]
        states = inside(host, "systemctl is-active ollama node_exporter gpufleet-fleet-agent")
        assert "active" not in states.split(), states
    finally:

        def mend():
            in_netns(host, "route", "del", "unreachable", f"{topology.gateway}/32")
            in_netns(host, "route", "replace", "default", "via", topology.gateway)

        restart(host, mend)
        wait_for(lambda: reach_from_controller(host.address, NODE_EXPORTER) == "open", 90)


def inside(host, command: str) -> str:
    """A command in the host's own namespaces, from outside (SSH cannot reach it now)."""
    paths = LabPaths.from_environment()
    try:
        nspawn = int(hosts.HostFiles(paths, host.name).nspawn_pid.read_text())
        init = Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()[0]
    except (OSError, ValueError, IndexError):
        return ""  # not booted yet
    result = subprocess.run(
        ["nsenter", "--target", init, "--all", "--", "sh", "-c", command],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout + result.stderr


def wait_for_journal(host, unit: str, text: str) -> str:
    journal = ""

    def logged():
        nonlocal journal
        journal = inside(host, f"journalctl -b -u {unit} -o cat --no-pager")
        return text in journal

    wait_for(logged, 90, step=1)
    return journal


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--image", "ami-0ffffffffffffffff"], "the lab has no image 'ami-0ffffffffffffffff'"),
        (["--model", "mistral:7b"], "does not carry mistral:7b (it carries qwen2.5:7b"),
        (["--pool", "vision"], "--pool 'vision': the lab's GPU pools are chat"),
    ],
)
def test_a_launch_the_image_cannot_serve_is_one_line_and_launches_nothing(
    lab, baked, arguments, message
):
    hosts_before = [h.name for h in lab_topology().hosts]
    instances_before = set(ec2_instances(lab))
    refused = gpufleet("lab", "launch", "--image", baked["image"], *arguments, check=False)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and message in refused.stderr, refused.stderr
    assert refused.stderr.rstrip().endswith("nothing launched")
    assert [h.name for h in lab_topology().hosts] == hosts_before
    assert set(ec2_instances(lab)) == instances_before
