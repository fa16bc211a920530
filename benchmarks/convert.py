"""RGB -> NV12 (BT.709) conversion cost per frame, for `gamecast bench encode`.

Two backends convert the same game picture: "numpy", the twin used as the CPU reference
(reference_game/colour.py), and "cupy", the kernel of the GPU frame path (streamer/gpu.py), timed
with CUDA events after warm-up. Issue 4's target: a 1080p conversion in 0.2 ms or less on an
H100.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from reference_game.colour import rgb_to_nv12
from reference_game.game import ReferenceGame
from streamer.gpu import conversion_times_ms
from verifier.frame_stats import percentile

BACKENDS = ("numpy", "cupy")
_WARMUP = 5


def measure_conversion(backend: str, width: int, height: int, frames: int) -> dict[str, Any]:
    """Convert one RGB game picture `frames` times with `backend`; fps and per-frame p50/p95.

    RGB because that is what the game draws on either path. fps is frames per second of
    conversion alone (1000 / mean ms), not of a stream. The result holds only measurements
    (frames, fps, p50_ms, p95_ms, mean_ms), so a caller can merge it into its own row. Raises
    ValueError for an unknown backend, and streamer.gpu.GpuUnavailableError, with the reason,
    for "cupy" where the GPU path cannot run.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown conversion backend {backend!r}; choose one of {BACKENDS}")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    picture = ReferenceGame(width, height, seed=1).render()
    if backend == "cupy":
        samples = conversion_times_ms(picture, frames, warmup=_WARMUP)
    else:
        for _ in range(_WARMUP):
            rgb_to_nv12(picture)
        samples = []
        for _ in range(frames):
            started = time.perf_counter()
            rgb_to_nv12(picture)
            samples.append((time.perf_counter() - started) * 1000)
    mean = statistics.fmean(samples)
    return {
        "frames": frames,
        "fps": round(1000 / mean, 1),
        "p50_ms": round(percentile(samples, 0.5), 4),
        "p95_ms": round(percentile(samples, 0.95), 4),
        "mean_ms": round(mean, 4),
    }
