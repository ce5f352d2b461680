"""gpufleet_ec2 against a real moto server: naming, fleet groups, host variables, options."""

import json
import sys
import time

import pytest
from ec2_moto import (
    ANSIBLE_PLAYBOOK,
    REGION,
    ec2,
    fleet_tags,
    groups_of,
    launch,
    listing,
    plain,
    run_ansible,
    run_inventory,
    source_config,
    write_source,
)


def hostvars(data, host):
    return plain(data["_meta"]["hostvars"][host])


def test_fleet_groups_and_host_variables(moto, tmp_path):
    launch(moto, fleet_tags("gpu-a"), "g4dn.xlarge", spot=True, zone="us-east-1a")
    launch(
        moto,
        fleet_tags("gpu-b", model="qwen2.5:7b", **{"gpufleet:alias": "chat"}),
        "g5.12xlarge",
        zone="us-east-1b",
    )
    launch(
        moto, fleet_tags("lb-a", role="lb", pool="edge", model=""), "t3.medium", zone="us-east-1a"
    )
    result = run_inventory(write_source(tmp_path, source_config(moto)))
    assert "WARNING" not in result.stderr, result.stderr
    data = json.loads(result.stdout)
    groups = groups_of(data)
    assert groups["role_gpu"] == ["gpu-a", "gpu-b"]
    assert groups["role_lb"] == ["lb-a"]
    assert groups["pool_chat"] == ["gpu-a", "gpu-b"]
    assert groups["model_llama3_1_8b"] == ["gpu-a"]
    assert groups["model_qwen2_5_7b"] == ["gpu-b"]
    assert groups["alias_chat"] == ["gpu-b"]
    assert groups["lifecycle_spot"] == ["gpu-a"]
    assert groups["lifecycle_on_demand"] == ["gpu-b", "lb-a"]
    assert groups["az_us_east_1a"] == ["gpu-a", "lb-a"]
    assert groups["family_g5"] == ["gpu-b"]
    gpu_b = hostvars(data, "gpu-b")
    described = ec2(moto).describe_instances(InstanceIds=[gpu_b["ec2_instance_id"]])
    private_ip = described["Reservations"][0]["Instances"][0]["PrivateIpAddress"]
    assert gpu_b["ansible_host"] == gpu_b["ec2_private_ip"] == private_ip
    assert (gpu_b["ec2_gpu_count"], gpu_b["ec2_gpu_model"], gpu_b["ec2_gpu_memory_gib"]) == (
        4,
        "NVIDIA A10G",
        24,
    )
    assert gpu_b["ec2_instance_type"] == "g5.12xlarge"
    assert gpu_b["ec2_lifecycle"] == "on_demand"
    assert gpu_b["ec2_region"] == REGION
    assert gpu_b["ec2_availability_zone"] == "us-east-1b"
    assert gpu_b["ec2_ami_id"].startswith("ami-")
    assert gpu_b["ec2_tags"]["gpufleet:model"] == "qwen2.5:7b"
    assert gpu_b["ec2_tags"]["gpufleet:role"] == "gpu"
    assert "tags" not in gpu_b
    # The fleet's model of the host, which the playbooks and filters read.
    fleet_model = {key: gpu_b[key] for key in gpu_b if key.startswith("gpufleet_")}
    assert fleet_model == {
        "gpufleet_role": "gpu",
        "gpufleet_pool": gpu_b["ec2_tags"].get("gpufleet:pool", ""),
        "gpufleet_model": "qwen2.5:7b",
        "gpufleet_alias": "chat",
    }
    lb = hostvars(data, "lb-a")
    assert (lb["ec2_gpu_count"], lb["ec2_gpu_model"]) == (0, "")
    assert (lb["gpufleet_role"], lb["gpufleet_model"]) == ("lb", "")


