"""Baked seeds copied onto lab NVMe at boot: btrfs RAID0 on gpu-1, XFS on gpu-2, the seed
itself on gpu-3; a reboot only checks sizes. Checked from outside with testinfra."""

import json
import re

import pytest

SEED = "/opt/gpufleet/models-seed"
STORE = "/mnt/nvme/ollama/models"
MODELS = {"llama3.1:8b", "qwen2.5:7b"}
LAYOUT = {"gpu-1": ("btrfs", "btrfs raid0 over 2 disks"), "gpu-2": ("xfs", "xfs on 1 disk")}


def ollama_models_dir(host):
    with host.sudo():
        pid = host.check_output("systemctl show ollama -p MainPID --value")
        environ = host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    return dict(line.split("=", 1) for line in environ.splitlines())["OLLAMA_MODELS"]


# Lab hosts here have python3 but no curl.
FETCH = """
import sys, urllib.request
data = sys.argv[2].encode() if len(sys.argv) > 2 else None
request = urllib.request.Request(sys.argv[1], data=data)
print(urllib.request.urlopen(request, timeout=60).read().decode())
"""


def ollama_api(host, path, body=None):
    address = host.interface("eth0").addresses[0]
    data = f" '{json.dumps(body)}'" if body is not None else ""
    return json.loads(host.check_output(f"python3 -c '{FETCH}' http://{address}:11434{path}{data}"))


def served_models(host):
    return {m["name"] for m in ollama_api(host, "/api/tags")["models"]}


def test_the_seed_holds_the_baked_models_and_its_index(host):
    index = json.loads(host.file(f"{SEED}/gpufleet-seed.json").content_string)
    assert set(index["models"]) == MODELS
    assert host.file(SEED).user == "ollama"


def test_ollama_serves_every_model_from_the_store_the_boot_chose(host):
    name = host.backend.get_hostname()
    expected = STORE if name in LAYOUT else SEED
    assert ollama_models_dir(host) == expected
    assert served_models(host) == MODELS
    answer = ollama_api(
        host, "/api/generate", {"model": "qwen2.5:7b", "prompt": "hi", "stream": False}
    )
    assert answer["done"] is True


def test_the_first_boot_copied_and_said_how_long_it_took(host):
    name = host.backend.get_hostname()
    first = host.file("/var/local/model-store-first-boot.log").content_string
    if name not in LAYOUT:
        assert f"no instance-store NVMe: Ollama serves the seed {SEED}" in first
        return
    layout = LAYOUT[name][1]
    match = re.search(
        rf"hydrated /mnt/nvme \({re.escape(layout)}\): (\d+) files, ([\d.]+) [MG]B in ([\d.]+) s",
        first,
    )
    assert match, first
    assert int(match.group(1)) >= 9


@pytest.mark.parametrize("check", ["mount", "reboot"])
def test_the_nvme_store_is_mounted_and_a_reboot_only_checked_sizes(host, check):
    name = host.backend.get_hostname()
    if name not in LAYOUT:
        assert not host.mount_point("/mnt/nvme").exists
        return
    fstype, layout = LAYOUT[name]
    if check == "mount":
        mount = host.mount_point("/mnt/nvme")
        assert mount.filesystem == fstype and "noatime" in mount.options
        assert host.file(STORE).user == "ollama"
        return
    with host.sudo():
        journal = host.check_output("journalctl -b -u gpufleet-model-store -o cat --no-pager")
    assert f"files of the seed already on /mnt/nvme ({layout}): sizes checked" in journal


def test_ollama_waits_for_the_copy_and_the_mount(host):
    shown = host.check_output("systemctl show ollama -p After -p Wants -p RequiresMountsFor")
    assert "gpufleet-model-store.service" in shown
    mounts = next(line for line in shown.splitlines() if line.startswith("RequiresMountsFor="))
    assert "/mnt/nvme" in mounts.removeprefix("RequiresMountsFor=").split()
