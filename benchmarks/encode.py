"""`gamecast bench encode`: what each encoder backend costs per frame, against aiortc's own.

Each backend encodes the same game frames (marker painted, a key held so every frame
changes) back to back, at each resolution: frames per second, per-frame latency p50/p95
(encode and RTP packetization, what the streamer's encode thread pays), bytes per frame and
the process's CPU in % of one core. The baseline is aiortc's stock H.264 encoder in the same
run. A backend this host cannot run (NVENC without a driver, or on an H100) gets a row that
says why instead of numbers. Then the colour conversion the GPU path needs, RGBA to NV12, per
implementation (numpy on the CPU; the CuPy kernel where a GPU is).
"""

from __future__ import annotations

import argparse
import fractions
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import psutil
from aiortc.codecs.h264 import H264Encoder

from benchmarks.convert import BACKENDS as CONVERSIONS
from benchmarks.convert import measure_conversion
from benchmarks.report import machine, write_json
from contracts.input_events import KeyEvent
from contracts.marker import FrameMarker
from node.console import Column, table
from reference_game.game import ReferenceGame
from streamer.backends import nvenc_unavailable_reason
from streamer.encoder import H264_BACKENDS, FallbackVp8Encoder, LowLatencyH264Encoder, bitrate_for
from streamer.gpu import gpu_unavailable_reason
from streamer.track import cpu_frame
from verifier.frame_stats import percentile

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080), "4k": (3840, 2160)}
FPS = 60
DISTINCT_FRAMES = 30  # rendered once per size and cycled, so the game's cost stays out
X264_720P_TARGET_MS = 4.0  # issue 4: the x264 path at 720p, p50 per frame on this CPU
GPU_1080P_TARGET_MS = 0.2  # issue 4: GPU conversion of a 1080p frame on an H100

EncodeStep = Callable[[av.VideoFrame, bool], int]  # (frame, keyframe) -> bytes produced


@dataclass(frozen=True)
class Backend:
    label: str
    make: Callable[[], EncodeStep]
    unavailable: Callable[[], str | None] = lambda: None


def _ours(backend_name: str) -> Callable[[], EncodeStep]:
    def make() -> EncodeStep:
        encoder = LowLatencyH264Encoder(H264_BACKENDS[backend_name])
        return lambda frame, keyframe: encoder.encode_frame(frame, keyframe).size

    return make


def _aiortc(encoder_class: type[H264Encoder | FallbackVp8Encoder]) -> Callable[[], EncodeStep]:
    def make() -> EncodeStep:
        encoder = encoder_class()

        def step(frame: av.VideoFrame, keyframe: bool) -> int:
            payloads, _ = encoder.encode(frame, force_keyframe=keyframe)
            return sum(len(payload) for payload in payloads)

        return step

    return make


BACKENDS = (
    Backend("nvenc (gamecast)", _ours("nvenc"), nvenc_unavailable_reason),
    Backend("x264 (gamecast)", _ours("x264")),
    Backend("vp8 (gamecast fallback)", _aiortc(FallbackVp8Encoder)),
    Backend("aiortc stock H.264", _aiortc(H264Encoder)),
)
COLUMNS: tuple[Column, ...] = (
    ("backend", "backend", "{}"), ("resolution", "resolution", "{}"),
    ("fps", "fps", "{:.1f}"), ("p50_ms", "p50 ms", "{:.2f}"), ("p95_ms", "p95 ms", "{:.2f}"),
    ("bytes_per_frame", "bytes/frame", "{:.0f}"), ("cpu_pct", "CPU %", "{:.0f}"),
    ("note", "note", "{}"),
)  # fmt: skip
CONVERSION_COLUMNS: tuple[Column, ...] = (
    ("implementation", "RGBA->NV12", "{}"), ("resolution", "resolution", "{}"),
    ("fps", "frames/s", "{:.0f}"), ("p50_ms", "p50 ms", "{:.3f}"), ("p95_ms", "p95 ms", "{:.3f}"),
    ("note", "note", "{}"),
)  # fmt: skip


def game_frames(width: int, height: int) -> list[av.VideoFrame]:
    """Distinct, marked game frames as the streamer sends them (I420, time base 1/fps)."""
    game = ReferenceGame(width, height, seed=1)
    game.apply(KeyEvent(1, "KeyD", True))
    frames = []
    for index in range(DISTINCT_FRAMES):
        game.advance()
        frames.append(cpu_frame(game, functools.partial(FrameMarker.at, index, 0, 1)))
    return frames