def test_only_running_and_pending_by_default(moto, tmp_path):
    (stopped,) = launch(moto, fleet_tags("stopped"))
    launch(moto, fleet_tags("running"))
    ec2(moto).stop_instances(InstanceIds=[stopped])
    assert sorted(listing(write_source(tmp_path, source_config(moto)))["_meta"]["hostvars"]) == [
        "running"
    ]
    config = source_config(moto, filters={"instance-state-name": ["stopped"]})
    assert list(listing(write_source(tmp_path, config))["_meta"]["hostvars"]) == ["stopped"]


def test_filters_include_and_exclude(moto, tmp_path):
    launch(moto, fleet_tags("prod-1"))
    launch(moto, fleet_tags("prod-2", maintenance="true"))
    launch(moto, fleet_tags("staging-1", env="staging"))
    launch(moto, fleet_tags("dev-1", env="dev"))
    config = source_config(
        moto,
        filters={"tag:gpufleet:env": "prod"},
        include_filters=[{"tag:gpufleet:env": ["staging"]}],
        exclude_filters=[{"tag:maintenance": "true"}],
    )
    hosts = sorted(listing(write_source(tmp_path, config))["_meta"]["hostvars"])
    assert hosts == ["prod-1", "staging-1"]


def test_hostnames_preferences(moto, tmp_path):
    (unnamed,) = launch(moto, {"gpufleet:role": "gpu"})
    launch(moto, fleet_tags("named"))
    data = listing(write_source(tmp_path, source_config(moto)))
    assert sorted(data["_meta"]["hostvars"]) == sorted(["named", unnamed])

    by_ip = listing(write_source(tmp_path, source_config(moto, hostnames=["private-ip-address"])))
    assert all(h.count(".") == 3 for h in by_ip["_meta"]["hostvars"])

    tagged = listing(
        write_source(tmp_path, source_config(moto, hostnames=["tag:gpufleet:role=gpu"]))
    )
    assert sorted(tagged["_meta"]["hostvars"]) == ["gpufleet_role_gpu"]

    prefixed = listing(
        write_source(
            tmp_path,
            source_config(
                moto,
                hostnames=[{"name": "tag:Name", "prefix": "tag:gpufleet:role", "separator": "-"}],
            ),
        )
    )
    assert sorted(prefixed["_meta"]["hostvars"]) == ["gpu-named"]


def test_compose_keyed_groups_groups_and_leading_separator(moto, tmp_path):
    launch(moto, fleet_tags("gpu-a", team="ml"), "g6.xlarge")
    launch(moto, fleet_tags("gpu-b"), "g6e.48xlarge")
    config = source_config(
        moto,
        fleet_groups=False,
        compose={
            "ollama_port": 11434,
            "zone": "placement.availability_zone",
            "gpus_text": "ec2_gpu_count | string",
        },
        keyed_groups=[
            {"key": "tags['team'] | default('')", "prefix": "team", "default_value": "none"},
            {"key": "instance_type", "parent_group": "types"},
            {"key": "ec2_tags['gpufleet:pool']", "separator": ""},
        ],
        groups={"big_gpu": "ec2_gpu_count >= 8"},
        leading_separator=False,
    )
    data = listing(write_source(tmp_path, config))
    groups = groups_of(data)
    assert groups["team_ml"] == ["gpu-a"]
    assert groups["team_none"] == ["gpu-b"]
    assert groups["g6_xlarge"] == ["gpu-a"]
    assert groups["chat"] == ["gpu-a", "gpu-b"]
    assert groups["big_gpu"] == ["gpu-b"]
    assert "role_gpu" not in groups
    assert sorted(data["types"]["children"]) == ["g6_xlarge", "g6e_48xlarge"]
    gpu_b = hostvars(data, "gpu-b")
    assert gpu_b["ollama_port"] == 11434
    assert gpu_b["zone"] == gpu_b["ec2_availability_zone"]
    assert gpu_b["gpus_text"] == "8"
    assert (gpu_b["ec2_gpu_model"], gpu_b["ec2_gpu_memory_gib"]) == ("NVIDIA L40S", 48)


