"""ansible-doc shows every module, filter and inventory plugin of the collection by its
collection name, documentation and examples."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS = {
    kind: sorted(f"gpufleet.fleet.{path.stem}" for path in (REPO / "plugins" / folder).glob(glob))
    for kind, folder, glob in (
        ("module", "modules", "*.py"),
        ("filter", "filter", "*.yml"),
        ("inventory", "inventory", "*.py"),
    )
}


@pytest.mark.parametrize("kind", sorted(PLUGINS))
def test_ansible_doc_reads_every_plugin_with_its_examples(kind):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-doc"), "--json", "-t", kind, *PLUGINS[kind]],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Unable to parse" not in result.stderr, result.stderr
    docs = json.loads(result.stdout)
    unreadable = [name for name in PLUGINS[kind] if not (docs.get(name) or {}).get("doc")]
    assert not unreadable, f"ansible-doc read no documentation for {unreadable}: {result.stderr}"
    no_examples = [name for name in PLUGINS[kind] if not docs[name].get("examples")]
    assert not no_examples, f"no EXAMPLES for {no_examples}"
