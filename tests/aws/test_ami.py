"""gpufleet ami publish and prune against a real moto server: the parameter a launch template
resolves, and old images pruned with their snapshots, never one still in use."""

import json
import os
import subprocess
import sys
import time

import pytest
from moto_region import aws, baked_image

from gpufleet.lab.ec2 import CREDENTIALS

PARAMETER = "/gpufleet/gpu/ami/latest"


def aws_env(endpoint, **extra):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {
        **environment,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }


def gpufleet(endpoint, *args, **env):
    return subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", *args],
        capture_output=True,
        text=True,
        env=aws_env(endpoint, **env),
        timeout=120,
        check=False,
    )


def manifest(tmp_path, artifact, role="gpu"):
    """What Packer's manifest post-processor writes, two runs, the last one ours."""
    path = tmp_path / "packer-manifest.json"
    path.write_text(
        json.dumps(
            {
                "builds": [
                    {
                        "name": "gpu",
                        "builder_type": "amazon-ebs",
                        "build_time": 1700000000,
                        "files": None,
                        "artifact_id": "us-east-1:ami-0000000000000000a",
                        "packer_run_uuid": "earlier",
                        "custom_data": {"gpufleet:role": role},
                    },
                    {
                        "name": "gpu",
                        "builder_type": "amazon-ebs",
                        "build_time": 1700003600,
                        "files": None,
                        "artifact_id": artifact,
                        "packer_run_uuid": "latest",
                        "custom_data": {"gpufleet:role": role},
                    },
                ],
                "last_run_uuid": "latest",
            }
        )
    )
    return path


def test_publish_points_each_regions_parameter_at_its_new_image(moto, tmp_path):
    east = baked_image(moto, "gpufleet-gpu-east")
    west = baked_image(moto, "gpufleet-gpu-west", region="us-west-2")
    path = manifest(tmp_path, f"us-east-1:{east},us-west-2:{west}")
    outputs = tmp_path / "github-output"
    result = gpufleet(moto, "ami", "publish", "--manifest", str(path), GITHUB_OUTPUT=str(outputs))
    assert result.returncode == 0, result.stderr
    assert f"bake: us-east-1 {east} published in {PARAMETER}" in result.stdout
    for region, image in (("us-east-1", east), ("us-west-2", west)):
        parameter = aws(moto, "ssm", region).get_parameter(Name=PARAMETER)["Parameter"]
        assert (parameter["Value"], parameter["DataType"]) == (image, "aws:ec2:image")
    assert outputs.read_text() == f'ami_ids={{"us-east-1": "{east}", "us-west-2": "{west}"}}\n'


def test_a_build_over_ssh_has_nothing_to_publish(moto, tmp_path):
    result = gpufleet(moto, "ami", "publish", "--manifest", str(manifest(tmp_path, "Null")))
    assert result.returncode == 0
    assert "names no image (a build over SSH): nothing to publish" in result.stdout


def test_a_manifest_that_is_not_packers_is_named(moto, tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text('{"builds": "none"}')
    result = gpufleet(moto, "ami", "publish", "--manifest", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"gpufleet ami publish: cannot read the Packer manifest {path}")


def test_prune_keeps_the_newest_and_every_image_in_use(moto):
    images = []
    for name in "abcde":
        images.append(baked_image(moto, f"gpufleet-gpu-{name}"))
        time.sleep(1.05)  # EC2 gives creation dates to the second
    oldest, running, templated, doomed, newest = images
    other_role = baked_image(moto, "gpufleet-lb", role="lb")
    ec2 = aws(moto, "ec2")
    aws(moto, "ssm").put_parameter(
        Name=PARAMETER, Value=oldest, Type="String", DataType="aws:ec2:image"
    )
    instance = ec2.run_instances(ImageId=running, MinCount=1, MaxCount=1, InstanceType="g5.xlarge")
    ec2.create_launch_template(
        LaunchTemplateName="gpu-old", LaunchTemplateData={"ImageId": templated}
    )
    snapshots = [
        m["Ebs"]["SnapshotId"]
        for m in ec2.describe_images(ImageIds=[doomed])["Images"][0]["BlockDeviceMappings"]
    ]

    dry = gpufleet(moto, "ami", "prune", "--keep", "1", "--dry-run", AWS_REGION="us-east-1")
    assert dry.returncode == 0, dry.stderr
    assert "us-east-1: 4 kept, 1 would go" in dry.stdout
    assert len(ec2.describe_images(ImageIds=images)["Images"]) == 5

    result = gpufleet(moto, "ami", "prune", "--keep", "1", "--region", "us-east-1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    instance_id = instance["Instances"][0]["InstanceId"]
    for image, why in (
        (newest, "one of the newest 1"),
        (oldest, f"published in {PARAMETER}"),
        (running, f"used by {instance_id}"),
        (templated, "in launch template lt-"),
    ):
        assert any(line.startswith(f"us-east-1  keep   {image}") and why in line for line in lines)
    assert any(line.startswith(f"us-east-1  delete {doomed}") for line in lines)
    left = {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}
    assert left == {oldest, running, templated, newest, other_role}
    owned = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not set(snapshots) & owned


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--keep", "0", "--region", "us-east-1"], "--keep 0: keep at least the newest image"),
        (["--keep", "2"], "no region: give --region or set AWS_REGION"),
    ],
)
def test_prune_refuses_what_cannot_be_right(moto, args, line):
    result = gpufleet(moto, "ami", "prune", *args)
    assert result.returncode == 2
    assert result.stderr.strip() == f"gpufleet ami prune: {line}"
