"""Filters for the model swap's run report: an LB's request counters, the requests between
two readings, and the table."""

from __future__ import annotations

import re
from typing import Any

from ansible_collections.gpufleet.fleet.plugins.module_utils.report_table import (
    table_header,
    table_row,
)

COUNTS = ("served", "failed", "truncated")
NAME_COUNTS = ("requests", *COUNTS)
COLUMNS = (
    ("host", 10),
    ("from", 16),
    ("to", 16),
    ("alias", 10),
    ("outcome", 12),
    ("drain_wait_s", 14),
    ("pull_s", 8),
    ("warm_s", 8),
    ("total_s", 8),
)
# The haproxy role's backends: be_model_<model> (a / spelled ::) and be_alias_<alias>.
BACKEND_NAME = re.compile(r"^be_(?:model|alias)_(?P<name>.+)$")
NON_2XX = ("hrsp_1xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")


def _number(text: Any) -> int:
    return int(text) if str(text).strip().lstrip("-").isdigit() else 0


def model_swap_counters(rows: list[dict[str, str]], table: dict[str, dict]) -> dict[str, Any]:
    """One LB's counters since its HAProxy started, from haproxy_stat's `show stat` rows and
    its `st_models` table: the frontend's answers (served: 2xx less the streams a server cut
    after its 200; failed: every other answer, the LB's own included) and, per name clients
    asked for, its requests, 2xx, other answers and cut streams (its backend's srv_abrt)."""
    cut = {}
    for row in rows:
        named = BACKEND_NAME.match(row.get("pxname", ""))
        if named and row.get("svname") == "BACKEND":
            cut[named["name"].replace("::", "/")] = _number(row.get("srv_abrt"))
    frontend = next(
        (r for r in rows if r.get("pxname") == "ollama" and r.get("svname") == "FRONTEND"), {}
    )
    truncated = sum(cut.values())
    names = {}
    for name, fields in table.items():
        name_cut = cut.get(name, 0)
        names[name] = {
            "requests": _number(fields.get("http_req_cnt")),
            "served": _number(fields.get("gpc0")) - name_cut,
            "failed": _number(fields.get("gpc1")),
            "truncated": name_cut,
        }
    return {
        "served": _number(frontend.get("hrsp_2xx")) - truncated,
        "failed": sum(_number(frontend.get(field)) for field in NON_2XX),
        "truncated": truncated,
        "names": names,
    }


def _minus(now: dict, before: dict, counts: tuple[str, ...]) -> dict[str, int]:
    return {c: _number(now.get(c, 0)) - _number(before.get(c, 0)) for c in counts}


def model_swap_requests(after: dict[str, dict], before: dict[str, dict]) -> dict[str, Any]:
    """Each LB's requests served, failed and truncated between two counter readings, and the
    fleet's total, also per model name. An LB missing from before (its HAProxy restarted)
    counts from zero."""
    per_lb, names = {}, {}
    for lb, now in sorted(after.items()):
        then = before.get(lb, {})
        per_lb[lb] = _minus(now, then, COUNTS)
        for name, counts in now.get("names", {}).items():
            change = _minus(counts, then.get("names", {}).get(name, {}), NAME_COUNTS)
            if any(change.values()):
                total = names.setdefault(name, dict.fromkeys(NAME_COUNTS, 0))
                for count in NAME_COUNTS:
                    total[count] += change[count]
    total = {c: sum(counts[c] for counts in per_lb.values()) for c in COUNTS}
    return {"per_lb": per_lb, "total": total, "per_name": dict(sorted(names.items()))}


def model_swap_table(report: dict[str, Any]) -> list[str]:
    """The report as lines of a fixed-width table, one row per host; then each model name's
    requests (and when it was retired), and the total last."""
    lines = [table_header(COLUMNS)]
    for row in report["hosts"]:
        cells = [str(row.get(name) or "-") for name, _width in COLUMNS]
        lines.append(table_row(cells, COLUMNS))
        if row.get("error"):
            lines.append(f"  {row.get('failed_task', '')}: {row['error']}")
    retired = report.get("retired") or {}
    for name, counts in report["requests"].get("per_name", {}).items():
        when = f"; retired at {retired[name]}" if name in retired else ""
        lines.append(
            f"  {name}: {counts['requests']} requests, {counts['served']} served, "
            f"{counts['failed']} failed, {counts['truncated']} truncated{when}"
        )
    total = report["requests"]["total"]
    lines.append(
        f"requests through the LBs: {total['served']} served, {total['failed']} failed, "
        f"{total['truncated']} truncated; wall {report['wall_s']} s; {report['outcome']}"
    )
    return lines


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "model_swap_counters": model_swap_counters,
            "model_swap_requests": model_swap_requests,
            "model_swap_table": model_swap_table,
        }
