"""Filters for the patch window: what apt will upgrade, what needrestart says, the report."""

from __future__ import annotations

import re
from typing import Any

from ansible_collections.gpufleet.fleet.plugins.module_utils.report_table import (
    table_header,
    table_row,
)

# `apt-get --simulate` prints one line per package it would unpack:
#   Inst libc6 [2.36-9+deb12u13] (2.36-9+deb12u14 Debian-Security:12/stable-security [amd64])
# with no [old version] for a package new to the host.
APT_INST = re.compile(r"^Inst (?P<name>\S+) (?:\[(?P<old>[^\]]+)\] )?\((?P<new>\S+)")
# `needrestart -b` (batch mode) prints KEY: VALUE lines; SVC repeats, once per service.
NEEDRESTART_LINE = re.compile(r"^NEEDRESTART-(?P<key>[A-Z]+):\s*(?P<value>.*)$")
# needrestart's kernel status: 0 unknown, 1 current, 2 ABI-compatible upgrade, 3 new version.
KERNEL_PENDING = {"2", "3"}
# Its microcode status: 0 unknown, 1 current, 2 outdated.
MICROCODE_PENDING = "2"
COLUMNS = (
    ("host", 10),
    ("outcome", 24),
    ("upgraded", 10),
    ("rebooted", 10),
    ("drain_wait_s", 14),
    ("upgrade_s", 11),
    ("reboot_s", 10),
    ("total_s", 8),
)


def patch_upgrades(simulation: str) -> list[dict[str, str]]:
    """The packages an `apt-get --simulate` run would install or upgrade, in its order."""
    found = []
    for line in simulation.splitlines():
        match = APT_INST.match(line)
        if match:
            found.append({"name": match["name"], "from": match["old"] or "", "to": match["new"]})
    return found


def patch_needrestart(batch_output: str) -> dict[str, Any]:
    """needrestart's batch verdict: the kernel and microcode states and the services on
    outdated files. A host without a kernel needrestart can read (a container) has no
    kernel status."""
    fields: dict[str, Any] = {"services": []}
    for line in batch_output.splitlines():
        match = NEEDRESTART_LINE.match(line.strip())
        if match is None:
            continue
        if match["key"] == "SVC":
            fields["services"].append(match["value"])
        else:
            fields[match["key"].lower()] = match["value"]
    return {
        "kernel_pending": fields.get("ksta") in KERNEL_PENDING,
        "kernel_running": fields.get("kcur", ""),
        "kernel_expected": fields.get("kexp", ""),
        "microcode_pending": fields.get("ucsta") == MICROCODE_PENDING,
        "services": sorted(fields["services"]),
    }


def patch_reboot_reasons(
    verdict: dict[str, Any],
    upgrades: list[dict[str, str]],
    reboot_services: list[str],
    reboot_required_pkgs: str | None,
    patterns: dict[str, str],
) -> list[str]:
    """Why the host must reboot, in words for the report; empty when it need not.
    patterns: regular expressions of the kernel's and the NVIDIA driver's package names."""
    reasons = []
    names = [u["name"] for u in upgrades]
    kernels = [n for n in names if re.match(patterns["kernel"], n) and "image" in n]
    nvidia = [n for n in names if re.match(patterns["nvidia"], n)]
    if kernels:
        reasons.append(f"new kernel: {', '.join(kernels)}")
    if verdict["kernel_pending"]:
        reasons.append(
            f"running kernel {verdict['kernel_running']}, newest installed "
            f"{verdict['kernel_expected'] or 'newer'}"
        )
    if nvidia:
        reasons.append(f"NVIDIA driver upgraded, its module must match: {', '.join(nvidia)}")
    if verdict["microcode_pending"]:
        reasons.append("CPU microcode updated")
    stuck = [s for s in verdict["services"] if s in reboot_services]
    if stuck:
        reasons.append(f"needrestart: {', '.join(stuck)} cannot restart in place")
    if reboot_required_pkgs is not None:
        named = ", ".join(reboot_required_pkgs.split()) or "no package named"
        reasons.append(f"/run/reboot-required ({named})")
    return reasons


def patch_table(report: dict[str, Any]) -> list[str]:
    """The report as lines of a fixed-width table, one row per host, each host's packages and
    reboot reasons or error under its row."""
    lines = [table_header(COLUMNS)]
    for row in report["hosts"]:
        cells = [
            str(len(row.get("packages", []))) if name == "upgraded" else str(row.get(name, "-"))
            for name, _width in COLUMNS
        ]
        lines.append(table_row(cells, COLUMNS))
        if row.get("packages"):
            shown = [f"{p['name']} {p['to']}" for p in row["packages"][:6]]
            more = len(row["packages"]) - len(shown)
            lines.append(f"  packages: {', '.join(shown)}{f' and {more} more' if more else ''}")
        for reason in row.get("reboot_reasons", []):
            lines.append(f"  reboot: {reason}")
        if row.get("error"):
            lines.append(f"  {row.get('failed_task', '')}: {row['error']}")
    lines.append(f"{report['outcome']} in {report['wall_s']} s; report: {report['path']}")
    return lines


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "patch_upgrades": patch_upgrades,
            "patch_needrestart": patch_needrestart,
            "patch_reboot_reasons": patch_reboot_reasons,
            "patch_table": patch_table,
        }
