#!/usr/bin/python3
"""Ollama's models, baked into the image as a seed and copied onto instance-store NVMe at boot.

An EBS-backed AMI cannot carry instance-store data, and the instance store is erased on
every stop and start, so the models are baked into the image as a seed store in Ollama's
own layout (manifests and blobs together), and at every boot this tool copies them onto
the instance's NVMe disks before Ollama starts:

    gpufleet_model_store.py missing --seed DIR MODEL...   the models the seed lacks (bake)
    gpufleet_model_store.py index --seed DIR              record what the seed holds (bake)
    gpufleet_model_store.py hydrate --config FILE         disks, file system, copy (boot)

hydrate finds the instance-store disks (or takes a list), makes one XFS file system on a
single disk or a RAID0 stripe over several (mdadm and XFS, or btrfs), mounts it, and
copies the seed's blobs and manifests onto it with large sequential reads, several files
at a time, checking each blob's sha256 against the digest in its name. A bad blob is
copied once more; if it is still bad, or the disks are too small, the run fails and
Ollama is pointed at the seed instead. A marker records a finished copy, so a plain
reboot (the instance store survives one) only checks sizes. Ollama reads OLLAMA_MODELS
from the environment file this tool writes; where the configuration names a metrics file
(node exporter's textfile collector), it also says there what Ollama serves and whether
this boot's copy failed. Standard library only.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import hashlib
import itertools
import json
import mmap
import os
import pwd
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

INDEX_NAME = "gpufleet-seed.json"
MARKER_NAME = "gpufleet-hydrated.json"
# XFS labels stop at 12 characters.
LABEL = "models-nvme"
MD_DEVICE = f"/dev/md/{LABEL}"
INSTANCE_STORE_MODEL = "Amazon EC2 NVMe Instance Storage"
BLOCK = 16 << 20
DIRECT_ALIGNMENT = 4096
DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DIGEST_FILE = re.compile(r"^sha256-([0-9a-f]{64})$")


class StoreError(Exception):
    """A failure that names what failed: a model, a digest, a device, a size."""


# -- the seed ---------------------------------------------------------------------------------


def manifest_path(name: str) -> Path:
    """Where Ollama keeps a model's manifest: host/namespace/model/tag, with its defaults."""
    tag = "latest"
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    parts = name.split("/")
    if not 1 <= len(parts) <= 3 or not all(parts) or not tag:
        raise StoreError(f"model {name!r} is not a model name (model:tag)")
    host = parts[-3] if len(parts) == 3 else DEFAULT_REGISTRY
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    return Path("manifests", host, namespace, parts[-1], tag)


def model_name(manifest: Path) -> str:
    """The name Ollama shows for a manifest path relative to the store."""
    host, namespace, model, tag = manifest.parts[1:5]
    if host == DEFAULT_REGISTRY and namespace == DEFAULT_NAMESPACE:
        return f"{model}:{tag}"
    if host == DEFAULT_REGISTRY:
        return f"{namespace}/{model}:{tag}"
    return f"{host}/{namespace}/{model}:{tag}"


def blob_path(digest: str) -> Path:
    return Path("blobs", digest.replace(":", "-"))


def missing_models(seed: Path, names: Iterable[str]) -> list[str]:
    return [name for name in names if not (seed / manifest_path(name)).is_file()]


def build_index(seed: Path) -> dict:
    """Every model in the seed with its manifest and blobs, and every file with its size.
    A blob a manifest names that is missing or of another size fails, naming the digest."""
    models: dict[str, dict] = {}
    files: dict[str, int] = {}
    for manifest in sorted((seed / "manifests").glob("*/*/*/*")):
        relative = manifest.relative_to(seed)
        try:
            document = json.loads(manifest.read_text())
            layers = [document["config"], *document["layers"]]
            wanted = {layer["digest"]: int(layer["size"]) for layer in layers}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"seed manifest {relative} is not an Ollama manifest: {exc}") from None
        name = model_name(relative)
        for digest, size in wanted.items():
            blob = seed / blob_path(digest)
            if not blob.is_file():
                raise StoreError(f"seed model {name}: blob {digest} is missing")
            if blob.stat().st_size != size:
                raise StoreError(
                    f"seed model {name}: blob {digest} has {blob.stat().st_size} bytes, "
                    f"its manifest says {size}"
                )
            files[str(blob_path(digest))] = size
        files[str(relative)] = manifest.stat().st_size
        models[name] = {"manifest": str(relative), "blobs": sorted(wanted)}
    return {"version": 1, "models": models, "files": files, "bytes": sum(files.values())}


