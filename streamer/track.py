"""The reference game as an aiortc video track, paced from a monotonic clock.

Rendering, marker painting and RGB->I420 conversion run in one owned thread per track, so the
event loop only sleeps until a frame is due and hands the frame on. Input events arrive from
the event loop into a thread-safe queue that the render thread drains before each frame, so
the marker's input sequence is exactly what the pictured frame had applied.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from streamer.game import ReferenceGame
from streamer.input_events import InputEvent
from streamer.marker import FrameMarker, paint_marker
from streamer.pacing import FramePacer

MAX_PENDING_INPUT = 1024  # a burst beyond this is dropped oldest-first; rate limits sit before it


class GameVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, width: int, height: int, fps: int, seed: int = 0) -> None:
        super().__init__()
        self.fps = fps
        self.game = ReferenceGame(width, height, seed)
        self.frames_produced = 0
        self._time_base = fractions.Fraction(1, fps)
        self._pending: deque[InputEvent] = deque(maxlen=MAX_PENDING_INPUT)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gamecast-render")
        self._pacer: FramePacer | None = None

    def push_input(self, event: InputEvent) -> None:
        self._pending.append(event)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError("the game track has stopped")
        if self._pacer is None:
            self._pacer = FramePacer(self.fps, time.monotonic())
        slot = self._pacer.next_slot(time.monotonic())
        delay = slot.deadline - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._produce, slot.index)

    def _produce(self, slot: int) -> av.VideoFrame:
        game = self.game
        while self._pending:
            game.apply(self._pending.popleft())
        game.advance()
        picture = game.render()
        marker = FrameMarker.at(
            self.frames_produced, time.time_ns() // 1_000_000, game.input_sequence
        )
        paint_marker(picture, marker)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts = slot
        frame.time_base = self._time_base
        self.frames_produced += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
