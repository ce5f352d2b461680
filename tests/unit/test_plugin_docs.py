"""ansible-doc shows every module and filter of the project, documentation and examples."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS = {
    "module": sorted(path.stem for path in (REPO / "plugins/modules").glob("*.py")),
    "filter": sorted(path.stem for path in (REPO / "plugins/filter").glob("*.yml")),
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
