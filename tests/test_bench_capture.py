"""benchmarks/capture.py for a fraction of a second: the report's shape, every method measured.

No timing is asserted: the numbers depend on the machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.capture import FPS_TARGET, P50_TARGET_MS, main
from streamer.xdisplay import xvfb_unavailable_reason


@pytest.mark.skipif(
    xvfb_unavailable_reason() is not None, reason=f"no Xvfb: {xvfb_unavailable_reason()}"
)
def test_a_short_run_measures_every_method_and_writes_its_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "capture.json"
    assert main(["--seconds", "0.3", "--baseline-frames", "3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert report["benchmark"] == "capture"
    assert report["config"] == {"build": "arcade", "resolution": "1280x720", "fps": 60,
                                "seconds": 0.3, "baseline_frames": 3}  # fmt: skip
    methods = [row["method"] for row in report["results"]]
    assert methods == [
        "x11grab + swscale, 60 fps (gamecast)",
        "x11grab + PyAV default reformat, 60 fps",
        "XGetImage (python-xlib) + reformat",
    ]
    for row in report["results"]:
        assert row["frames"] > 0 and row["fps"] > 0
        assert 0 < row["p50_ms"] <= row["p95_ms"]
        assert row["method"] in printed
    assert report["results"][2]["frames"] == 3
    targets = report["targets"]
    assert (targets["captured_fps"]["target"], targets["capture_p50_ms"]["target"]) == (
        FPS_TARGET,
        P50_TARGET_MS,
    )
    assert targets["captured_fps"]["value"] == report["results"][0]["fps"]
    assert "targets (issue 7):" in printed and f"JSON written to {out}" in printed
