"""`gpufleet bake`: Packer's init, validate and build of the GPU image, output as it comes.

It runs packer/ through packer.py's PackerExecutable with Packer's output going straight to
ours, line by line while the bake runs, not buffered to the end. Packer before 1.7 (Debian's
1.6.6) cannot read the required_plugins block and has the amazon and ansible plugins built
in, so with it the template directory is staged without plugins.pkr.hcl and init is
skipped: the same template serves modern Packer and an old one.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from packerpy import PackerExecutable

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = REPO / "packer"
PLUGINS_FILE = "plugins.pkr.hcl"
FIRST_WITH_REQUIRED_PLUGINS = (1, 7)
# The build block's name and its sources: Packer names each build "gpu.<source>", and an
# -only that names none of them builds nothing and still exits 0.
BUILD_NAME = "gpu"
SOURCES = ("amazon-ebs.gpu", "null.ssh_host")


class BakeError(Exception):
    """One line naming the step that failed."""


@dataclass
class BakeRequest:
    source: str = "amazon-ebs.gpu"
    variables: dict[str, str] = field(default_factory=dict)
    var_file: Path | None = None
    manifest: Path = Path("packer-manifest.json")
    template_dir: Path = TEMPLATE_DIR
    packer: str = "packer"


def packer_version(packer: str) -> tuple[int, int, int]:
    executable = shutil.which(packer)
    if executable is None:
        raise BakeError(f"{packer} is not installed: see packer/README.md")
    _status, out, err = PackerExecutable(executable, machine_readable=False).version()
    match = re.search(rb"(\d+)\.(\d+)\.(\d+)", out + err)
    if match is None:
        raise BakeError(f"cannot tell the version of {executable}: {(out + err)[:80]!r}")
    return (int(match.group(1)), int(match.group(2)), int(match.group(3)))


@contextmanager
def staged(request: BakeRequest, version: tuple[int, int, int]) -> Iterator[Path]:
    """The template directory as this Packer reads it."""
    if version[:2] >= FIRST_WITH_REQUIRED_PLUGINS:
        yield request.template_dir
        return
    with tempfile.TemporaryDirectory(prefix="gpufleet-packer-") as staging:
        for path in request.template_dir.iterdir():
            if path.is_file() and path.name != PLUGINS_FILE:
                shutil.copy2(path, staging)
        yield Path(staging)


def bake(request: BakeRequest) -> None:
    """init (modern Packer), validate and build; a failed step raises BakeError."""
    version = packer_version(request.packer)
    packer = PackerExecutable(
        shutil.which(request.packer),
        machine_readable=False,
        # Packer's output goes to ours as it comes, not buffered to the end.
        config={"stdout": None, "stderr": None},
    )
    variables = {
        # Staged or not, the template finds playbooks/ and ansible.cfg here.
        "repo_root": str(request.template_dir.resolve().parent),
        "manifest_path": str(request.manifest.resolve()),
        **request.variables,
    }
    if request.source not in SOURCES:
        raise BakeError(f"no source {request.source!r} in the template: {' or '.join(SOURCES)}")
    flags: dict[str, object] = {"only": f"{BUILD_NAME}.{request.source}", "var": variables}
    if request.var_file is not None:
        flags["var_file"] = str(request.var_file.resolve())
    with staged(request, version) as template:
        if version[:2] >= FIRST_WITH_REQUIRED_PLUGINS:
            run_step(packer, "init", template)
        run_step(packer, "validate", template, **flags)
        request.manifest.parent.mkdir(parents=True, exist_ok=True)
        before = last_run(request.manifest)
        run_step(packer, "build", template, color="false", **flags)
    if last_run(request.manifest) in (None, before):
        raise BakeError(f"packer build of {request.source} recorded no build in {request.manifest}")


def last_run(manifest: Path) -> str | None:
    """The manifest's last run id: the manifest post-processor appends each build's run."""
    try:
        return json.loads(manifest.read_text()).get("last_run_uuid")
    except (OSError, ValueError, AttributeError):
        return None


def run_step(packer: PackerExecutable, step: str, template: Path, **flags: object) -> None:
    print(f"--- packer {step}", flush=True)
    status, _out, _err = packer.execute_cmd(step, str(template), **flags)
    if status != 0:
        raise BakeError(f"packer {step} failed (exit status {status}); its output is above")
