"""The patch window on the lab's shared fleet, under streaming load through the LB.

The lab publishes its Debian point release (libc6 with a higher revision, the same files), so
every host has a real upgrade; Debian's own updates since the lab's root file system was
built come with it. A libc upgrade leaves dbus and PID 1 on the old library, so GPU hosts
really reboot (nspawn restarts them); the LB, with no front to drain it, is upgraded with
HAProxy reloaded and its reboot reported pending. Runs after the model swap tests, on the
models they left.
"""

from __future__ import annotations

import datetime
import json
import subprocess
from collections import Counter

import pytest
from fleet import FLAG, lb_vars, playbook, statuses, target
from labctl import REPO, ec2_client, ec2_instances, gpufleet, lab_status, on_host
from test_model_swap import GPU_HOSTS, changed_hosts, swap, tagged_models

from gpufleet.lab.load import Load
from gpufleet.lab.point_release import REVISION

LB_HOST = "lb-1"
ALL_HOSTS = (*GPU_HOSTS, LB_HOST)
BROKEN_OLLAMA = "/etc/systemd/system/ollama.service.d/zz-patch-test-broken.conf"
REPORTS = REPO / "reports"


def patch(fleet: dict, *extra: str, check: bool = True) -> str:
    return playbook(fleet["lab"], "patch.yml", *lb_vars(*extra), check=check)


def libc_version(host: str) -> str:
    return on_host(host, "dpkg-query --show --showformat='${Version}' libc6").strip()


def drained(host: str) -> bool:
    return on_host(host, f"test -e {FLAG} && echo drained || echo serving").strip() == "drained"


def reboots() -> dict[str, int]:
    return {h["name"]: h["reboots"] for h in lab_status()["hosts"]}


