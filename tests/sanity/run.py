"""`ansible-test sanity` on the collection, as `make sanity` runs it.

ansible-test wants the collection at ansible_collections/gpufleet/fleet in a real directory
(the checkout's collections/ link resolves back to the checkout), beside the collections it
depends on. This copies the files git tracks, as they are in the working tree, into a
scratch tree, links amazon.aws, ansible.posix and community.general from the installed
`ansible` package, and runs every sanity test ansible-test runs without containers, each in
the virtual environment ansible-test makes for it.

    python tests/sanity/run.py [PARENT_OF_SCRATCH] [-- ANSIBLE_TEST_SANITY_ARGUMENTS]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import ansible_collections

REPO = Path(__file__).resolve().parents[2]
DEPENDENCIES = ("amazon/aws", "ansible/posix", "community/general")


def pip_bootstrap_path() -> Path:
    """Where ansible-test looks for its cached get-pip script, for the pip it pins."""
    from ansible_test._internal.host_configs import NativePythonConfig
    from ansible_test._internal.python_requirements import get_venv_packages

    pip = get_venv_packages(NativePythonConfig(version="3.11"))["pip"]
    return Path.home() / ".ansible/test/cache" / f"get_pip_{pip.replace('.', '_')}.py"


def copy_tracked_files(target: Path) -> None:
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_symlink() or not source.is_file():
            continue  # collections/ansible_collections/gpufleet/fleet, the checkout's own link
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)


def main(argv: list[str]) -> int:
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    positional = argv[: argv.index("--")] if "--" in argv else argv
    # Outside the checkout: ansible-test asks git which files are the collection's, and the
    # checkout's git would answer for a copy inside it.
    scratch = Path(positional[0] if positional else tempfile.gettempdir()).resolve()
    scratch = scratch / "gpufleet-sanity"
    root = scratch / "ansible_collections"
    shutil.rmtree(scratch, ignore_errors=True)
    collection = root / "gpufleet/fleet"
    copy_tracked_files(collection)
    installed = Path(ansible_collections.__path__[0])
    for dependency in DEPENDENCIES:
        (root / dependency).parent.mkdir(parents=True, exist_ok=True)
        (root / dependency).symlink_to(installed / dependency)
    bootstrap = pip_bootstrap_path()
    if not bootstrap.exists():  # a real get-pip.py, where one was downloaded, is kept
        bootstrap.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(__file__).with_name("get_pip.py"), bootstrap)
    ansible_test_bin = Path(sys.executable).parent / "ansible-test"
    command = [str(ansible_test_bin), "sanity", "--venv", "--python", "3.11", "--color", "no"]
    print(f"sanity: ansible-test sanity in {collection}", flush=True)
    return subprocess.run([*command, *extra], cwd=collection, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
