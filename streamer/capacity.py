"""How many sessions a container can serve at once, per stream shape, from what a frame costs.

A session costs its container, per second, `fps` frames of drawing and encoding on the
container's threads, plus the sending (RTP packetization, SRTP, UDP) that aiortc does on
the event loop, which costs about as much again (`SEND_OVERHEAD`, from `gamecast bench
latency`: 41 % of a core for a 720p60 stream whose frames cost ~3.4 ms to draw and encode).
The agent times a few frames of its own encoder at start (`measure_frame_ms`) and divides the
host's cores, minus headroom, by that: a self-benchmark, not a table of guesses. An operator
who knows better overrides it (`gamecast container --capacity N`).
"""

from __future__ import annotations

import fractions
import functools
import math
import time
from collections.abc import Iterable

from contracts.input_events import KeyEvent
from contracts.marker import FrameMarker
from contracts.protocol import MAX_SESSIONS, StreamCapacity
from reference_game.game import ReferenceGame
from streamer.encoder import BT601, H264Backend, LowLatencyH264Encoder
from streamer.errors import StreamerError
from streamer.track import cpu_frame

SEND_OVERHEAD = 2.0  # whole-session CPU per unit of draw + encode time (see the docstring)
HEADROOM = 0.8  # share of the cores sessions may take; the rest is the agent's and the OS's
WARMUP_FRAMES = 6  # encoded but not timed (see measure_frame_ms)


class CapacityError(StreamerError, RuntimeError):
    """This host cannot stream any shape it would offer; the message says what to change."""


def describe(capacity: Iterable[StreamCapacity]) -> str:
    """One line for logs and the CLI, e.g. "1280x720@60 x3, 1920x1080@60 x1"."""
    return ", ".join(f"{c.width}x{c.height}@{c.fps} x{c.sessions}" for c in capacity)


def sessions_for(frame_ms: float, fps: int, cores: int) -> int:
    """Sessions of `fps` frames costing `frame_ms` each that `cores` sustain with headroom."""
    if frame_ms <= 0 or fps <= 0 or cores <= 0:
        raise ValueError(f"need positive frame cost, fps and cores; got {frame_ms}, {fps}, {cores}")
    share_of_a_core = fps * frame_ms / 1000 * SEND_OVERHEAD
    return min(MAX_SESSIONS, math.floor(cores * HEADROOM / share_of_a_core))


def capacity_from_costs(
    frame_ms: dict[tuple[int, int], float],
    shapes: Iterable[tuple[int, int, int]],
    cores: int,
) -> list[StreamCapacity]:
    """Per shape, sessions from the measured cost of a frame at its size; a shape this host
    cannot sustain even once is left out, so no player is matched to it. None at all is an
    error: an empty list would read, to the indexer, as an agent that predates capacity."""
    capacity = []
    for width, height, fps in shapes:
        sessions = sessions_for(frame_ms[(width, height)], fps, cores)
        if sessions >= 1:
            capacity.append(StreamCapacity(width, height, fps, sessions))
    if not capacity:
        costs = ", ".join(f"{w}x{h} {ms:.1f} ms" for (w, h), ms in frame_ms.items())
        raise CapacityError(
            f"this host cannot sustain one session of any shape it would offer (a frame costs "
            f"{costs} on {cores} cores): lower --max-size or --max-fps, or set --capacity"
        )
    return capacity


def fixed_capacity(shapes: Iterable[tuple[int, int, int]], sessions: int) -> list[StreamCapacity]:
    """The operator's figure, the same for every shape."""
    if not 1 <= sessions <= MAX_SESSIONS:
        raise ValueError(f"capacity must be 1 to {MAX_SESSIONS} sessions, got {sessions}")
    return [StreamCapacity(w, h, fps, sessions) for w, h, fps in shapes]


def measure_frame_ms(backend: H264Backend, width: int, height: int, frames: int = 12) -> float:
    """Ms to draw, mark and encode one game frame at this size with `backend`: the lower
    quartile of the timed frames, the host's own cost rather than a busy neighbour's (a frame
    only takes longer than that when something else held the core; the median of a start-up
    on a loaded machine once found no shape at all and refused to start).

    The first WARMUP_FRAMES are not counted: the first opens the encoder and is an IDR, and
    x264's next few cost up to twice a steady frame, which would halve the capacity.
    """
    game = ReferenceGame(width, height, seed=1)
    game.apply(KeyEvent(1, "KeyD", True))
    encoder = LowLatencyH264Encoder(backend, BT601)
    time_base = fractions.Fraction(1, 60)
    samples = []
    for index in range(WARMUP_FRAMES + frames):
        started = time.perf_counter()
        game.advance()
        frame = cpu_frame(game, functools.partial(FrameMarker.at, index, 0, 1))
        frame.pts, frame.time_base = index, time_base
        encoder.encode_frame(frame, keyframe=index == 0)
        samples.append((time.perf_counter() - started) * 1000)
    steady = sorted(samples[WARMUP_FRAMES:])
    return steady[len(steady) // 4]
