"""The variables reference, docs/variables.md, written from every role's meta/argument_specs.yml.

The argument specs are the roles' documentation and their input validation; this page only
gathers them, so it can never say other than what the roles check. `make docs` writes it; a
unit test fails when the committed page differs from what the specs give.

    python -m gpufleet.docs [--check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "variables.md"
HEADER = """# Variables reference

Every input of every gpufleet role, by role and entry point, as its
`meta/argument_specs.yml` documents and validates it. Written by `make docs`
from those files; do not edit it by hand (`tests/unit/test_docs.py` fails when
it is stale). `ansible-doc -t role -r roles ROLE` shows the same for one role.

Inventory-wide variables the playbooks read (`fleet_ops_cidrs`,
`fleet_monitoring_cidrs`, `fleet_client_cidrs`) are in `docs/security.md`.
"""


def cell(text: str) -> str:
    """Markdown table cell: one line, pipes escaped, Ansible's C() and O() markup as code."""
    flat = " ".join(text.split()).replace("|", "\\|")
    for marker in ("C(", "O(", "V(", "I("):
        while marker in flat:
            start = flat.index(marker)
            end = flat.find(")", start)
            if end == -1:
                break
            flat = f"{flat[:start]}`{flat[start + 2 : end]}`{flat[end + 1 :]}"
    return flat


def description(spec: dict[str, Any]) -> str:
    text = spec.get("description", "")
    return cell(" ".join(text) if isinstance(text, list) else str(text))


def default(spec: dict[str, Any]) -> str:
    if "default" not in spec:
        return "required" if spec.get("required") else ""
    return cell(f"`{json.dumps(spec['default'], ensure_ascii=False)}`")


def kind(spec: dict[str, Any]) -> str:
    name = spec.get("type", "str")
    if name == "list" and "elements" in spec:
        name = f"list of {spec['elements']}"
    if "choices" in spec:
        name += " (" + ", ".join(str(c) for c in spec["choices"]) + ")"
    return cell(name)


def options_table(options: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| variable | type | default | description |", "| --- | --- | --- | --- |"]
    for name, spec in sorted(options.items()):
        lines.append(f"| `{name}` | {kind(spec)} | {default(spec)} | {description(spec)} |")
        for sub_name, sub_spec in sorted(spec.get("options", {}).items()):
            lines.append(
                f"| `{name}[].{sub_name}` | {kind(sub_spec)} | {default(sub_spec)} "
                f"| {description(sub_spec)} |"
            )
    return lines


def role_section(role: Path) -> list[str]:
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    lines = [f"## {role.name}", ""]
    for entry, spec in specs.items():
        title = "main" if entry == "main" else f"tasks_from: {entry}"
        lines += [f"### {title}", "", cell(spec.get("short_description", "")), ""]
        options = spec.get("options", {})
        lines += [*options_table(options), ""] if options else ["No inputs.", ""]
    return lines


def render(repo: Path = REPO) -> str:
    roles = sorted(p.parent.parent for p in (repo / "roles").glob("*/meta/argument_specs.yml"))
    lines = [HEADER, "Roles: " + ", ".join(f"[{r.name}](#{r.name})" for r in roles) + ".", ""]
    for role in roles:
        lines += role_section(role)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    page = render()
    if "--check" in arguments:
        if PAGE.read_text() != page:
            print(f"{PAGE.relative_to(REPO)} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
