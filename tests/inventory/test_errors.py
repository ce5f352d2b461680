"""Bad input and a bad day at AWS: one clear line naming the option, region or credential."""

import pytest
from ec2_moto import (
    ANSIBLE_PLAYBOOK,
    REGION,
    fleet_tags,
    launch,
    listing,
    run_ansible,
    run_inventory,
    source_config,
    write_source,
)
from faults import FaultyEC2


def failure(source, **env):
    result = run_inventory(source, check=False, **env)
    assert result.returncode != 0, result.stdout
    return result.stderr


def test_an_unknown_option_is_named(moto, tmp_path):
    config = source_config(moto)
    config["regoins"] = ["us-east-1"]
    assert "gpufleet_ec2: unknown option 'regoins'" in failure(write_source(tmp_path, config))


def test_a_wrong_type_is_named(moto, tmp_path):
    config = source_config(moto, strict_permissions="maybe")
    stderr = failure(write_source(tmp_path, config))
    assert "strict_permissions" in stderr


@pytest.mark.parametrize("region", ["us-east-1a", "useast1", "US-EAST-1"])
def test_a_bad_region_is_named(moto, tmp_path, region):
    stderr = failure(write_source(tmp_path, source_config(moto, regions=[region])))
    assert f"gpufleet_ec2: regions: '{region}' is not an AWS region name" in stderr


def test_no_credentials(moto, tmp_path):
    config = source_config(moto)
    del config["aws_access_key"], config["aws_secret_key"]
    stderr = failure(
        write_source(tmp_path, config),
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_CONFIG_FILE="/nonexistent",
    )
    assert "gpufleet_ec2: no AWS credentials: set profile" in stderr


def test_an_unknown_profile_is_named(moto, tmp_path):
    config = source_config(moto, profile="nobody")
    del config["aws_access_key"], config["aws_secret_key"]
    stderr = failure(
        write_source(tmp_path, config),
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
    )
    assert "gpufleet_ec2: profile 'nobody' is not in the AWS config files" in stderr


def test_a_profile_from_the_config_files_works(moto, tmp_path):
    launch(moto, fleet_tags("gpu-a"))
    credentials = tmp_path / "credentials"
    credentials.write_text("[fleet]\naws_access_key_id = testing\naws_secret_access_key = x\n")
    config = source_config(moto, profile="fleet")
    del config["aws_access_key"], config["aws_secret_key"]
    data = listing(
        write_source(tmp_path, config),
        AWS_SHARED_CREDENTIALS_FILE=str(credentials),
        AWS_CONFIG_FILE="/nonexistent",
    )
    assert list(data["_meta"]["hostvars"]) == ["gpu-a"]


def test_an_unreachable_endpoint_names_the_region(tmp_path):
    config = source_config("http://127.0.0.1:9", max_attempts=2)
    stderr = failure(write_source(tmp_path, config))
    assert f"gpufleet_ec2: region {REGION}: cannot reach the EC2 endpoint" in stderr


def test_access_denied_fails_naming_the_region_unless_permissions_are_lenient(moto, tmp_path):
    launch(moto, fleet_tags("east"))
    launch(moto, fleet_tags("west"), region="us-west-2")
    with FaultyEC2(moto, denied={"us-west-2"}) as faulty:
        strict = source_config(faulty.url, regions=["us-east-1", "us-west-2"])
        stderr = failure(write_source(tmp_path, strict))
        assert "gpufleet_ec2: region us-west-2: access denied (UnauthorizedOperation)" in stderr
        lenient = source_config(
            faulty.url, regions=["us-east-1", "us-west-2"], strict_permissions=False
        )
        result = run_inventory(write_source(tmp_path, lenient))
        assert "region us-west-2 skipped: UnauthorizedOperation" in result.stderr
        assert '"east"' in result.stdout and '"west"' not in result.stdout


def test_throttling_is_retried_with_backoff(moto, tmp_path):
    launch(moto, fleet_tags("gpu-a"))
    with FaultyEC2(moto, throttle={REGION: 2}) as faulty:
        data = listing(write_source(tmp_path, source_config(faulty.url)))
        assert list(data["_meta"]["hostvars"]) == ["gpu-a"]
        assert faulty.throttle[REGION] == 0
    with FaultyEC2(moto, throttle={REGION: 50}) as faulty:
        stderr = failure(write_source(tmp_path, source_config(faulty.url, max_attempts=2)))
        assert f"gpufleet_ec2: region {REGION}: still throttled by EC2 after 2 attempts" in stderr
        assert faulty.calls[REGION] == 2


