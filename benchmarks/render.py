"""`gamecast bench render`: what one frame of the reference game costs the container's CPU.

Per resolution: rendering the game (numpy), painting the marker, and converting RGB to I420
(swscale, as the streamer does), each as p50/p95 per frame and as a share of the 60 fps frame
budget. The same frames converted by a plain numpy BT.601 conversion are the baseline that
shows why the streamer leaves conversion to swscale.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

from benchmarks.latency import machine
from streamer.game import ReferenceGame
from streamer.input_events import KeyEvent
from streamer.marker import FrameMarker, paint_marker
from verifier.frame_stats import percentile

RESOLUTIONS = ((1280, 720), (1920, 1080))
FRAME_BUDGET_MS = 1000 / 60


def _numpy_i420(rgb: np.ndarray) -> np.ndarray:
    """A straightforward vectorised BT.601 limited-range conversion: the baseline."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    quarter = (u[0::2, 0::2] + u[1::2, 0::2] + u[0::2, 1::2] + u[1::2, 1::2]) / 4
    v_quarter = (v[0::2, 0::2] + v[1::2, 0::2] + v[0::2, 1::2] + v[1::2, 1::2]) / 4
    planes = (y.ravel(), quarter.ravel(), v_quarter.ravel())
    return np.concatenate(planes).clip(0, 255).astype(np.uint8)


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

    picture = game.render()
    stages = {
        "game render": render,
        "marker paint": lambda: paint_marker(picture, FrameMarker.at(1, 0, 1)),
        "RGB->I420 swscale": lambda: av.VideoFrame.from_ndarray(picture, "rgb24").reformat(
            format="yuv420p"
        ),
        "RGB->I420 numpy (baseline)": lambda: _numpy_i420(picture),
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
    header = f"{'resolution':<11}{'stage':<28}{'p50 ms':>8}{'p95 ms':>8}{'% of 16.7 ms':>14}"
    print(header)
    for r in rows:
        print(f"{r['resolution']:<11}{r['stage']:<28}{r['p50_ms']:>8.3f}{r['p95_ms']:>8.3f}"
              f"{r['budget_pct_at_60fps']:>14.1f}")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"benchmark": "render", "machine": machine(), "results": rows}, indent=2)
    )
    print(f"\nJSON written to {out}")
