"""The GPU images' life after a bake: publish the newest, prune the old.

`gpufleet ami publish` reads the Packer manifest of a bake and writes each region's new
image id to an SSM parameter (/gpufleet/<role>/ami/latest), which launch templates
resolve at launch (resolve:ssm:...). `gpufleet ami prune --keep N` deregisters a role's
older images and deletes their snapshots, keeping the newest N, and never the image a
parameter names, nor one an instance (in any state but terminated) or a launch template
version uses.

AWS is reached through boto3's usual chain: credentials, AWS_REGION, and
AWS_ENDPOINT_URL for a local EC2 and SSM API (the tests' moto server).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions

ROLE_TAG = "gpufleet:role"
PARAMETER = "/gpufleet/{role}/ami/latest"
LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]


class AmiError(Exception):
    """One line naming the region, image, parameter or file at fault."""


@dataclass(frozen=True)
class Baked:
    """What a bake built: its images by region, and the role it was for."""

    images: dict[str, str]
    role: str


def read_manifest(path: Path) -> Baked:
    """The last run's images from Packer's manifest: artifact_id is region:ami-id pairs,
    comma-separated; a build over SSH has no image."""
    try:
        manifest = json.loads(path.read_text())
        builds = [
            b for b in manifest["builds"] if b["packer_run_uuid"] == manifest["last_run_uuid"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AmiError(f"cannot read the Packer manifest {path}: {exc}") from None
    images: dict[str, str] = {}
    role = "gpu"
    for build in builds:
        role = (build.get("custom_data") or {}).get(ROLE_TAG, role)
        for pair in str(build.get("artifact_id", "")).split(","):
            region, _colon, image = pair.partition(":")
            if image.startswith("ami-"):
                images[region] = image
    return Baked(images, role)


def parameter_name(template: str, role: str) -> str:
    return template.format(role=role)


def client(service: str, region: str) -> Any:
    return boto3.session.Session(region_name=region).client(service)


def aws(what: str, call: Callable[..., Any], **kwargs: Any) -> Any:
    """A call, with any AWS failure as one line naming what was being done."""
    try:
        return call(**kwargs)
    except botocore.exceptions.NoCredentialsError:
        raise AmiError(f"{what}: no AWS credentials") from None
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        raise AmiError(f"{what}: {error.get('Code')}: {error.get('Message')}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise AmiError(f"{what}: {exc}") from None


def publish(baked: Baked, template: str = PARAMETER) -> dict[str, str]:
    """Point each region's parameter at that region's new image; return region -> image."""
    name = parameter_name(template, baked.role)
    for region, image in sorted(baked.images.items()):
        ssm = client("ssm", region)
        aws(
            f"region {region}: writing {name}",
            ssm.put_parameter,
            Name=name,
            Value=image,
            Type="String",
            DataType="aws:ec2:image",
            Overwrite=True,
            Description=f"newest gpufleet {baked.role} image",
        )
    return dict(sorted(baked.images.items()))


@dataclass(frozen=True)
class Verdict:
    image: str
    created: str
    keep: bool
    why: str

    def __str__(self) -> str:
        action = "keep" if self.keep else "delete"
        return f"{action:<6} {self.image}  {self.created}  {self.why}"


def plan_prune(region: str, role: str, keep: int, template: str = PARAMETER) -> list[Verdict]:
    """Every image of the role in the region, newest first, each kept or not and why."""
    ec2 = client("ec2", region)
    images = aws(
        f"region {region}: listing {role} images",
        ec2.describe_images,
        Owners=["self"],
        Filters=[{"Name": f"tag:{ROLE_TAG}", "Values": [role]}],
    )["Images"]
    images.sort(key=lambda image: image.get("CreationDate", ""), reverse=True)
    protected = protected_images(region, role, [i["ImageId"] for i in images], template)
    verdicts = []
    for rank, image in enumerate(images):
        image_id = image["ImageId"]
        if image_id in protected:
            verdict = (True, protected[image_id])
        elif rank < keep:
            verdict = (True, f"one of the newest {keep}")
        else:
            verdict = (False, "older than the newest kept, unused")
        verdicts.append(Verdict(image_id, image.get("CreationDate", ""), *verdict))
    return verdicts


def protected_images(region: str, role: str, image_ids: list[str], template: str) -> dict[str, str]:
    """Images that must stay, and why: the published one, those instances or launch
    templates use."""
    protected: dict[str, str] = {}
    ssm = client("ssm", region)
    name = parameter_name(template, role)
    try:
        published = ssm.get_parameter(Name=name)["Parameter"]["Value"]
        protected[published] = f"published in {name}"
    except ssm.exceptions.ParameterNotFound:
        pass
    except botocore.exceptions.ClientError as exc:
        raise AmiError(f"region {region}: reading {name}: {exc}") from None
    if not image_ids:
        return protected
    ec2 = client("ec2", region)
    for page in ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": "image-id", "Values": image_ids},
            {"Name": "instance-state-name", "Values": LIVE_STATES},
        ]
    ):
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                protected.setdefault(instance["ImageId"], f"used by {instance['InstanceId']}")
    for template_id, version, image in launch_template_images(ec2):
        if image in image_ids:
            protected.setdefault(image, f"in launch template {template_id} version {version}")
    return protected


def launch_template_images(ec2: Any) -> Iterable[tuple[str, int, str]]:
    for page in ec2.get_paginator("describe_launch_templates").paginate():
        for template in page["LaunchTemplates"]:
            versions = ec2.get_paginator("describe_launch_template_versions").paginate(
                LaunchTemplateId=template["LaunchTemplateId"]
            )
            for version_page in versions:
                for version in version_page["LaunchTemplateVersions"]:
                    image = version.get("LaunchTemplateData", {}).get("ImageId", "")
                    yield template["LaunchTemplateId"], version["VersionNumber"], image


def prune(region: str, verdicts: list[Verdict]) -> None:
    """Deregister the images not kept and delete their snapshots."""
    ec2 = client("ec2", region)
    doomed = [v.image for v in verdicts if not v.keep]
    if not doomed:
        return
    images = aws(f"region {region}: reading images", ec2.describe_images, ImageIds=doomed)
    for image in images["Images"]:
        snapshots = [
            mapping["Ebs"]["SnapshotId"]
            for mapping in image.get("BlockDeviceMappings", [])
            if mapping.get("Ebs", {}).get("SnapshotId")
        ]
        aws(
            f"region {region}: deregistering {image['ImageId']}",
            ec2.deregister_image,
            ImageId=image["ImageId"],
        )
        for snapshot in snapshots:
            aws(f"region {region}: deleting {snapshot}", ec2.delete_snapshot, SnapshotId=snapshot)
