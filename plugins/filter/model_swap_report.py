"""Filters for the model swap's run report: request counts since the start, and the table."""

from __future__ import annotations

from typing import Any

COUNTS = ("served", "failed", "truncated")
COLUMNS = (
    ("host", 10),
    ("from", 16),
    ("to", 16),
    ("outcome", 12),
    ("drain_wait_s", 14),
    ("pull_s", 8),
    ("warm_s", 8),
    ("total_s", 8),
)


def model_swap_requests(after: dict[str, dict], before: dict[str, dict]) -> dict[str, Any]:
    """Each LB's requests served, failed and truncated between two counter readings, and the
    fleet's total. An LB missing from before (its HAProxy restarted) counts from zero."""
    per_lb = {
        lb: {c: int(now[c]) - int(before.get(lb, {}).get(c, 0)) for c in COUNTS}
        for lb, now in sorted(after.items())
    }
    total = {c: sum(counts[c] for counts in per_lb.values()) for c in COUNTS}
    return {"per_lb": per_lb, "total": total}


def model_swap_table(report: dict[str, Any]) -> list[str]:
    """The report as lines of a fixed-width table, one row per host, the requests last."""
    lines = ["".join(name.ljust(width) for name, width in COLUMNS)]
    for row in report["hosts"]:
        cells = [str(row.get(name, "-")) for name, _ in COLUMNS]
        lines.append("".join(c[: w - 1].ljust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)))
        if row.get("error"):
            lines.append(f"  {row.get('failed_task', '')}: {row['error']}")
    total = report["requests"]["total"]
    lines.append(
        f"requests through the LBs: {total['served']} served, {total['failed']} failed, "
        f"{total['truncated']} truncated; wall {report['wall_s']} s; {report['outcome']}"
    )
    return lines


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"model_swap_requests": model_swap_requests, "model_swap_table": model_swap_table}
