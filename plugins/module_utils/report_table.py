"""Fixed-width tables for the playbooks' reports (the patch window's, the model swap's)."""

from __future__ import annotations

from collections.abc import Sequence


def table_header(columns: Sequence[tuple[str, int]]) -> str:
    """The header line: each column's name padded to its width."""
    return "".join(name.ljust(width) for name, width in columns)


def table_row(cells: Sequence[str], columns: Sequence[tuple[str, int]]) -> str:
    """One row: each cell cut to its column's width less one, and padded to the width."""
    return "".join(
        cell[: width - 1].ljust(width) for cell, (_name, width) in zip(cells, columns, strict=True)
    )
