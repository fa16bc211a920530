"""What every benchmark prints and writes: the machine, an aligned table, the JSON file."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

from streamer.telemetry import cpu_model

Column = tuple[str, str, str]  # (row key, title, format such as "{:.1f}")


def machine() -> dict[str, Any]:
    """What ran the benchmark, and how busy it was when the report was made."""
    model = cpu_model(Path("/proc/cpuinfo").read_text()) or platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": platform.platform(), "load_average": os.getloadavg()}  # fmt: skip


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


def write_json(path: str | Path, report: dict[str, Any]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return out


def limit(value: float, target: float, *, at_most: bool) -> dict[str, Any]:
    """One target as the JSON keeps it: the value, the limit, and whether it was met."""
    met = value <= target if at_most else value >= target
    return {"target": target, "value": value, "met": bool(met and not math.isnan(value))}


def print_limits(issue: int, limits: dict[str, dict[str, Any]], form: str = "{:,.3f}") -> None:
    print(f"\ntargets (issue {issue}):")
    for name, check in limits.items():
        verdict = "met" if check["met"] else "MISSED"
        print(f"  {name}: {verdict}  {form.format(check['value'])} (target {check['target']:,})")


def print_end(report: dict[str, Any], json_path: str | None, busy_load: float = 1.5) -> None:
    """How every benchmark ends: a note when the machine was busy (its figures then say less),
    the report as one JSON line, and where it was written."""
    load = os.getloadavg()[0]
    if load > busy_load:
        print(f"  note: load average {load:.2f} after the run: the machine was busy")
    print()
    print(json.dumps(report))
    if json_path:
        print(f"\nJSON written to {write_json(json_path, report)}")
