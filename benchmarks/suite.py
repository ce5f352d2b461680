"""make test against its budget: where its minutes went, phase by phase.

Reads the phases make test recorded (tests/phases.py: deps, lint, unit, sanity and lab, and inside
the lab each test file, each molecule scenario and the shared set-up), prints them as a
table, slowest first within each phase, then one JSON line: the total, each phase, and the
total's ratio to the 35-minute budget. The total is the wall time from the first phase's
start to the last one's end, so time no phase accounts for still counts. It fails nothing:
CI machines are noisy; each closing note quotes its figure.

    .venv/bin/python benchmarks/suite.py [PHASES_FILE]   (default .cache/test-phases.jsonl)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BUDGET_MINUTES = 35.0
DEFAULT_PHASES = Path(__file__).resolve().parents[1] / ".cache" / "test-phases.jsonl"


def read(phases_file: Path) -> list[dict]:
    return [json.loads(line) for line in phases_file.read_text().splitlines() if line.strip()]


def minutes(seconds: float) -> float:
    return round(seconds / 60, 2)


def total_seconds(top: list[dict]) -> float:
    """Wall time from the first top-level phase's start to the last one's end."""
    return max(p["started"] + p["seconds"] for p in top) - min(p["started"] for p in top)


def to_budget(total: float) -> float:
    return total / 60 / BUDGET_MINUTES


def table(top: list[dict], inner: list[dict], total: float) -> list[str]:
    lines = [f"{'make test phase':<48} {'min':>6}"]
    for phase in top:
        lines.append(f"{phase['phase']:<48} {minutes(phase['seconds']):>6.2f}")
        within = [p for p in inner if p["within"] == phase["phase"]]
        for part in sorted(within, key=lambda p: p["seconds"], reverse=True):
            lines.append(f"  {part['phase']:<46} {minutes(part['seconds']):>6.2f}")
    ratio = f"({to_budget(total):.2f} of {BUDGET_MINUTES:g})"
    lines.append(f"{'total':<48} {minutes(total):>6.2f}  {ratio}")
    return lines


def main(argv: list[str]) -> int:
    phases_file = Path(argv[0]) if argv else DEFAULT_PHASES
    if not phases_file.exists():
        print(f"suite: no phases recorded at {phases_file}: run make test first", file=sys.stderr)
        return 1
    recorded = read(phases_file)
    top = sorted((p for p in recorded if not p["within"]), key=lambda p: p["started"])
    inner = [p for p in recorded if p["within"]]
    if not top:
        print(f"suite: {phases_file} has no make test phase", file=sys.stderr)
        return 1
    total = total_seconds(top)
    print("\n".join(table(top, inner, total)))
    phases = {p["phase"]: minutes(p["seconds"]) for p in top}
    phases |= {f"{p['within']}: {p['phase']}": minutes(p["seconds"]) for p in inner}
    result = {
        "total_min": minutes(total),
        "budget_min": BUDGET_MINUTES,
        "total_to_budget": round(to_budget(total), 3),
        "phases_min": phases,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
