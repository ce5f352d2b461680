"""The model store tool without disks: the seed's index, device discovery, and the exact
commands each striping backend runs (mdadm cannot run here: the kernel has no md)."""

import json
import os
import time
from pathlib import Path

import pytest
import repo_scripts
from prometheus_client.parser import text_string_to_metric_families
from seeds import pull_seed

store = repo_scripts.load("roles/model_store/files/gpufleet_model_store.py")

MODELS = ["llama3.1:8b", "qwen2.5:7b"]


@pytest.fixture
def seed(tmp_path, registry):
    return pull_seed(tmp_path / "seed", registry, MODELS)


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("llama3.1:8b", "manifests/registry.ollama.ai/library/llama3.1/8b"),
        ("nomic-embed-text", "manifests/registry.ollama.ai/library/nomic-embed-text/latest"),
        ("acme/chat:v2", "manifests/registry.ollama.ai/acme/chat/v2"),
        ("reg.example:5000/acme/chat:v2", "manifests/reg.example:5000/acme/chat/v2"),
    ],
)
def test_model_names_map_to_ollamas_manifest_paths_and_back(name, path):
    assert str(store.manifest_path(name)) == path
    shown = name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
    assert store.model_name(store.manifest_path(name)) == shown


def test_the_index_lists_each_model_with_its_blobs_and_every_file_size(seed):
    assert store.missing_models(seed, [*MODELS, "mistral:7b"]) == ["mistral:7b"]
    assert store.write_index(seed) is True
    assert store.write_index(seed) is False
    index, digest = store.read_index(seed)
    assert sorted(index["models"]) == MODELS
    llama = index["models"]["llama3.1:8b"]
    assert llama["manifest"] == "manifests/registry.ollama.ai/library/llama3.1/8b"
    assert len(llama["blobs"]) == 5 and all(b.startswith("sha256:") for b in llama["blobs"])
    on_disk = {
        str(p.relative_to(seed)): p.stat().st_size
        for p in seed.rglob("*")
        if p.is_file() and p.name != store.INDEX_NAME
    }
    assert index["files"] == on_disk
    assert index["bytes"] == sum(on_disk.values()) > 2_000_000
    assert len(digest) == 64


def test_a_blob_of_the_wrong_size_fails_the_index_naming_its_digest(seed):
    blob = max((seed / "blobs").iterdir(), key=lambda p: p.stat().st_size)
    with blob.open("ab") as out:
        out.write(b"x")
    with pytest.raises(store.StoreError, match=f"blob sha256:{blob.name[7:]} has"):
        store.build_index(seed)


def test_a_seed_missing_a_blob_of_its_index_is_named_before_any_disk_is_touched(seed, tmp_path):
    store.write_index(seed)
    blob = next((seed / "blobs").iterdir())
    blob.unlink()
    commands = Recording()
    config = lab_config(tmp_path, seed, devices=["/dev/null"])
    lines = []
    assert store.hydrate(config, commands, log=lines.append) == 1
    assert commands.calls == []
    assert f"the seed lacks blob sha256:{blob.name[7:]}" in lines[0]
    assert config.environment_file.read_text() == f"OLLAMA_MODELS={seed}\n"
    assert boot_metrics(config) == {"on_seed": 1, "hydration_failed": 1}


def test_no_instance_store_means_ollama_serves_the_seed(seed, tmp_path):
    store.write_index(seed)
    config = lab_config(tmp_path, seed)
    lines = []
    assert store.hydrate(config, Recording(), log=lines.append) == 0
    assert config.environment_file.read_text() == f"OLLAMA_MODELS={seed}\n"
    assert lines == [f"no instance-store NVMe: Ollama serves the seed {seed}"]
    # No NVMe is the instance type's design, not a fallback.
    assert boot_metrics(config) == {"on_seed": 1, "hydration_failed": 0}


def lab_config(tmp_path, seed, devices=()):
    return store.Config(
        seed=seed,
        mount_point=tmp_path / "nvme",
        environment_file=tmp_path / "run" / "ollama-models.env",
        owner="root",
        devices=list(devices),
        metrics_file=str(tmp_path / "textfile" / "gpufleet_model_store.prom"),
    )


def boot_metrics(config) -> dict[str, float]:
    """The metrics file through Prometheus' own parser: name without the prefix -> value;
    its time stamp checked to be this run's."""
    found = {
        sample.name.removeprefix("gpufleet_model_store_"): sample.value
        for family in text_string_to_metric_families(Path(config.metrics_file).read_text())
        for sample in family.samples
    }
    assert abs(found.pop("chosen_timestamp_seconds") - time.time()) < 60, found
    return found


def test_devices_are_found_by_id_then_by_model_never_the_root_disk(tmp_path):
    dev, sys_block = tmp_path / "dev", tmp_path / "sys" / "block"
    (dev / "disk" / "by-id").mkdir(parents=True)
    for name, model in [
        ("nvme0n1", "Amazon Elastic Block Store"),
        ("nvme1n1", "Amazon EC2 NVMe Instance Storage"),
        ("nvme2n1", "Amazon EC2 NVMe Instance Storage  "),
    ]:
        (sys_block / name / "device").mkdir(parents=True)
        (sys_block / name / "device" / "model").write_text(model + "\n")
        (dev / name).touch()
    assert store.instance_store_devices([], dev, sys_block) == [
        str(dev / "nvme1n1"),
        str(dev / "nvme2n1"),
    ]
    by_id = dev / "disk" / "by-id"
    (by_id / "nvme-Amazon_EC2_NVMe_Instance_Storage_AWS1").symlink_to(dev / "nvme2n1")
    (by_id / "nvme-Amazon_EC2_NVMe_Instance_Storage_AWS1-part1").symlink_to(dev / "nvme2n1")
    (by_id / "nvme-Amazon_Elastic_Block_Store_vol1").symlink_to(dev / "nvme0n1")
    assert store.instance_store_devices([], dev, sys_block) == [str(dev / "nvme2n1")]


