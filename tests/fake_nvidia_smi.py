"""A stand-in for nvidia-smi, which only a GPU host has: a script printing the CSV that
`nvidia-smi --query-gpu=... --format=csv,noheader,nounits` printed on a real instance
(tests/unit/nvidia_smi/, one file per instance type), and exiting with a status."""

from __future__ import annotations

import stat
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "unit" / "nvidia_smi"


def fake_nvidia_smi(directory: Path, sample: str | None = None, status: int = 0) -> str:
    """Write directory/nvidia-smi answering with sample's rows (none without one); its path."""
    script = directory / "nvidia-smi"
    body = (SAMPLES / sample).read_text() if sample else ""
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{body}EOF\nexit {status}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)