def test_strict_fails_on_an_undefined_variable_and_names_it(moto, tmp_path):
    launch(moto, fleet_tags("gpu-a"))
    lenient = source_config(moto, compose={"x": "no_such_var"}, strict=False)
    assert "x" not in hostvars(listing(write_source(tmp_path, lenient)), "gpu-a")
    strict = source_config(moto, compose={"x": "no_such_var"}, strict=True)
    result = run_inventory(write_source(tmp_path, strict), check=False)
    assert result.returncode != 0
    assert "gpufleet_ec2: Could not set x for host gpu-a" in result.stderr


def test_ami_outdated_and_asg_groups(moto, tmp_path):
    client = ec2(moto)
    (builder,) = launch(moto, {"Name": "builder"})
    old = client.create_image(InstanceId=builder, Name="gpufleet-gpu-1")["ImageId"]
    client.create_tags(Resources=[old], Tags=[{"Key": "gpufleet:role", "Value": "gpu"}])
    time.sleep(1.1)
    new = client.create_image(InstanceId=builder, Name="gpufleet-gpu-2")["ImageId"]
    client.create_tags(Resources=[new], Tags=[{"Key": "gpufleet:role", "Value": "gpu"}])
    client.terminate_instances(InstanceIds=[builder])
    launch(moto, fleet_tags("on-old", **{"aws:autoscaling:groupName": "gpu-asg"}), image_id=old)
    launch(moto, fleet_tags("on-new"), image_id=new)
    launch(moto, fleet_tags("lb-base", role="lb", model=""))
    data = listing(write_source(tmp_path, source_config(moto)))
    groups = groups_of(data)
    assert groups["ami_outdated"] == ["on-old"]
    assert groups["asg_gpu_asg"] == ["on-old"]
    on_old = hostvars(data, "on-old")
    assert on_old["ec2_ami_name"] == "gpufleet-gpu-1"
    assert on_old["ec2_ami_creation_date"] < hostvars(data, "on-new")["ec2_ami_creation_date"]


def test_regions_are_all_listed(moto, tmp_path):
    launch(moto, fleet_tags("east"))
    launch(moto, fleet_tags("west"), region="us-west-2")
    launch(moto, fleet_tags("eu"), region="eu-west-1")
    config = source_config(moto, regions=["us-east-1", "us-west-2", "eu-west-1"])
    data = listing(write_source(tmp_path, config))
    regions = {h: plain(v)["ec2_region"] for h, v in data["_meta"]["hostvars"].items()}
    assert regions == {"east": "us-east-1", "west": "us-west-2", "eu": "eu-west-1"}


def test_warm_cache_answers_without_calling_ec2(moto, tmp_path):
    launch(moto, fleet_tags("gpu-a"))
    cache = {
        "cache": True,
        "cache_plugin": "ansible.builtin.jsonfile",
        "cache_connection": str(tmp_path / "cache"),
        "cache_timeout": 600,
    }
    source = write_source(tmp_path, source_config(moto, **cache))
    cold = listing(source)
    # Same source, EC2 now unreachable: only the cache can answer.
    write_source(tmp_path, source_config("http://127.0.0.1:9", max_attempts=1, **cache))
    assert listing(source) == cold


def test_hostile_tag_values_never_crash_or_make_invalid_group_names(moto, tmp_path):
    import re

    hostile = [
        "with spaces",
        'quote"s',
        "it's",
        "a:b:c",
        "a/b/c",
        "ünïcödé-模型",
        "",
        "x" * 256,
        "{{ lookup('pipe', 'id') }}",
        "-leading-dash",
        "9starts-with-digit",
    ]
    for index, value in enumerate(hostile):
        launch(moto, fleet_tags(f"h{index}", pool=value, model=value, role=value, team=value))
    config = source_config(
        moto, keyed_groups=[{"key": "ec2_tags['team']", "prefix": "team"}, {"key": "tags.team"}]
    )
    data = listing(write_source(tmp_path, config))
    assert len(data["_meta"]["hostvars"]) == len(hostile)
    for group in data:
        assert group == "_meta" or re.fullmatch(r"[^\W\d]\w*", group), group
    templated = plain(data["_meta"]["hostvars"]["h8"])["ec2_tags"]["team"]
    assert templated == "{{ lookup('pipe', 'id') }}"


