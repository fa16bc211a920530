"""`gamecast bench render`: what one frame of the reference game costs the container's CPU.

Per resolution, p50/p95 per frame and as a share of the 60 fps frame budget: what the
streamer does per frame (draw the game straight into I420, paint the marker, wrap the buffer
as a frame: the stages marked "sent") against what it did before (draw RGB, convert it with
swscale) and against a whole-frame numpy conversion, the baseline that shows why the game
draws in I420 instead of converting.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import av

from benchmarks.report import machine, write_json
from contracts.input_events import KeyEvent
from contracts.marker import FrameMarker, paint_marker, paint_marker_i420
from node.console import table
from reference_game.colour import rgb_to_i420
from reference_game.game import ReferenceGame
from verifier.frame_stats import percentile

RESOLUTIONS = ((1280, 720), (1920, 1080))
FRAME_BUDGET_MS = 1000 / 60
COLUMNS = (
    ("resolution", "resolution", "{}"), ("stage", "stage", "{}"), ("p50_ms", "p50 ms", "{:.3f}"),
    ("p95_ms", "p95 ms", "{:.3f}"), ("budget_pct_at_60fps", "% of 16.7 ms", "{:.1f}"),
)  # fmt: skip


def _time(step: Callable[[], object], frames: int) -> list[float]:
    samples = []
    for _ in range(frames):
        started = time.perf_counter()
        step()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def measure(width: int, height: int, frames: int) -> list[dict[str, Any]]:
    game = ReferenceGame(width, height, seed=1)
    game.apply(KeyEvent(1, "KeyD", True))

    def render() -> None:
        game.advance()
        game.render()

    def render_i420() -> None:
        game.advance()
        game.render_i420()

    picture, drawn = game.render(), game.render_i420()
    marker = FrameMarker.at(1, 0, 1)
    stages = {
        "game render RGB": render,
        "game render I420 (sent)": render_i420,
        "marker paint RGB": lambda: paint_marker(picture, marker),
        "marker paint I420 (sent)": lambda: paint_marker_i420(drawn, marker),
        "I420 -> av.VideoFrame (sent)": lambda: av.VideoFrame.from_ndarray(drawn, "yuv420p"),
        "RGB->I420 swscale": lambda: av.VideoFrame.from_ndarray(picture, "rgb24").reformat(
            format="yuv420p"
        ),
        "RGB->I420 numpy (background, once)": lambda: rgb_to_i420(picture),
    }
    rows = []
    for stage, step in stages.items():
        _time(step, 5)  # warm caches and lazily built tables
        samples = _time(step, frames)
        p50 = percentile(samples, 0.5)
        rows.append(
            {
                "resolution": f"{width}x{height}",
                "stage": stage,
                "p50_ms": round(p50, 3),
                "p95_ms": round(percentile(samples, 0.95), 3),
                "mean_ms": round(statistics.fmean(samples), 3),
                "budget_pct_at_60fps": round(100 * p50 / FRAME_BUDGET_MS, 1),
            }
        )
    return rows


def main(args: argparse.Namespace) -> None:
    print(f"gamecast bench render: {args.frames} frames per stage and resolution")
    rows = [row for width, height in RESOLUTIONS for row in measure(width, height, args.frames)]
    print(table(rows, COLUMNS))
    report = {"benchmark": "render", "machine": machine(), "results": rows}
    print(f"\nJSON written to {write_json(args.out, report)}")