def newest_report() -> dict:
    newest = max(REPORTS.glob("patch-*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())


def play_order(fleet: dict) -> list[str]:
    """The GPU hosts in the order the patch's play takes them: the inventory's."""
    listed = subprocess.run(
        ["ansible-inventory", "-i", fleet["lab"]["inventory"], "--list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(listed.stdout)["role_gpu"]["hosts"]


def test_the_only_host_of_a_model_is_not_drained(published):
    fleet = published["fleet"]
    lone = play_order(fleet)[-1]
    instance_id = ec2_instances(fleet["lab"])[lone][0]["InstanceId"]
    served = tagged_models(fleet)[lone]
    tag = {"Key": "gpufleet:model", "Value": "nomic-embed-text"}
    ec2_client(fleet["lab"]).create_tags(Resources=[instance_id], Tags=[tag])
    try:
        output = patch(fleet, "-e", "patch_force=true", check=False)
    finally:
        tag["Value"] = served
        ec2_client(fleet["lab"]).create_tags(Resources=[instance_id], Tags=[tag])
    assert not output.startswith("rc=0"), output[-2000:]
    assert "patch: nomic-embed-text (one host) is served by a single GPU host" in output
    assert "No host was touched" in output
    assert {h: libc_version(h) for h in ALL_HOSTS} == published["libc_before"]
    assert not any(drained(h) for h in GPU_HOSTS)


@pytest.fixture(scope="module")
def published(fleet: dict) -> dict:
    most_served = Counter(tagged_models(fleet).values()).most_common(1)[0][0]
    swap(fleet, most_served)
    before = {host: libc_version(host) for host in ALL_HOSTS}
    gpufleet("lab", "publish-update")
    return {"fleet": fleet, "libc_before": before}


def test_the_guard_refuses_outside_the_window(published):
    fleet = published["fleet"]
    tomorrow = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)).strftime("%a")
    window = {"patch_window_days": [tomorrow.lower()], "patch_window_start": "00:00"}
    output = patch(fleet, "-e", json.dumps({**window, "patch_window_end": "00:01"}), check=False)
    assert not output.startswith("rc=0"), output[-2000:]
    assert "patch: the patch window (" in output and "is closed at" in output, output[-2000:]
    assert "No host was touched" in output and "patch_force=true" in output
    assert {h: libc_version(h) for h in ALL_HOSTS} == published["libc_before"]


@pytest.mark.parametrize(
    "serial", [{"patch_serial": 0}, {"patch_serial": "100%"}, {"patch_serial": ["3", "1"]}]
)
def test_a_batch_that_would_empty_the_pool_is_refused_whatever_form_serial_takes(published, serial):
    """Ansible reads serial 0 as every host in one batch, a percentage of all the hosts, and a
    list's items as numbers whether they come as numbers or strings: each makes one batch of
    the whole pool of 3 here."""
    output = patch(
        published["fleet"], "-e", json.dumps({"patch_force": True, **serial}), check=False
    )
    assert not output.startswith("rc=0"), output[-2000:]
    assert "would leave pool chat 0 hosts, fewer than patch_min_healthy (1)" in output, output[
        -2000:
    ]
    assert "No host was touched" in output
    assert {h: libc_version(h) for h in ALL_HOSTS} == published["libc_before"]
    assert not any(drained(h) for h in GPU_HOSTS)


def test_a_host_failing_verification_stops_the_run_and_stays_drained(published):
    fleet = published["fleet"]
    first, *others = play_order(fleet)
    # Ollama cannot start again once the host reboots: a patch that breaks the inference stack.
    on_host(
        first,
        f"sudo mkdir -p {BROKEN_OLLAMA.rsplit('/', 1)[0]} && "
        f"printf '[Service]\\nExecStartPre=/bin/false\\n' | sudo tee {BROKEN_OLLAMA}",
    )
    before = reboots()
    output = patch(fleet, "-e", "patch_force=true", "-e", "patch_verify_timeout=10", check=False)
    assert not output.startswith("rc=0"), output[-3000:]
    assert f'patch: {first} failed at "Check Ollama serves every expected model"' in output, output[
        -3000:
    ]
    assert "It is left drained" in output and "no further host is touched" in output
    assert reboots()[first] == before[first] + 1
    assert drained(first) and statuses(first) <= {"DRAIN", "DOWN"}
    assert libc_version(first).endswith(REVISION)
    for host in (*others, LB_HOST):
        assert libc_version(host) == published["libc_before"][host], host
        assert reboots()[host] == before[host]
    for host in others:
        assert not drained(host) and statuses(host) == {"UP"}
    report = newest_report()
    assert report["outcome"] == "failed"
    assert [(r["host"], r["outcome"]) for r in report["hosts"]] == [(first, "failed, drained")]
    on_host(
        first,
        f"sudo rm {BROKEN_OLLAMA} && sudo systemctl daemon-reload && sudo systemctl start ollama",
    )


def test_the_whole_fleet_is_patched_under_load_without_a_dropped_request(published):
    fleet = published["fleet"]
    first, *others = play_order(fleet)
    before = reboots()
    models = sorted(set(tagged_models(fleet).values()))
    running = Load(target(fleet), models, concurrency=20, tokens=40).start()
    patch(fleet, "-e", "patch_force=true")
    outcome = running.stop()
    summary = outcome.summary()
    assert summary["failed"] == 0 and summary["truncated"] == 0, outcome.problems()[:5]
    assert summary["served"] >= 40

    report = newest_report()
    rows = {row["host"]: row for row in report["hosts"]}
    assert report["outcome"] == "patched" and set(rows) == set(ALL_HOSTS), report
    # The failed run upgraded and rebooted its host: this run only puts it back.
    assert (rows[first]["outcome"], rows[first]["packages"]) == ("patched", [])
    for host in others:
        row = rows[host]
        assert row["outcome"] == "patched" and row["rebooted"], row
        assert {"name": "libc6", "from": published["libc_before"][host]} in [
            {k: p[k] for k in ("name", "from")} for p in row["packages"]
        ]
        assert any("dbus.service" in reason for reason in row["reboot_reasons"]), row
        assert 0 <= row["drain_wait_s"] <= row["total_s"]
        assert reboots()[host] == before[host] + 1
    lb = rows[LB_HOST]
    assert (lb["outcome"], lb["rebooted"]) == ("patched, reboot pending", False), lb
    assert "haproxy.service" in lb["reloaded"] and "ssh.service" in lb["restarted"], lb
    assert reboots()[LB_HOST] == before[LB_HOST]
    for host in ALL_HOSTS:
        assert libc_version(host).endswith(REVISION), host
    for host in GPU_HOSTS:
        assert not drained(host) and statuses(host) == {"UP"}, host


def test_a_second_patch_window_changes_no_host(published):
    output = patch(published["fleet"], "-e", "patch_force=true")
    assert not changed_hosts(output), changed_hosts(output)
    rows = {row["host"]: row["outcome"] for row in newest_report()["hosts"]}
    assert rows == {**dict.fromkeys(GPU_HOSTS, "up to date"), LB_HOST: "up to date, reboot pending"}
