"""benchmarks/builds.py with one press each: the report's shape, every part measured.

No timing is asserted: the numbers depend on the machine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.builds import WARM_TARGET_MS, main
from streamer.xdisplay import xvfb_unavailable_reason


@pytest.mark.browser
@pytest.mark.timeout(180)
@pytest.mark.skipif(
    xvfb_unavailable_reason() is not None or shutil.which("bwrap") is None,
    reason="needs Xvfb and bwrap",
)
def test_a_short_run_times_each_play_the_start_steps_and_a_waiting_runs_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "builds.json"
    assert (
        main(["--presses", "1", "--starts", "1", "--idle-seconds", "0.2", "--json", str(out)]) == 0
    )
    report = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert report["benchmark"] == "builds"
    assert [row["game"] for row in report["plays"]] == [
        "reference game", "arcade, cold", "arcade, warm"
    ]  # fmt: skip
    for row in report["plays"]:
        assert row["presses"] == 1 and row["p50_ms"] > 0 and row["game"] in printed
    assert report["plays"][2]["note"] == "the waiting run taken: 1/1"
    assert report["plays"][1]["picture_p50_ms"] >= report["plays"][1]["p50_ms"]
    assert [row["runs"] for row in report["start_steps"]] == [1] * 5
    paused = [row for row in report["waiting_cost"] if row["state"] == "paused (standby)"]
    assert paused[-1]["process"] == "total" and paused[-1]["rss_mib"] > 0
    assert report["targets"]["warm_play_to_first_frame_p50_ms"]["target"] == WARM_TARGET_MS
    assert "warm_play_to_first_frame_p50_ms" in printed
