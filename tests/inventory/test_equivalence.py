"""For the same moto data and an equivalent config, host names and keyed groups equal
amazon.aws.aws_ec2's: the drop-in promise."""

from ec2_moto import CREDENTIALS, REGION, fleet_tags, groups_of, launch, listing, write_source

KEYED_GROUPS = [
    {"key": "tags['gpufleet:role']", "prefix": "role"},
    {"key": "placement.availability_zone", "prefix": "az"},
    {"key": "instance_type", "prefix": "type"},
    {"key": "tags", "prefix": "tag"},
    {"key": "placement.region", "prefix": "region"},
]


def test_names_and_keyed_groups_match_aws_ec2(moto, tmp_path):
    launch(moto, fleet_tags("gpu-a"), "g4dn.xlarge", zone="us-east-1a", spot=True)
    launch(moto, fleet_tags("gpu-b", pool="batch"), "g5.xlarge", zone="us-east-1b", count=2)
    launch(moto, fleet_tags("lb-a", role="lb", model=""), "t3.medium", zone="us-east-1a")
    launch(moto, {"gpufleet:role": "gpu"}, "g6.xlarge")
    launch(moto, fleet_tags("west"), "g5.xlarge", region="us-west-2")
    common = {
        "regions": [REGION, "us-west-2"],
        "endpoint_url": moto,
        "aws_access_key": CREDENTIALS["aws_access_key_id"],
        "aws_secret_key": CREDENTIALS["aws_secret_access_key"],
        "filters": {"instance-state-name": ["running"]},
        "hostnames": ["tag:Name", "private-ip-address"],
        "keyed_groups": KEYED_GROUPS,
    }
    theirs = listing(
        write_source(tmp_path, {"plugin": "amazon.aws.aws_ec2", **common}, "x.aws_ec2.yml"),
        ANSIBLE_TRANSFORM_INVALID_GROUP_CHARS="always",
    )
    ours = listing(
        write_source(
            tmp_path, {"plugin": "gpufleet.fleet.gpufleet_ec2", "fleet_groups": False, **common}
        )
    )
    assert sorted(ours["_meta"]["hostvars"]) == sorted(theirs["_meta"]["hostvars"])
    their_groups = groups_of(theirs)
    their_groups.pop("aws_ec2")
    assert groups_of(ours) == their_groups
    assert "tag_gpufleet_role_gpu" in their_groups
