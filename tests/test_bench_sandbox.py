"""benchmarks/sandbox.py for a fraction of a second: the report's shape, both halves measured.

No timing is asserted: the numbers depend on the machine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.sandbox import START_TARGET_MS, main
from streamer.xdisplay import xvfb_unavailable_reason


@pytest.mark.skipif(
    xvfb_unavailable_reason() is not None or shutil.which("bwrap") is None,
    reason="needs Xvfb and bwrap",
)
def test_a_short_run_measures_starts_and_captures_and_writes_its_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sandbox.json"
    assert main(["--starts", "2", "--seconds", "0.3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert report["benchmark"] == "sandbox"
    assert [r["method"] for r in report["starts"]] == [
        "plain (asyncio subprocess)", "sandboxed (cgroups, seccomp, bwrap)"
    ]  # fmt: skip
    assert [r["method"] for r in report["captures"]] == [
        "example build, sandboxed", "example build, plain"
    ]  # fmt: skip
    for row in report["starts"]:
        assert row["runs"] == 2 and 0 < row["p50_ms"] <= row["p95_ms"]
    for row in report["captures"]:
        assert row["frames"] > 0 and row["method"] in printed
    assert report["targets"]["sandbox_start_p50_ms"]["target"] == START_TARGET_MS
    assert set(report["targets"]) == {"sandbox_start_p50_ms", "sandboxed_captured_fps"}
