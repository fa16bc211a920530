"""What the commands and benchmarks print for a person: aligned text tables."""

from __future__ import annotations

import math
from typing import Any

Column = tuple[str, str, str]  # (row key, title, format such as "{:.1f}")


def table(rows: list[dict[str, Any]], columns: tuple[Column, ...]) -> str:
    """Rows as left-aligned columns; a missing or NaN value shows as "-"."""

    def cell(row: dict[str, Any], key: str, form: str) -> str:
        value = row.get(key)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return "-" if missing else form.format(value)

    cells = [[title for _, title, _ in columns]] + [
        [cell(r, k, f) for k, _, f in columns] for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    )