def test_a_device_override_that_is_not_there_is_named(tmp_path):
    with pytest.raises(store.StoreError, match="/nonexistent/nvme9n1 do not exist"):
        store.instance_store_devices(["/nonexistent/nvme9n1"])


def test_the_root_disk_is_found_by_its_device_numbers(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw\n"
        "30 22 259:5 / /mnt/nvme rw - xfs /dev/nvme1n1 rw\n"
    )
    sys_block = tmp_path / "block"
    for disk, partitions in [("nvme0n1", {"nvme0n1p1": "259:2"}), ("nvme1n1", {})]:
        (sys_block / disk).mkdir(parents=True)
        (sys_block / disk / "dev").write_text("259:0\n" if disk == "nvme0n1" else "259:5\n")
        for partition, numbers in partitions.items():
            (sys_block / disk / partition).mkdir()
            (sys_block / disk / partition / "dev").write_text(numbers + "\n")
    assert store.root_disks(mountinfo, sys_block) == {"nvme0n1"}


class Recording(store.Commands):
    """Records every command; answers from a script of (argv prefix, output) pairs."""

    def __init__(self, answers=()):
        self.calls = []
        self.answers = list(answers)

    def run(self, argv, check=True):
        self.calls.append(argv)
        for prefix, output in self.answers:
            if argv[: len(prefix)] == prefix:
                return output
        return ""


DISKS = ["/dev/nvme1n1", "/dev/nvme2n1"]


def test_mdadm_builds_the_array_when_none_is_assembled_and_never_reads_mdadm_conf():
    commands = Recording()
    device, options = store.FileSystem(DISKS, "mdadm", commands).prepare()
    assert (device, options) == ("/dev/md/models-nvme", ["noatime"])
    assert commands.calls == [
        ["mdadm", "--detail", "--scan"],
        [
            "mdadm",
            "--create",
            "/dev/md/models-nvme",
            "--name=models-nvme",
            "--level=0",
            "--raid-devices=2",
            "--run",
            "--force",
            *DISKS,
        ],
        ["blkid", "-p", "-o", "value", "-s", "TYPE", "/dev/md/models-nvme"],
        ["mkfs.xfs", "-f", "-L", "models-nvme", "/dev/md/models-nvme"],
    ]


def test_mdadm_keeps_an_array_assembled_at_boot_and_its_file_system():
    scan = "ARRAY /dev/md/models-nvme metadata=1.2 name=gpu-1:models-nvme UUID=0a:1b:2c:3d\n"
    commands = Recording(
        [
            (["mdadm", "--detail", "--scan"], scan),
            (["blkid", "-p", "-o", "value", "-s", "TYPE"], "xfs\n"),
            (["blkid", "-p", "-o", "value", "-s", "LABEL"], "models-nvme\n"),
        ]
    )
    store.FileSystem(DISKS, "mdadm", commands).prepare()
    assert [call[0] for call in commands.calls] == ["mdadm", "blkid", "blkid"]


def test_btrfs_stripes_data_and_mirrors_metadata_and_names_every_member_to_mount():
    commands = Recording()
    device, options = store.FileSystem(DISKS, "btrfs", commands).prepare()
    assert commands.calls[-1] == [
        "mkfs.btrfs",
        "-f",
        "-L",
        "models-nvme",
        "-d",
        "raid0",
        "-m",
        "raid1",
        *DISKS,
    ]
    assert (device, options) == (DISKS[0], ["noatime", *(f"device={d}" for d in DISKS)])


def test_a_single_disk_gets_xfs_unless_it_already_carries_ours():
    fresh = Recording()
    assert store.FileSystem(DISKS[:1], "mdadm", fresh).prepare() == (DISKS[0], ["noatime"])
    assert fresh.calls[-1] == ["mkfs.xfs", "-f", "-L", "models-nvme", DISKS[0]]
    kept = Recording(
        [
            (["blkid", "-p", "-o", "value", "-s", "TYPE"], "xfs\n"),
            (["blkid", "-p", "-o", "value", "-s", "LABEL"], "models-nvme\n"),
        ]
    )
    store.FileSystem(DISKS[:1], "btrfs", kept).prepare()
    assert not [call for call in kept.calls if call[0].startswith("mkfs")]


def test_a_configuration_with_another_backend_is_refused(tmp_path):
    config = tmp_path / "model-store.json"
    config.write_text(
        json.dumps(
            {
                "seed": "/s",
                "mount_point": "/m",
                "environment_file": "/e",
                "raid_backend": "lvm",
            }
        )
    )
    with pytest.raises(store.StoreError, match="raid_backend 'lvm' is neither mdadm nor btrfs"):
        store.Config.load(config)


def test_the_command_line_says_which_models_are_missing(seed, capsys):
    assert store.main(["missing", "--seed", str(seed), "llama3.1:8b", "llama3.1:70b"]) == 0
    assert capsys.readouterr().out.split() == ["llama3.1:70b"]
    assert store.main(["index", "--seed", str(seed)]) == 0
    assert capsys.readouterr().out.strip() == "changed"
    os.utime(seed / store.INDEX_NAME)
    assert store.main(["index", "--seed", str(seed)]) == 0
    assert capsys.readouterr().out.strip() == "unchanged"