def write_index(seed: Path) -> bool:
    """Write the seed's index; return whether it changed."""
    text = json.dumps(build_index(seed), indent=2, sort_keys=True) + "\n"
    target = seed / INDEX_NAME
    if target.exists() and target.read_text() == text:
        return False
    write_atomically(target, text)
    return True


def check_seed(seed: Path, index: dict) -> None:
    """Every file the index names is in the seed at its size; else fail naming it."""
    for name, size in index["files"].items():
        path = seed / name
        if not path.is_file():
            raise StoreError(f"the seed lacks {describe_file(name)}")
        if path.stat().st_size != size:
            raise StoreError(
                f"the seed's {describe_file(name)} has {path.stat().st_size} bytes, "
                f"the index says {size}"
            )


def describe_file(name: str) -> str:
    """blob sha256:<hex> for a blob, the path for anything else."""
    match = DIGEST_FILE.match(Path(name).name)
    return f"blob sha256:{match.group(1)}" if match else str(name)


def read_index(seed: Path) -> tuple[dict, str]:
    """The seed's index and its digest, which names this seed in the marker."""
    try:
        text = (seed / INDEX_NAME).read_text()
        return json.loads(text), hashlib.sha256(text.encode()).hexdigest()
    except (OSError, ValueError) as exc:
        raise StoreError(f"the seed {seed} has no readable index {INDEX_NAME}: {exc}") from None


# -- disks and the file system ----------------------------------------------------------------


