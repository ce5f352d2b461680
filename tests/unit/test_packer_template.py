"""The Packer template's structure, read with python-hcl2 (Debian's Packer 1.6.6 cannot
validate the amazon-ebs source of a modern template), and 1.6.6's own validation of the rest:
the files without the required_plugins block, as gpufleet bake stages them."""

import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest

from gpufleet import bake

PACKER_DIR = Path(__file__).resolve().parents[2] / "packer"
SHA = "a" * 64


def literal(value):
    """python-hcl2 keeps a string literal's quotes; drop them."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        return {literal(k): literal(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [literal(v) for v in value]
    return value


def template(name):
    with (PACKER_DIR / name).open() as source:
        return literal(hcl2.load(source))


def block(document, kind, *labels):
    """The one block of a kind with these labels, as a dict."""
    for entry in document.get(kind, []):
        current = entry
        for label in labels:
            current = current.get(label) if isinstance(current, dict) else None
        if current is not None:
            return current
    raise AssertionError(f"no {kind} {labels} in the template")


def test_modern_packer_installs_the_amazon_and_ansible_plugins():
    packer = template("plugins.pkr.hcl")["packer"][0]
    plugins = packer["required_plugins"][0]
    assert plugins["amazon"]["source"] == "github.com/hashicorp/amazon"
    assert plugins["ansible"]["source"] == "github.com/hashicorp/ansible"
    assert packer["required_version"] == ">= 1.10.0"


def test_the_image_needs_imdsv2_is_encrypted_and_tagged():
    ebs = block(template("sources.pkr.hcl"), "source", "amazon-ebs", "gpu")
    assert ebs["imds_support"] == "v2.0"
    assert ebs["metadata_options"][0]["http_tokens"] == "required"
    assert ebs["encrypt_boot"] is True
    (root,) = ebs["launch_block_device_mappings"]
    assert (root["volume_type"], root["encrypted"]) == ("gp3", True)
    assert root["kms_key_id"] == ebs["kms_key_id"] == "${local.kms_key_id}"
    assert ebs["ami_regions"] == "${var.ami_regions}"
    assert ebs["ami_users"] == "${var.ami_users}"
    assert ebs["tags"] == ebs["snapshot_tags"] == "${local.image_tags}"
    assert ebs["run_tags"]["gpufleet:role"] == "bake"
    tags = template("sources.pkr.hcl")["locals"][0]["image_tags"]
    for key in (
        "gpufleet:role",
        "gpufleet:driver-branch",
        "gpufleet:ollama",
        "gpufleet:models",
        "gpufleet:git-sha",
        "gpufleet:baked-at",
    ):
        assert key in tags


def test_the_base_image_is_the_newest_official_debian_or_ubuntu():
    sources = template("sources.pkr.hcl")
    ebs = block(sources, "source", "amazon-ebs", "gpu")
    (ami_filter,) = ebs["source_ami_filter"]
    assert ami_filter["most_recent"] is True
    assert ami_filter["filters"]["architecture"] == "x86_64"
    base = sources["locals"][0]["base"]
    assert base["debian-12"]["owner"] == "136693071363"
    assert base["ubuntu-24.04"]["owner"] == "099720109477"
    assert "noble-24.04" in base["ubuntu-24.04"]["name"]


def test_ssh_is_open_only_to_the_builder_and_spot_is_an_option():
    ebs = block(template("sources.pkr.hcl"), "source", "amazon-ebs", "gpu")
    assert ebs["temporary_security_group_source_public_ip"] == "${length(var.builder_cidrs) == 0}"
    assert "var.builder_cidrs" in ebs["temporary_security_group_source_cidrs"]
    assert "var.spot" in ebs["spot_price"] and "var.spot" in ebs["spot_instance_types"]


def test_an_existing_host_is_provisioned_by_the_same_build():
    ssh_host = block(template("sources.pkr.hcl"), "source", "null", "ssh_host")
    assert ssh_host["communicator"] == "ssh"
    build = template("build.pkr.hcl")["build"][0]
    assert build["sources"] == ["source.amazon-ebs.gpu", "source.null.ssh_host"]


def test_gpufleet_bake_names_the_builds_the_template_has():
    """Packer names each build "<build>.<source>"; an -only naming none builds nothing."""
    build = template("build.pkr.hcl")["build"][0]
    assert build["name"] == bake.BUILD_NAME
    assert [f"source.{source}" for source in bake.SOURCES] == build["sources"]


def test_the_bake_runs_the_playbook_then_the_audit_then_the_manifest():
    build = template("build.pkr.hcl")["build"][0]
    steps = [next(iter(p)) for p in build["provisioner"]]
    assert steps == ["ansible", "file", "shell"]
    ansible = build["provisioner"][0]["ansible"]
    assert ansible["playbook_file"].endswith("/playbooks/bake.yml")
    assert ansible["use_proxy"] is False
    audit = build["provisioner"][2]["shell"]
    assert audit["remote_folder"] == "/dev/shm"
    assert "gpufleet_image_audit.py --root /" in audit["inline"][0]
    manifest = build["post-processor"][0]["manifest"]
    assert manifest["output"] == "${var.manifest_path}"


def test_every_variable_is_described_and_the_constrained_ones_validated():
    variables = {
        name: spec
        for entry in template("variables.pkr.hcl")["variable"]
        for name, spec in entry.items()
    }
    assert all(spec.get("description") for spec in variables.values())
    validated = {name for name, spec in variables.items() if spec.get("validation")}
    assert {
        "region",
        "base_os",
        "instance_type",
        "builder_cidrs",
        "root_volume_size_gb",
        "ami_users",
        "nvidia_driver_source",
        "nvidia_driver_branch",
        "nvidia_driver_module_flavor",
        "ollama_version",
        "ollama_release_sha256",
        "models",
        "lb_cidrs",
        "ops_cidrs",
        "monitoring_cidrs",
    } <= validated


# The firewall's ranges every bake must be given (the VPC's subnets).
RANGES = (
    '-var=lb_cidrs=["10.0.1.0/24"]',
    '-var=ops_cidrs=["10.0.9.0/24"]',
    '-var=monitoring_cidrs=["10.0.8.0/24"]',
)


RANGES_AND_SHA = ("-var=lb_cidrs", "-var=ops_cidrs", "-var=monitoring_cidrs", "-var=ollama_release")


def packer(*args, cwd):
    return subprocess.run(
        ["packer", *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


@pytest.fixture
def staged(tmp_path):
    """The template as Packer 1.6.6 reads it: without the required_plugins block."""
    if shutil.which("packer") is None:
        pytest.fail("packer is not installed: run `make deps`")
    for path in PACKER_DIR.iterdir():
        if path.is_file() and path.name != "plugins.pkr.hcl":
            shutil.copy2(path, tmp_path)
    return tmp_path


def test_the_template_is_packer_fmt_clean():
    result = packer("fmt", "-check", "-diff", ".", cwd=PACKER_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def ssh_source_args(tmp_path_factory):
    """validate's arguments for the ssh_host build; Packer reads the key, so make one."""
    key = tmp_path_factory.mktemp("key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)

    def args(*extra):
        return [
            "validate",
            "-only=gpu.null.ssh_host",
            # Staged elsewhere, as gpufleet bake stages it: the playbooks stay in the repo.
            f"-var=repo_root={PACKER_DIR.parent}",
            f"-var=ollama_release_sha256={SHA}",
            "-var=ssh_host=10.77.0.11",
            f"-var=ssh_private_key_file={key}",
            *RANGES,
            *extra,
            ".",
        ]

    return args


def test_an_image_without_the_firewalls_ranges_is_refused_naming_them(staged, ssh_source_args):
    """Packer refuses to bake before any instance is launched; the playbook's own check is
    proven by the lab's bake (tests/lab/test_bake.py)."""
    args = [a for a in ssh_source_args() if not a.startswith(("-var=lb_cidrs", "-var=ops_cidrs"))]
    result = packer(*args, cwd=staged)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert 'Unset variable "lb_cidrs"' in output, output
    assert 'Unset variable "ops_cidrs"' in output, output


def test_packer_1_6_validates_the_ssh_build(staged, ssh_source_args):
    result = packer(*ssh_source_args(), cwd=staged)
    assert result.returncode == 0, result.stdout + result.stderr


def test_validate_reads_the_ssh_build_it_is_given(staged, ssh_source_args):
    """Proof the -only above selects the build: its source's settings are checked."""
    result = packer(*ssh_source_args("-var=ssh_private_key_file=/etc/hostname"), cwd=staged)
    assert result.returncode != 0
    assert "Failed to read key '/etc/hostname'" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("base_os=centos-9", "base_os must be debian-12 or ubuntu-24.04"),
        ("instance_type=large", "instance_type must be an EC2 instance type"),
        ("nvidia_driver_module_flavor=auto", "nvidia_driver_module_flavor must be open or"),
        ("ollama_version=latest", "ollama_version must be X.Y.Z"),
        ('builder_cidrs=["203.0.113.7"]', "Each of builder_cidrs must be a CIDR"),
        ("lb_cidrs=[]", "The lb_cidrs must list at least one CIDR"),
        ('monitoring_cidrs=["10.0.9.5"]', "The monitoring_cidrs must list at least one CIDR"),
    ],
)
def test_a_bad_variable_fails_validation_naming_it(staged, ssh_source_args, variable, message):
    result = packer(*ssh_source_args(f"-var={variable}"), cwd=staged)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_the_bake_workflow_bakes_with_the_committed_vars_file(staged, ssh_source_args):
    """The workflow's --var-file is in the repository, and with it and the variables the
    workflow sets the template validates: a bake on a version tag runs as shipped."""
    workflow = (PACKER_DIR.parent / ".github/workflows/bake.yml").read_text()
    var_files = re.findall(r"--var-file (\S+)", workflow)
    assert var_files == ["packer/ci.pkrvars.hcl"]
    ci_vars = PACKER_DIR.parent / var_files[0]
    extra_files = re.findall(r'"(packer/[^"]+)"', ci_vars.read_text())
    assert extra_files and all((PACKER_DIR.parent / f).exists() for f in extra_files)
    args = [a for a in ssh_source_args() if not a.startswith(RANGES_AND_SHA)]
    args[-1:-1] = [f"-var-file={ci_vars}", f"-var=ollama_release_sha256={SHA}"]
    result = packer(*args, cwd=staged)
    assert result.returncode == 0, result.stdout + result.stderr