def test_a_hostname_given_twice_is_named_and_fails_under_strict(moto, tmp_path):
    # The plugin lists instances by id, so the first kept is the lowest.
    first, second = sorted(launch(moto, fleet_tags("gpu-a"), count=2))
    launch(moto, {"gpufleet:role": "gpu"})
    config = source_config(moto, hostnames=["tag:Name"])
    result = run_inventory(write_source(tmp_path, config))
    assert sorted(json.loads(result.stdout)["_meta"]["hostvars"]) == ["gpu-a"]
    warnings = " ".join(result.stderr.split())
    assert f"hostname gpu-a is given to {first}, {second}; only {first} is listed" in warnings
    assert "no hostnames entry has a value for i-" in warnings
    strict = run_inventory(write_source(tmp_path, dict(config, strict=True)), check=False)
    assert strict.returncode != 0
    assert f"gpufleet_ec2: hostname gpu-a is given to {first}, {second}" in strict.stderr


@pytest.mark.parametrize(
    ("tagged", "listed", "warned"),
    [
        (["x" * 300, "x" * 299 + "y"], None, "300 bytes, over 200"),
        (["team/gpu-a", "team/gpu-b"], ["team_gpu-a", "team_gpu-b"], "holds a '/'"),
    ],
)
def test_a_hostname_the_fact_cache_cannot_take_is_fitted_and_plays_run(
    moto, tmp_path, tagged, listed, warned
):
    for name in tagged:
        launch(moto, fleet_tags(name))
    config = source_config(
        moto,
        hostnames=["tag:Name"],
        # The hosts are this machine, so the play gathers facts and caches them for real.
        compose={
            "ansible_connection": "'local'",
            "ansible_python_interpreter": repr(sys.executable),
        },
    )
    source = write_source(tmp_path, config)
    result = run_inventory(source)
    names = sorted(json.loads(result.stdout)["_meta"]["hostvars"])
    if listed is None:
        assert len(names) == 2 and all(len(n.encode()) == 200 for n in names), names
    else:
        assert names == listed
    assert "hostname of i-" in result.stderr and warned in " ".join(result.stderr.split())
    playbook = tmp_path / "facts.yml"
    playbook.write_text(
        "- name: Gather facts on every host\n  hosts: all\n  gather_facts: true\n"
        "  tasks:\n    - name: Show the host's name\n      ansible.builtin.debug:\n"
        "        var: ansible_facts.nodename\n"
    )
    facts = tmp_path / "facts"
    played = run_ansible(
        ANSIBLE_PLAYBOOK,
        "-i",
        str(source),
        str(playbook),
        ANSIBLE_CACHE_PLUGIN_CONNECTION=str(facts),
        ANSIBLE_GATHER_SUBSET="min",
    )
    assert played.returncode == 0, played.stdout[-3000:] + played.stderr[-3000:]
    assert len(list(facts.iterdir())) == 2


def cached_source(tmp_path, endpoint, connection):
    cache = {
        "cache": True,
        "cache_plugin": "ansible.builtin.jsonfile",
        "cache_connection": str(connection),
        "cache_timeout": 600,
    }
    return write_source(tmp_path, source_config(endpoint, **cache))


def warm_cache_entry(tmp_path, endpoint):
    """A source with a warm jsonfile cache, and the cache's one file."""
    source = cached_source(tmp_path, endpoint, tmp_path / "cache")
    listing(source)
    (entry,) = (tmp_path / "cache").iterdir()
    return source, entry