def test_assume_role_with_external_id(moto, tmp_path):
    launch(moto, fleet_tags("gpu-a"))
    config = source_config(
        moto,
        assume_role_arn="arn:aws:iam::123456789012:role/inventory",
        assume_role_external_id="gpufleet",
    )
    assert list(listing(write_source(tmp_path, config))["_meta"]["hostvars"]) == ["gpu-a"]


def test_ansible_doc_shows_documentation_and_examples():
    import subprocess
    import sys
    from pathlib import Path

    from ec2_moto import REPO, inventory_env

    doc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-doc"),
            "-t",
            "inventory",
            "gpufleet.fleet.gpufleet_ec2",
        ],
        capture_output=True,
        text=True,
        env=inventory_env(),
        cwd=REPO,
        check=True,
    ).stdout
    for expected in (
        "ami_outdated",
        "include_filters",
        "assume_role_external_id",
        "EXAMPLES",
        "plugin: gpufleet.fleet.gpufleet_ec2",
    ):
        assert expected in doc


def test_a_playbook_on_a_broken_source_fails_the_run(tmp_path):
    """A scheduled run must not report success on zero hosts when the inventory failed."""
    source = write_source(tmp_path, source_config("http://127.0.0.1:9", max_attempts=1))
    playbook = tmp_path / "patch.yml"
    playbook.write_text(
        "- name: Patch the fleet\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Say hello\n      ansible.builtin.debug:\n        msg: hello\n"
    )
    result = run_ansible(ANSIBLE_PLAYBOOK, "-i", str(source), str(playbook))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"gpufleet_ec2: region {REGION}: cannot reach the EC2 endpoint" in output
    assert "PLAY RECAP" not in output


def test_rejected_credentials_fail_whatever_strict_permissions_says(moto, tmp_path):
    launch(moto, fleet_tags("east"))
    with FaultyEC2(moto, rejected={"us-west-2"}) as faulty:
        lenient = source_config(
            faulty.url, regions=["us-east-1", "us-west-2"], strict_permissions=False
        )
        stderr = failure(write_source(tmp_path, lenient))
    assert "gpufleet_ec2: region us-west-2: credentials rejected (AuthFailure)" in stderr


@pytest.mark.parametrize(
    "answer", [b"Welcome to nginx!", b"<html><body>Welcome to nginx!</body></html>"]
)
def test_an_answer_that_is_not_ec2s_is_named(moto, tmp_path, answer):
    with FaultyEC2(moto, garbled={REGION: answer}) as faulty:
        stderr = failure(write_source(tmp_path, source_config(faulty.url)))
    assert f"gpufleet_ec2: region {REGION}: the endpoint's answer is not EC2's" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("include_filters", ["tag:Name=x"], "'include_filters' must be a list of mappings"),
        ("exclude_filters", [["tag:Name", "x"]], "'exclude_filters' must be a list of mappings"),
        ("regions", ["us-east-1", 7], "'regions' must be a list of strings, but holds 7"),
    ],
)
def test_list_elements_are_type_checked(moto, tmp_path, option, value, named):
    stderr = failure(write_source(tmp_path, source_config(moto, **{option: value})))
    assert f"gpufleet_ec2: option {named}" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("hostnames", "named"),
    [
        (["tag:Name", "nmae"], "hostnames: 'nmae' is not a hostname source"),
        ([{"name": "instance-id", "prefix": "tag"}], "hostnames: 'tag' is not a hostname source"),
        ([{"prefix": "tag:Name"}], "hostnames: {'prefix': 'tag:Name'} must have 'name'"),
        (["tag:"], "hostnames: 'tag:' is not a hostname source"),
    ],
)
def test_an_unknown_hostnames_entry_is_refused(moto, tmp_path, hostnames, named):
    launch(moto, fleet_tags("gpu-a"))
    stderr = failure(write_source(tmp_path, source_config(moto, hostnames=hostnames)))
    assert f"gpufleet_ec2: {named}" in stderr
