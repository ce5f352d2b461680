"""The model store's boot-time copy on real file systems over loop devices: XFS on one disk,
btrfs RAID0 over two, a corrupt blob, disks too small for the seed, a reboot."""

import subprocess
from pathlib import Path

import pytest
import repo_scripts
from seeds import pull_seed
from standin_server import start_standin

from gpufleet.lab.standins.ollama.registry import Registry

store = repo_scripts.load("roles/model_store/files/gpufleet_model_store.py")

MODELS = ["llama3.1:8b", "qwen2.5:7b", "nomic-embed-text"]


@pytest.fixture
def seed(tmp_path, registry):
    seed = pull_seed(tmp_path / "seed", registry, MODELS)
    store.write_index(seed)
    return seed


def configured(tmp_path, seed, devices, backend="mdadm"):
    return store.Config(
        seed=seed,
        mount_point=tmp_path / "nvme",
        environment_file=tmp_path / "run" / "ollama-models.env",
        owner="root",
        devices=devices,
        raid_backend=backend,
        metrics_file=str(tmp_path / "textfile" / "gpufleet_model_store.prom"),
    )


def boot_metrics(config) -> set[str]:
    """The metrics file's on-seed and failed lines."""
    lines = Path(config.metrics_file).read_text().splitlines()
    return {
        line
        for line in lines
        if line.startswith(("gpufleet_model_store_on", "gpufleet_model_store_h"))
    }


def hydrate(config):
    lines = []
    status = store.hydrate(config, store.Commands(), log=lines.append)
    return status, lines


def findmnt(path, column):
    return subprocess.run(
        ["findmnt", "-n", "-o", column, str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_one_disk_gets_xfs_the_whole_seed_checked_and_ollama_pointed_at_it(
    tmp_path, seed, loop_disks, registry
):
    config = configured(tmp_path, seed, loop_disks(1, 400))
    status, lines = hydrate(config)
    assert status == 0, lines
    assert findmnt(config.mount_point, "FSTYPE") == "xfs"
    assert "noatime" in findmnt(config.mount_point, "OPTIONS")
    assert store.sizes_match(config.store, store.read_index(seed)[0])
    assert config.environment_file.read_text() == f"OLLAMA_MODELS={config.store}\n"
    assert boot_metrics(config) == {
        "gpufleet_model_store_on_seed 0.0",
        "gpufleet_model_store_hydration_failed 0.0",
    }
    files = len(store.read_index(seed)[0]["files"])
    assert lines[0].startswith(f"hydrated {config.mount_point} (xfs on 1 disk): {files} files, ")
    assert "every blob's sha256 checked" in lines[0]
    assert not list(config.store.rglob("*.partial"))
    served = start_standin(config.store, registry)
    try:
        import ollama

        listed = {m.model for m in ollama.Client(host=served.url).list().models}
    finally:
        served.stop()
    assert listed == {"llama3.1:8b", "qwen2.5:7b", "nomic-embed-text:latest"}


def test_a_reboot_keeps_the_file_system_and_only_checks_sizes(tmp_path, seed, loop_disks):
    config = configured(tmp_path, seed, loop_disks(1, 400))
    assert hydrate(config)[0] == 0
    uuid = findmnt(config.mount_point, "UUID")
    subprocess.run(["umount", str(config.mount_point)], check=True)
    status, lines = hydrate(config)
    assert status == 0
    assert findmnt(config.mount_point, "UUID") == uuid
    files = len(store.read_index(seed)[0]["files"])
    assert lines == [
        f"{files} files of the seed already on {config.mount_point} (xfs on 1 disk): "
        "sizes checked, nothing copied"
    ]


def test_two_disks_are_striped_with_btrfs_raid0(tmp_path, seed, loop_disks):
    config = configured(tmp_path, seed, loop_disks(2, 400), backend="btrfs")
    status, lines = hydrate(config)
    assert status == 0, lines
    assert "(btrfs raid0 over 2 disks)" in lines[0]
    usage = subprocess.run(
        ["btrfs", "filesystem", "df", str(config.mount_point)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Data, RAID0" in usage and "Metadata, RAID1" in usage
    assert store.sizes_match(config.store, store.read_index(seed)[0])


def test_a_corrupt_blob_fails_naming_its_digest_and_ollama_gets_the_seed(
    tmp_path, seed, loop_disks
):
    blob = max((seed / "blobs").iterdir(), key=lambda p: p.stat().st_size)
    with blob.open("r+b") as weights:
        weights.seek(4096)
        byte = weights.read(1)
        weights.seek(4096)
        weights.write(bytes([byte[0] ^ 0xFF]))
    config = configured(tmp_path, seed, loop_disks(1, 400))
    status, lines = hydrate(config)
    assert status == 1
    digest = blob.name.removeprefix("sha256-")
    assert f"blob sha256:{digest} reads as sha256:" in lines[0]
    assert lines[0].endswith(f"Ollama serves the seed {seed} instead")
    assert config.environment_file.read_text() == f"OLLAMA_MODELS={seed}\n"
    assert boot_metrics(config) == {
        "gpufleet_model_store_on_seed 1.0",
        "gpufleet_model_store_hydration_failed 1.0",
    }
    assert not list(config.store.rglob("*.partial"))
    assert not (config.store.parent / store.MARKER_NAME).exists()


def test_disks_smaller_than_the_seed_fail_clearly_and_ollama_gets_the_seed(tmp_path, loop_disks):
    big = Registry({"llama3.1:70b": 360 * 1000**2})
    try:
        seed = pull_seed(tmp_path / "seed", big.start(), ["llama3.1:70b"])
    finally:
        big.stop()
    store.write_index(seed)
    config = configured(tmp_path, seed, loop_disks(1, 320))
    status, lines = hydrate(config)
    assert status == 1
    assert f"the NVMe file system at {config.mount_point} has " in lines[0]
    assert "MB free, the seed needs 360.0 MB more" in lines[0]
    assert config.environment_file.read_text() == f"OLLAMA_MODELS={seed}\n"
    assert not (config.store / "blobs").exists()
