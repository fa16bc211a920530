"""What every benchmark prints and writes: the machine, an aligned table, the JSON file."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

from streamer.telemetry import cpu_model


def machine() -> dict[str, Any]:
    """What ran the benchmark, and how busy it was when the report was made."""
    model = cpu_model(Path("/proc/cpuinfo").read_text()) or platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": platform.platform(), "load_average": os.getloadavg()}  # fmt: skip


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