def test_a_cache_entry_of_the_wrong_shape_is_replaced_from_ec2(moto, tmp_path):
    launch(moto, fleet_tags("gpu-a"))
    source, entry = warm_cache_entry(tmp_path, moto)
    envelope = json.loads(entry.read_text())
    envelope["__payload__"] = json.dumps(json.dumps({"hosts": ["gpu-a"], "groups": {}}))
    entry.write_text(json.dumps(envelope))
    result = run_inventory(source)
    assert list(json.loads(result.stdout)["_meta"]["hostvars"]) == ["gpu-a"]
    assert "is not an inventory this plugin wrote" in " ".join(result.stderr.split())
    # Replaced: the same source, EC2 now unreachable, answers from the cache.
    assert cached_source(tmp_path, "http://127.0.0.1:9", tmp_path / "cache") == source
    assert list(listing(source)["_meta"]["hostvars"]) == ["gpu-a"]


def test_a_cache_file_of_another_format_is_warned_about_and_ec2_answers(moto, tmp_path):
    launch(moto, fleet_tags("gpu-a"))
    source, entry = warm_cache_entry(tmp_path, moto)
    entry.write_text('"written by something else"')
    result = run_inventory(source)
    assert list(json.loads(result.stdout)["_meta"]["hostvars"]) == ["gpu-a"]
    assert "gpufleet_ec2: the inventory cache cannot be read" in " ".join(result.stderr.split())


def test_an_unreadable_cache_entry_is_warned_about_and_ec2_answers(moto, tmp_path):
    launch(moto, fleet_tags("gpu-a"))
    source, entry = warm_cache_entry(tmp_path, moto)
    entry.unlink()
    entry.mkdir()
    (entry / "in-the-way").write_text("")
    result = run_inventory(source)
    assert list(json.loads(result.stdout)["_meta"]["hostvars"]) == ["gpu-a"]
    warnings = " ".join(result.stderr.split())
    assert "gpufleet_ec2: the inventory cache cannot be read" in warnings
    # Writing fails too; Ansible's cache plugin says so itself, and the run goes on.
    assert "cache plugin while trying to move" in warnings


def test_a_cache_directory_that_cannot_be_used_leaves_the_cache_out(moto, tmp_path):
    launch(moto, fleet_tags("gpu-a"))
    in_the_way = tmp_path / "not-a-directory"
    in_the_way.write_text("")
    result = run_inventory(cached_source(tmp_path, moto, in_the_way))
    assert list(json.loads(result.stdout)["_meta"]["hostvars"]) == ["gpu-a"]
    assert "gpufleet_ec2: the inventory cache is left out" in " ".join(result.stderr.split())


def test_composed_mappings_and_times_are_the_same_from_a_warm_cache(moto, tmp_path):
    launch(moto, fleet_tags("gpu-a"), zone="us-east-1b")
    config = source_config(
        moto,
        # Filters and regions are templated options: no deprecation warning for them.
        filters={"tag:gpufleet:env": "prod"},
        compose={"where": "placement", "launched": "launch_time", "state_name": "state['name']"},
        cache=True,
        cache_plugin="ansible.builtin.jsonfile",
        cache_connection=str(tmp_path / "cache"),
        cache_timeout=600,
    )
    source = write_source(tmp_path, config)
    cold = run_inventory(source)
    assert "WARNING" not in cold.stderr, cold.stderr
    warm = run_inventory(source)
    assert json.loads(warm.stdout) == json.loads(cold.stdout)
    gpu_a = hostvars(json.loads(cold.stdout), "gpu-a")
    assert gpu_a["where"]["availability_zone"] == "us-east-1b"
    assert gpu_a["where"]["region"] == "us-east-1"
    assert gpu_a["launched"].startswith("20") and "T" in gpu_a["launched"]
    assert gpu_a["state_name"] == "running"