class Commands:
    """Runs the disk tools; tests give a recording one to check the exact commands."""

    def run(self, argv: list[str], check: bool = True) -> str:
        result = subprocess.run(
            argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise StoreError(
                f"{' '.join(argv)} failed: {detail[0] if detail else result.returncode}"
            )
        return result.stdout


def root_disks(
    mountinfo: Path = Path("/proc/self/mountinfo"), sys_block: Path = Path("/sys/block")
) -> set[str]:
    """Kernel names of the disk holding / (and its partitions): never to be formatted."""
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            major_minor = fields[2]
            break
    else:
        return set()
    names = set()
    for disk in sys_block.glob("*"):
        for node in [disk, *disk.glob(f"{disk.name}*")]:
            dev = node / "dev"
            if dev.is_file() and dev.read_text().strip() == major_minor:
                names.add(disk.name)
    return names


def instance_store_devices(
    override: list[str], dev: Path = Path("/dev"), sys_block: Path = Path("/sys/block")
) -> list[str]:
    """The instance-store NVMe disks: the given list (as found), else by id, else by the model
    sysfs reports; never the disk holding /."""
    if override:
        missing = [d for d in override if not Path(d).exists()]
        if missing:
            raise StoreError(
                f"NVMe devices {', '.join(missing)} do not exist (model_store_nvme_devices)"
            )
        return list(override)
    by_id = sorted(
        str(link.resolve())
        for link in (dev / "disk" / "by-id").glob("*Amazon_EC2_NVMe_Instance_Storage*")
        if "-part" not in link.name
    )
    found = list(dict.fromkeys(by_id))
    if not found:
        for model in sorted(sys_block.glob("nvme*/device/model")):
            if model.read_text().strip() == INSTANCE_STORE_MODEL:
                found.append(str(dev / model.parent.parent.name))
    excluded = root_disks(sys_block=sys_block)
    return [d for d in found if Path(d).name not in excluded]


@dataclass
class FileSystem:
    """The file system on the instance-store disks: what it is and how it is mounted."""

    devices: list[str]
    backend: str
    commands: Commands = field(default_factory=Commands)

    def describe(self) -> str:
        if len(self.devices) == 1:
            return "xfs on 1 disk"
        fs = "btrfs" if self.backend == "btrfs" else "xfs on mdadm"
        return f"{fs} raid0 over {len(self.devices)} disks"

    def probe(self, device: str, tag: str) -> str:
        return self.commands.run(
            ["blkid", "-p", "-o", "value", "-s", tag, device], check=False
        ).strip()

    def ours(self, device: str, fstype: str) -> bool:
        return self.probe(device, "TYPE") == fstype and self.probe(device, "LABEL") == LABEL

    def prepare(self) -> tuple[str, list[str]]:
        """Make the file system unless it is there from before this boot; return the device
        and the mount options."""
        if len(self.devices) == 1:
            return self._single()
        if self.backend == "btrfs":
            return self._btrfs()
        return self._mdadm()

    def _single(self) -> tuple[str, list[str]]:
        (device,) = self.devices
        if not self.ours(device, "xfs"):
            self.commands.run(["mkfs.xfs", "-f", "-L", LABEL, device])
        return device, ["noatime"]

    def _btrfs(self) -> tuple[str, list[str]]:
        uuids = {self.probe(d, "UUID") for d in self.devices}
        if not (all(self.ours(d, "btrfs") for d in self.devices) and len(uuids) == 1):
            self.commands.run(
                ["mkfs.btrfs", "-f", "-L", LABEL, "-d", "raid0", "-m", "raid1", *self.devices]
            )
        # No udev to scan for the other members: name them all.
        return self.devices[0], ["noatime", *(f"device={d}" for d in self.devices)]

    def _mdadm(self) -> tuple[str, list[str]]:
        # An array assembled at boot is listed here; a stale mdadm.conf is never read.
        if LABEL not in self.commands.run(["mdadm", "--detail", "--scan"]):
            self.commands.run(
                [
                    "mdadm",
                    "--create",
                    MD_DEVICE,
                    f"--name={LABEL}",
                    "--level=0",
                    f"--raid-devices={len(self.devices)}",
                    "--run",
                    "--force",
                    *self.devices,
                ]
            )
        if not self.ours(MD_DEVICE, "xfs"):
            self.commands.run(["mkfs.xfs", "-f", "-L", LABEL, MD_DEVICE])
        return MD_DEVICE, ["noatime"]

    def mount(self, mount_point: Path) -> None:
        if is_mount_point(mount_point):
            return
        device, options = self.prepare()
        mount_point.mkdir(parents=True, exist_ok=True)
        self.commands.run(["mount", "-o", ",".join(options), device, str(mount_point)])


def is_mount_point(path: Path) -> bool:
    target = str(path)
    with Path("/proc/self/mountinfo").open() as mountinfo:
        return any(line.split()[4] == target for line in mountinfo)


# -- copying ----------------------------------------------------------------------------------


def open_direct(path: Path, flags: int) -> int:
    """Open for direct I/O, past the page cache, where the file system allows it: a boot's
    copy of hundreds of GB has no use for the cache, and a real NVMe then writes by DMA."""
    try:
        return os.open(path, flags | os.O_DIRECT, 0o644)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return os.open(path, flags, 0o644)


def write_at(fd: int, buffer: mmap.mmap, count: int, offset: int) -> None:
    """Write the buffer's first count bytes at offset, whole. A block direct I/O cannot
    take (a file's last, partial block, or after a short write) goes through the page cache."""
    with memoryview(buffer)[:count] as block:
        if count % DIRECT_ALIGNMENT:
            buffered(fd)
        written = os.pwrite(fd, block, offset)
        if written < count:
            buffered(fd)
        while written < count:
            written += os.pwrite(fd, block[written:], offset + written)


def buffered(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)


def copy_verified(source: Path, target: Path, owner: tuple[int, int]) -> int:
    """Copy source to target through a temporary name in 16 MiB blocks, hashing each block
    as it passes; a blob whose sha256 is not the digest in its name is not renamed into
    place. Return the bytes copied.

    One block is read while the one before is hashed and the one before that written, so
    a single large blob (a model's weights) moves at the speed of the slowest of the three,
    not of their sum.
    """
    expected = DIGEST_FILE.match(source.name)
    partial = target.with_name(target.name + ".partial")
    hasher = hashlib.sha256()
    # Anonymous memory is page-aligned, as direct I/O needs: one buffer a stage.
    buffers = [mmap.mmap(-1, BLOCK) for _stage in range(3)]
    source_fd = open_direct(source, os.O_RDONLY)
    target_fd = -1
    try:
        target_fd = open_direct(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with ThreadPoolExecutor(max_workers=2) as io:
            reading = io.submit(os.preadv, source_fd, [buffers[0]], 0)
            writing = None
            offset = 0
            for index in itertools.count():
                count = reading.result()
                if not count:
                    break
                current = buffers[index % 3]
                reading = io.submit(
                    os.preadv, source_fd, [buffers[(index + 1) % 3]], offset + count
                )
                with memoryview(current)[:count] as block:
                    hasher.update(block)
                if writing is not None:
                    writing.result()
                writing = io.submit(write_at, target_fd, current, count, offset)
                offset += count
            if writing is not None:
                writing.result()
        os.fchown(target_fd, *owner)
        # On disk before it has its name: after a crash, a blob at its name is whole, which
        # is what checking sizes after a reboot relies on.
        os.fdatasync(target_fd)
    finally:
        os.close(source_fd)
        if target_fd >= 0:
            os.close(target_fd)
        for buffer in buffers:
            buffer.close()
    if expected and hasher.hexdigest() != expected.group(1):
        partial.unlink()
        raise StoreError(f"blob sha256:{expected.group(1)} reads as sha256:{hasher.hexdigest()}")
    partial.replace(target)
    return offset


@dataclass
class CopyReport:
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    skipped: int = 0

    def rate(self) -> float:
        """Bytes a second."""
        return self.bytes / self.seconds if self.seconds else 0.0


def human(count: float) -> str:
    """Bytes as MB or GB (powers of ten, as disks are sold)."""
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


def hydrate_files(
    seed: Path, store: Path, index: dict, workers: int, owner: tuple[int, int]
) -> CopyReport:
    """Copy every file of the index that the store lacks (or holds at another size): blobs
    first, largest first, several at a time; manifests last, so Ollama never sees a model
    whose blobs are not all there."""
    report = CopyReport()
    started = time.monotonic()
    wanted = [
        (Path(name), size)
        for name, size in index["files"].items()
        if not ((store / name).is_file() and (store / name).stat().st_size == size)
    ]
    report.skipped = len(index["files"]) - len(wanted)
    for directory in {(store / name).parent for name, _size in wanted} | {
        store / "blobs",
        store / "manifests",
    }:
        make_owned_dirs(directory, store.parent, owner)
    blobs = sorted((f for f in wanted if f[0].parts[0] == "blobs"), key=lambda f: -f[1])
    manifests = [f for f in wanted if f[0].parts[0] != "blobs"]

    def copy(item: tuple[Path, int]) -> int:
        name, _size = item
        try:
            return copy_verified(seed / name, store / name, owner)
        except StoreError:
            # Read once more: a transient read error is not a bad seed.
            return copy_verified(seed / name, store / name, owner)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        report.bytes += sum(pool.map(copy, blobs))
    report.bytes += sum(copy(item) for item in manifests)
    report.files = len(wanted)
    report.seconds = time.monotonic() - started
    return report


def make_owned_dirs(directory: Path, top: Path, owner: tuple[int, int]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for path in [directory, *directory.parents]:
        if path == top or top not in path.parents:
            break
        os.chown(path, *owner)


def sizes_match(store: Path, index: dict) -> bool:
    return all(
        (store / name).is_file() and (store / name).stat().st_size == size
        for name, size in index["files"].items()
    )


# -- hydrate ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    seed: Path
    mount_point: Path
    environment_file: Path
    owner: str = "ollama"
    devices: list[str] = field(default_factory=list)
    raid_backend: str = "mdadm"
    workers: int = 0
    # node exporter's textfile collector file; empty: no metrics.
    metrics_file: str = ""

    @property
    def store(self) -> Path:
        return self.mount_point / "ollama" / "models"

    @classmethod
    def load(cls, path: Path) -> Config:
        try:
            data = json.loads(path.read_text())
            data["seed"], data["mount_point"] = Path(data["seed"]), Path(data["mount_point"])
            data["environment_file"] = Path(data["environment_file"])
            config = cls(**data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"cannot read the configuration {path}: {exc}") from None
        if config.raid_backend not in ("mdadm", "btrfs"):
            raise StoreError(f"raid_backend {config.raid_backend!r} is neither mdadm nor btrfs")
        return config


def point_ollama_at(config: Config, models: Path, failed: bool = False) -> None:
    write_atomically(config.environment_file, f"OLLAMA_MODELS={models}\n")
    if config.metrics_file:
        on_seed = models == config.seed
        write_atomically(Path(config.metrics_file), boot_metrics(on_seed, failed, time.time()))


def boot_metrics(on_seed: bool, failed: bool, now: float) -> str:
    """What this boot chose, in Prometheus' text format."""
    metrics = (
        ("on_seed", "1 when Ollama serves the image's seed, not an instance-store copy.", on_seed),
        (
            "hydration_failed",
            "1 when this boot's copy failed and Ollama fell back to the seed.",
            failed,
        ),
        ("chosen_timestamp_seconds", "When the model store chose what Ollama serves.", now),
    )
    lines = []
    for name, text, value in metrics:
        metric = f"gpufleet_model_store_{name}"
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} gauge", f"{metric} {float(value)!r}"]
    return "\n".join(lines) + "\n"


def hydrate(config: Config, commands: Commands, log: Callable[[str], None] = print) -> int:
    """Return 0 when Ollama is to serve from the NVMe store or, with no NVMe, from the seed;
    1 when something failed and Ollama is pointed at the seed instead."""
    try:
        index, seed_digest = read_index(config.seed)
        check_seed(config.seed, index)
        devices = instance_store_devices(config.devices)
        if not devices:
            point_ollama_at(config, config.seed)
            log(f"no instance-store NVMe: Ollama serves the seed {config.seed}")
            return 0
        filesystem = FileSystem(devices, config.raid_backend, commands)
        filesystem.mount(config.mount_point)
        owner = owner_ids(config.owner)
        make_owned_dirs(config.store, config.mount_point, owner)
        marker = config.store.parent / MARKER_NAME
        if marker_digest(marker) == seed_digest and sizes_match(config.store, index):
            point_ollama_at(config, config.store)
            log(
                f"{len(index['files'])} files of the seed already on {config.mount_point} "
                f"({filesystem.describe()}): sizes checked, nothing copied"
            )
            return 0
        check_room(config, index)
        workers = config.workers or 2 * (os.cpu_count() or 1)
        report = hydrate_files(config.seed, config.store, index, workers, owner)
        write_atomically(marker, json.dumps({"seed": seed_digest, "finished": time.time()}) + "\n")
        point_ollama_at(config, config.store)
        kept = f"; {report.skipped} were there already" if report.skipped else ""
        log(
            f"hydrated {config.mount_point} ({filesystem.describe()}): {report.files} files, "
            f"{human(report.bytes)} in {report.seconds:.1f} s ({human(report.rate())}/s), "
            f"every blob's sha256 checked{kept}"
        )
        return 0
    except StoreError as exc:
        point_ollama_at(config, config.seed, failed=True)
        log(f"hydration failed: {exc}; Ollama serves the seed {config.seed} instead")
        return 1


def marker_digest(marker: Path) -> str:
    try:
        return str(json.loads(marker.read_text())["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def check_room(config: Config, index: dict) -> None:
    stat = os.statvfs(config.store)
    free = stat.f_bavail * stat.f_frsize
    present = sum(
        size
        for name, size in index["files"].items()
        if (config.store / name).is_file() and (config.store / name).stat().st_size == size
    )
    needed = index["bytes"] - present
    if needed > free:
        raise StoreError(
            f"the NVMe file system at {config.mount_point} has {human(free)} free, "
            f"the seed needs {human(needed)} more"
        )


def owner_ids(user: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise StoreError(f"user {user!r}, who should own the models, does not exist") from None
    return entry.pw_uid, entry.pw_gid


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        Path(temporary).chmod(0o644)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# -- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    missing = commands.add_parser("missing", help="print the models the seed lacks, one a line")
    missing.add_argument("--seed", type=Path, required=True)
    missing.add_argument("models", nargs="*")
    index = commands.add_parser("index", help="write the seed's index; print changed or unchanged")
    index.add_argument("--seed", type=Path, required=True)
    hydrate_parser = commands.add_parser("hydrate", help="copy the seed onto instance-store NVMe")
    hydrate_parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "missing":
            print("\n".join(missing_models(args.seed, args.models)))
            return 0
        if args.command == "index":
            print("changed" if write_index(args.seed) else "unchanged")
            return 0
        return hydrate(
            Config.load(args.config), Commands(), log=lambda line: print(line, flush=True)
        )
    except StoreError as exc:
        print(f"gpufleet_model_store: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
