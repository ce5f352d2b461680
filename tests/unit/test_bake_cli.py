"""gpufleet bake's refusals: a source the template lacks, and a Packer run that built nothing
(Packer exits 0 when -only matches no build), each one line and a non-zero exit."""

import json
import subprocess
import sys

import pytest


def gpufleet_bake(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", "bake", "--no-publish", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


@pytest.fixture
def packer_that_builds_nothing(tmp_path):
    """Packer's answers when its -only names no build: a version, then success, no manifest."""
    packer = tmp_path / "packer"
    packer.write_text('#!/bin/sh\n[ "$1" = version ] && echo "Packer v1.6.6"\nexit 0\n')
    packer.chmod(0o755)
    return packer


def test_a_source_the_template_lacks_is_refused(tmp_path):
    result = gpufleet_bake("--only", "amazon-ebs.cpu", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'amazon-ebs.cpu'" in result.stderr
    assert "'amazon-ebs.gpu', 'null.ssh_host'" in result.stderr


def test_a_build_that_built_nothing_fails(tmp_path, packer_that_builds_nothing):
    result = gpufleet_bake("--packer", str(packer_that_builds_nothing), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "gpufleet bake: packer build of amazon-ebs.gpu recorded no build in packer-manifest.json"
    )


def test_an_earlier_runs_manifest_does_not_count_as_this_build(
    tmp_path, packer_that_builds_nothing
):
    earlier = {"builds": [], "last_run_uuid": "an-earlier-run"}
    (tmp_path / "packer-manifest.json").write_text(json.dumps(earlier))
    result = gpufleet_bake("--packer", str(packer_that_builds_nothing), cwd=tmp_path)
    assert result.returncode == 2
    assert "recorded no build" in result.stderr


def test_the_product_command_loads_no_lab_code():
    """gpufleet bake and ami run where only the product is installed (the bake workflow):
    neither the lab, moto nor the lab's load clients are imported for them."""
    lab_only = ("gpufleet.lab", "moto", "ollama", "openai")
    script = (
        "import sys\n"
        "from gpufleet import cli\n"
        "try:\n"
        "    cli.main(['ami', 'prune', '--keep', '0'])\n"
        "finally:\n"
        f"    print(sorted(m for m in sys.modules if m.startswith({lab_only!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr
    assert "--keep 0: keep at least the newest image" in result.stderr
