"""A region on the tests' moto server as gpufleet meets one: clients, subnets across zones,
and GPU images as a bake leaves them."""

from __future__ import annotations

import boto3

from gpufleet.lab.ec2 import CREDENTIALS


def aws(endpoint: str, service: str, region: str = "us-east-1"):
    return boto3.client(service, region_name=region, endpoint_url=endpoint, **CREDENTIALS)


def subnets_in(endpoint: str, cidr: str, zones: list[str]) -> list[str]:
    """A VPC of cidr (a /16) with one /24 subnet per zone listed, in that order."""
    ec2 = aws(endpoint, "ec2")
    vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    prefix = cidr.rsplit(".", 2)[0]
    return [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"{prefix}.{i}.0/24", AvailabilityZone=zone)[
            "Subnet"
        ]["SubnetId"]
        for i, zone in enumerate(zones)
    ]


def baked_image(endpoint: str, name: str, role: str = "gpu", region: str = "us-east-1") -> str:
    """An image as a bake leaves it: made from an instance, tagged with its role."""
    ec2 = aws(endpoint, "ec2", region)
    base = sorted(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])[0]
    instance = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1, InstanceType="c6i.large")
    instance_id = instance["Instances"][0]["InstanceId"]
    image = ec2.create_image(InstanceId=instance_id, Name=name)["ImageId"]
    ec2.create_tags(Resources=[image], Tags=[{"Key": "gpufleet:role", "Value": role}])
    ec2.terminate_instances(InstanceIds=[instance_id])
    return image