def measure(backend: Backend, size: str, frames: list[av.VideoFrame], count: int) -> dict[str, Any]:
    row: dict[str, Any] = {"backend": backend.label, "resolution": size}
    reason = backend.unavailable()
    if reason is not None:
        return {**row, "note": f"unavailable: {reason}"}
    step = backend.make()
    time_base = fractions.Fraction(1, FPS)
    process = psutil.Process()
    latencies, sizes = [], []
    cpu_before, started = process.cpu_times(), time.perf_counter()
    for index in range(count):
        frame = frames[index % len(frames)]
        frame.pts, frame.time_base = index, time_base
        frame.pict_type = av.video.frame.PictureType.NONE  # undo the last backend's IDR flag
        begun = time.perf_counter()
        sizes.append(step(frame, index == 0))
        latencies.append((time.perf_counter() - begun) * 1000)
    elapsed, cpu_after = time.perf_counter() - started, process.cpu_times()
    busy = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    steady = latencies[1:]  # the first frame opens the encoder and is an IDR
    return {
        **row,
        "frames": count,
        "fps": round(count / elapsed, 1),
        "p50_ms": round(percentile(steady, 0.5), 2),
        "p95_ms": round(percentile(steady, 0.95), 2),
        "bytes_per_frame": round(statistics.fmean(sizes[1:])),
        "cpu_pct": round(100 * busy / elapsed),
        "note": "",
    }


def conversion_rows(sizes: list[str], frames: int) -> list[dict[str, Any]]:
    rows = []
    for implementation in CONVERSIONS:
        for size in sizes:
            row: dict[str, Any] = {"implementation": implementation, "resolution": size}
            reason = gpu_unavailable_reason() if implementation == "cupy" else None
            if reason is not None:
                rows.append({**row, "note": f"unavailable: {reason}"})
                continue
            width, height = SIZES[size]
            rows.append({**row, **measure_conversion(implementation, width, height, frames),
                         "note": ""})  # fmt: skip
    return rows


def targets(rows: list[dict[str, Any]], conversions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def value(found: list[dict[str, Any]]) -> float | None:
        return found[0].get("p50_ms") if found else None

    x264 = value([r for r in rows if r["backend"].startswith("x264") and r["resolution"] == "720p"])
    gpu = value([r for r in conversions if r["implementation"] == "cupy"
                 and r["resolution"] == "1080p"])  # fmt: skip
    return [
        {"target": f"x264 720p p50 <= {X264_720P_TARGET_MS} ms", "value": x264,
         "met": None if x264 is None else x264 <= X264_720P_TARGET_MS},
        {"target": f"GPU RGBA->NV12 1080p p50 <= {GPU_1080P_TARGET_MS} ms", "value": gpu,
         "met": None if gpu is None else gpu <= GPU_1080P_TARGET_MS},
    ]  # fmt: skip


def main(args: argparse.Namespace) -> None:
    sizes = args.sizes
    print(f"gamecast bench encode: {args.frames} frames per backend and resolution ({FPS} fps"
          f" time base), back to back, one process")  # fmt: skip
    rows = []
    for size in sizes:
        width, height = SIZES[size]
        frames = game_frames(width, height)
        for backend in BACKENDS:
            print(f"  {backend.label} at {size}", flush=True)
            rows.append(measure(backend, size, frames, args.frames))
    print(f"  RGBA->NV12 conversion, {args.frames} frames per size", flush=True)
    conversions = conversion_rows(sizes, args.frames)
    checks = targets(rows, conversions)
    print()
    print(table(rows, COLUMNS))
    print()
    print(table(conversions, CONVERSION_COLUMNS))
    print("\ntargets (issue 4):")
    for check in checks:
        verdict = {True: "met   ", False: "MISSED", None: "n/a   "}[check["met"]]
        print(f"  {verdict}  {check['target']:<36} {check['value']}")
    report = {"benchmark": "encode", "machine": machine(), "frames": args.frames,
              "bitrate_ceiling_720p60": bitrate_for(1280, 720, FPS), "results": rows,
              "conversion": conversions, "targets": checks}  # fmt: skip
    print(f"\nJSON written to {write_json(args.out, report)}")
