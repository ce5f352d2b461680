"""The lab's images: what a bake left on a host's disk, kept as an AMI is.

`gpufleet lab bake HOST` keeps the host's disk (its overlay's upper layer, over the lab's
rootfs) as an image directory under the lab's cache, and registers it in the local EC2 API
with `create_image` and the bake's own image tags (the Packer manifest's custom data), plus
the audit's verdict on the disk read from outside. `lab launch` makes hosts from it; `lab
down` removes the images with the EC2 API that knows them.

`gpufleet lab derive-image SOURCE` makes a new image from a kept one, as a build from a
source AMI that only adds files (Packer's file provisioner) makes it: a layer of those files
over the source's, registered with `copy_image` and the source's tags. The lab's rollout tests
roll a pool onto one, and onto one whose Ollama cannot start.

    <cache>/images/<ami-id>/disk        the upper layer: the bake's changes to the rootfs
    <cache>/images/<ami-id>/image.json  the record below
"""

from __future__ import annotations

import datetime
import errno
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from gpufleet import tags
from gpufleet.lab import LabError, ec2
from gpufleet.lab.system import mount_overlay, run
from gpufleet.lab.topology import LabPaths, LabTopology

AUDIT_TAG = "gpufleet:audit"
SOURCE_HOST_TAG = "gpufleet:lab-source-host"
DERIVED_TAG = "gpufleet:lab-derived-from"
MODELS_TAG = "gpufleet:models"
CLEAN = "clean"


@dataclass(frozen=True)
class Image:
    image_id: str
    name: str
    source_host: str
    models: list[str]
    # "clean", or "failed: " and the first finding of the audit read from outside.
    audit: str
    baked_at: str
    # What the disk lies over, as overlayfs's lowerdir: the lab's rootfs, or a source
    # image's disk and what that lies over.
    rootfs: str

    @property
    def launchable(self) -> bool:
        return self.audit == CLEAN


def images_dir(paths: LabPaths) -> Path:
    return paths.cache / "images"


def disk(paths: LabPaths, image_id: str) -> Path:
    return images_dir(paths) / image_id / "disk"


def keep(
    paths: LabPaths,
    topology: LabTopology,
    host_name: str,
    upper: Path,
    rootfs: Path,
    image_tags: dict[str, str],
    audit: str,
) -> Image:
    """Register the image and move the host's upper layer into its directory (the host is
    stopped and unmounted: its disk is the image's now)."""
    client = ec2.client(topology)
    instance_id = ec2.lab_instances(client)[host_name]
    name = image_tags.get(tags.NAME) or f"gpufleet-gpu-lab-{host_name}"
    created = client.create_image(InstanceId=instance_id, Name=name, Description="gpufleet (lab)")
    image_id = created["ImageId"]
    all_tags = {**image_tags, tags.ENV: ec2.LAB_ENV, AUDIT_TAG: audit, SOURCE_HOST_TAG: host_name}
    client.create_tags(
        Resources=[image_id], Tags=[{"Key": k, "Value": v} for k, v in all_tags.items()]
    )
    image = Image(
        image_id=image_id,
        name=name,
        source_host=host_name,
        models=all_tags.get(MODELS_TAG, "").split(),
        audit=audit,
        baked_at=all_tags.get("gpufleet:baked-at", ""),
        rootfs=str(rootfs),
    )
    directory = images_dir(paths) / image_id
    directory.mkdir(parents=True)
    _move_disk(upper, directory / "disk")
    (directory / "image.json").write_text(json.dumps(asdict(image), indent=2) + "\n")
    return image


def derive(
    paths: LabPaths,
    topology: LabTopology,
    source_id: str,
    files: dict[str, str],
    audit: Callable[[Path], str],
) -> Image:
    """A new image: the source's disk with `files` (absolute path -> text) added over it,
    registered with the source's tags and a new bake time, and audited from outside (audit:
    the image audit on a root, "clean" or "failed: ...")."""
    source = find(paths, source_id)
    client = ec2.client(topology)
    described = client.describe_images(ImageIds=[source_id])["Images"][0]
    baked_at = datetime.datetime.now(datetime.UTC).isoformat()
    name = f"{source.name}-derived-{baked_at.replace(':', '')[:17]}"
    image_id = client.copy_image(SourceImageId=source_id, SourceRegion=topology.region, Name=name)[
        "ImageId"
    ]
    found_tags = {t["Key"]: t["Value"] for t in described.get("Tags", [])}
    found_tags.update({tags.NAME: name, "gpufleet:baked-at": baked_at, DERIVED_TAG: source_id})
    directory = images_dir(paths) / image_id
    layer = directory / "disk"
    for path, text in files.items():
        target = layer / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    image = Image(
        image_id=image_id,
        name=name,
        source_host=source.source_host,
        models=source.models,
        audit="",
        baked_at=baked_at,
        rootfs=lower_dirs(paths, source),
    )
    (directory / "image.json").write_text(json.dumps(asdict(image), indent=2) + "\n")
    with mounted(paths, image_id) as root:
        image = replace(image, audit=audit(root))
    found_tags[AUDIT_TAG] = image.audit
    client.create_tags(
        Resources=[image_id], Tags=[{"Key": k, "Value": v} for k, v in found_tags.items()]
    )
    (directory / "image.json").write_text(json.dumps(asdict(image), indent=2) + "\n")
    return image


def _move_disk(upper: Path, target: Path) -> None:
    """Rename the layer; across file systems, copy it whole: overlayfs's whiteouts (device
    files) and opaque directories (xattrs) included, which shutil's copy would not keep."""
    try:
        upper.rename(target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        run(["cp", "-a", "--preserve=all", str(upper), str(target)])
        shutil.rmtree(upper)


def listed(paths: LabPaths) -> list[Image]:
    records = sorted(images_dir(paths).glob("*/image.json"))
    return [Image(**json.loads(record.read_text())) for record in records]


def find(paths: LabPaths, image_id: str) -> Image:
    kept = listed(paths)
    for image in kept:
        if image.image_id == image_id:
            return image
    known = ", ".join(i.image_id for i in kept) or "none: `gpufleet lab bake` makes one"
    raise LabError(f"the lab has no image {image_id!r} (its images: {known}); nothing launched")


def lower_dirs(paths: LabPaths, image: Image) -> str:
    """overlayfs's lowerdir for a host launched from the image: its disk over the rootfs."""
    return f"{disk(paths, image.image_id)}:{image.rootfs}"


@contextmanager
def mounted(paths: LabPaths, image_id: str) -> Iterator[Path]:
    """The image's files, read-only, as one reads an AMI's snapshot from another instance."""
    image = find(paths, image_id)
    with tempfile.TemporaryDirectory(prefix="gpufleet-image-") as mount_point:
        mount_overlay(mount_point, f"ro,lowerdir={lower_dirs(paths, image)}")
        try:
            yield Path(mount_point)
        finally:
            run(["umount", mount_point])


def remove_all(paths: LabPaths) -> None:
    if images_dir(paths).exists():
        shutil.rmtree(images_dir(paths))


def manifest_tags(manifest: Path) -> dict[str, Any]:
    """The image tags the bake's manifest post-processor recorded for its last build."""
    try:
        builds = json.loads(manifest.read_text())["builds"]
    except (OSError, ValueError, KeyError):
        return {}
    return dict(builds[-1].get("custom_data") or {}) if builds else {}
