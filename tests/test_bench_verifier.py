"""benchmarks/verifier.py, briefly: two container processes (0 and 20 ms), a short trace.

No timing is asserted: the numbers depend on the machine; the report's shape, its rows and
the rise it derives from them are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.verifier import main
from verifier.trace import DEFAULT_TRACE, InputTrace


def test_a_short_run_reports_both_delays_their_rise_and_the_bot_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "short.json"
    trace.write_text(InputTrace("short", DEFAULT_TRACE.events[:4], tail_ms=300).to_json())
    out = tmp_path / "verifier.json"
    argv = ["--delays", "0,20", "--trace", str(trace), "--width", "640", "--height", "360",
            "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "rise error" in printed and "targets (issue 6):" in printed
    assert report["config"] == {"stream": "640x360@60", "encoder": "x264", "trace": "short",
                                "delays_ms": [0, 20]}  # fmt: skip
    baseline, delayed = report["results"]
    assert (baseline["delay_ms"], delayed["delay_ms"]) == (0, 20)
    assert baseline["rise_ms"] == 0.0
    assert delayed["rise_ms"] == round(delayed["g2g_p50_ms"] - baseline["g2g_p50_ms"], 1)
    assert delayed["rise_error_ms"] == round(delayed["rise_ms"] - 20, 1)
    for row in (baseline, delayed):
        assert row["frames"] > 60 and row["bot_cores"] > 0
        assert row["reactions"] == "4/4"
    assert set(report["targets"]) == {"rise at 20 ms within +-3 ms", "bot cores per session"}
    assert report["targets"]["bot cores per session"]["value"] == max(
        baseline["bot_cores"], delayed["bot_cores"]
    )
    assert (out.parent / "logs" / "delay-20.log").exists()
