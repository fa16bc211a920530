"""The `gamecast` command as a user runs it: help, and `up` started and stopped with Ctrl-C."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from benchmarks.latency import CONFIGURATIONS

GAMECAST = [sys.executable, "-m", "gamecast"]


def test_help_explains_every_subcommand() -> None:
    result = subprocess.run([*GAMECAST, "--help"], capture_output=True, text=True, check=True)
    for command in ("up", "indexer", "container", "bench"):
        assert re.search(rf"^\s+{command}\s+\S", result.stdout, re.MULTILINE), result.stdout


def test_up_prints_its_url_serves_the_page_and_stops_cleanly_on_ctrl_c() -> None:
    process = subprocess.Popen(
        [*GAMECAST, "up", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = None
        lines = []
        # Read through the last line of the banner ("API: ...") here: communicate() reads the
        # pipe beneath this file object, so lines it had buffered would be lost to it.
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if match := re.search(r"open (http://127\.0\.0\.1:\d+/)", line):
                url = match.group(1)
            if url and "API: " in line:
                break
        banner = "".join(lines)
        assert url, banner
        with urllib.request.urlopen(url, timeout=5) as response:
            assert b'id="play"' in response.read()
        with urllib.request.urlopen(url + "api/containers", timeout=5) as response:
            assert b'"availability": "standby"' in response.read()
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
    assert "stopped" in output
    # Where to look, and what the container found out about its host.
    assert re.search(r"sessions at once: 1280x720@60 x\d+", banner), banner
    assert f"dashboard: {url}static/dashboard.html" in banner
    assert "x264 (NVENC unavailable: " in banner or "nvenc (" in banner


@pytest.mark.parametrize("argv", [["up", "--port", "nope"], ["bench", "warp"], ["container"]])
def test_bad_arguments_say_what_is_wrong(argv: list[str]) -> None:
    result = subprocess.run([*GAMECAST, *argv], check=False, capture_output=True, text=True)
    assert result.returncode == 2
    assert "error:" in result.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["container", "--server", "ws://127.0.0.1:9/ws/container", "--max-size", "12x"],
            "argument --max-size: expected WIDTHxHEIGHT in pixels, like 1920x1080; got '12x'",
        ),
        (
            ["up", "--max-size", "8000x720"],
            "argument --max-size: width 8000 is outside [320, 7680]",
        ),
        (["up", "--max-fps", "0"], "argument --max-fps: frame rate 0 is outside [1, 240]"),
        (["up", "--max-size", "1281x720"], "argument --max-size: width 1281 must be even"),
        (["up", "--capacity", "0"], "argument --capacity: capacity is a number of sessions, 1 to"),
        (["up", "--encoder", "quicksync"], "argument --encoder: invalid choice: 'quicksync'"),
        (
            ["bench", "encode", "--sizes", "8k"],
            "argument --sizes: sizes must be a comma-separated list",
        ),
    ],
)
def test_container_limits_outside_what_register_accepts_are_refused(
    argv: list[str], message: str
) -> None:
    result = subprocess.run(
        [*GAMECAST, *argv], check=False, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert f"error: {message}" in result.stderr, result.stderr


def test_render_benchmark_prints_a_table_and_writes_json(tmp_path) -> None:
    out = tmp_path / "render.json"
    result = subprocess.run(
        [*GAMECAST, "bench", "render", "--frames", "3", "--out", str(out)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    report = json.loads(out.read_text())
    stages = {(r["resolution"], r["stage"]) for r in report["results"]}
    assert ("1280x720", "game render I420 (sent)") in stages
    assert ("1920x1080", "RGB->I420 swscale") in stages
    assert "game render I420 (sent)" in result.stdout


def test_coordinates_benchmark_prints_each_seed_and_the_target(tmp_path) -> None:
    out = tmp_path / "coordinates.json"
    result = subprocess.run(
        [*GAMECAST, "bench", "coordinates", "--nodes", "200", "--rounds", "50", "--seeds", "2",
         "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    rows = json.loads(out.read_text())["results"]
    assert [(r["nodes"], r["seed"]) for r in rows] == [(200, 1), (200, 2)]
    assert all(0 <= r["median_error"] <= r["p90_error"] for r in rows)
    assert "target (issue 5): " in result.stdout


def test_encode_benchmark_compares_backends_and_says_why_one_is_missing(tmp_path) -> None:
    out = tmp_path / "encode.json"
    result = subprocess.run(
        [*GAMECAST, "bench", "encode", "--frames", "4", "--sizes", "720p", "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    report = json.loads(out.read_text())
    rows = {r["backend"]: r for r in report["results"]}
    assert set(rows) == {"nvenc (gamecast)", "x264 (gamecast)", "vp8 (gamecast fallback)",
                         "aiortc stock H.264"}  # fmt: skip
    for backend in ("x264 (gamecast)", "vp8 (gamecast fallback)", "aiortc stock H.264"):
        assert rows[backend]["fps"] > 0 and rows[backend]["bytes_per_frame"] > 0
    if rows["nvenc (gamecast)"]["note"]:  # no NVENC here: a reason instead of numbers
        assert rows["nvenc (gamecast)"]["note"].startswith("unavailable: ")
        assert "fps" not in rows["nvenc (gamecast)"]
    assert {r["implementation"] for r in report["conversion"]} == {"numpy", "cupy"}
    assert report["targets"][0]["target"] == "x264 720p p50 <= 4.0 ms"
    assert "targets (issue 4):" in result.stdout


def test_latency_benchmark_measures_each_configuration_with_the_bot(tmp_path) -> None:
    out = tmp_path / "latency.json"
    subprocess.run(
        [*GAMECAST, "bench", "latency", "--seconds", "1", "--no-browser", "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    report = json.loads(out.read_text())
    rows = report["results"]
    assert [r["config"] for r in rows] == [c.label for c in CONFIGURATIONS]
    assert [r["stream"] for r in rows][:2] == ["1280x720@60", "1920x1080@60"]
    checked = {(c["target"], c["client"]) for c in report["targets"]}
    assert ("glass-to-glass p50 <= 8 ms", "aiortc bot") in checked
    assert ("1080p60 received >= 58 fps", "aiortc bot") in checked
    for row in rows:
        assert row["client"] == "aiortc bot"
        assert row["received_fps"] > 0
        assert row["g2g_p50_ms"] > 0
        # Markers are read from most frames: a busy machine starves the receiver now and then,
        # and a frame it damaged reads as unreadable (one measured second is ~60 frames).
        assert row["unreadable"] < row["received_fps"] / 2


def test_indexer_benchmark_runs_through_the_cli_with_its_own_options(tmp_path) -> None:
    out = tmp_path / "indexer.json"
    result = subprocess.run(
        [*GAMECAST, "bench", "indexer", "--containers", "300", "--requests", "600",
         "--baseline-requests", "20", "--json", str(out)],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert report["config"]["containers"] == 300
    assert [r["decisions"] for r in report["results"]] == [600, 20]
    assert "speed-up over the scan" in result.stdout


def test_network_benchmark_reports_each_phase_and_a_bitrate_trace(tmp_path) -> None:
    out = tmp_path / "network.json"
    result = subprocess.run(
        [*GAMECAST, "bench", "network", "--before", "1", "--impaired", "2", "--after", "1",
         "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"gamecast", "aiortc stock H.264"}
    ours = report["results"]["gamecast"]
    assert [p["phase"] for p in ours["phases"]] == ["before", "impaired", "after"]
    # Media flowed (a phase of one second on a busy machine may see no complete frame itself).
    assert any(phase["received_fps"] > 0 for phase in ours["phases"])
    assert ours["link"]["dropped_loss"] + ours["link"]["dropped_queue"] > 0  # it was impaired
    assert {p["phase"] for p in ours["trace"]} == {"before", "impaired", "after"}
    assert all(p["target_mbps"] for p in ours["trace"])
    assert "impaired" in result.stdout
