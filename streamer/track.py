"""The reference game as an aiortc video track, fed by the sender pipeline's threads.

The track renders the game straight into I420 with the marker painted in (no colour
conversion per frame) inside the pipeline's render thread (streamer/pipeline.py). Input
events arrive from the event loop into a thread-safe queue that the render thread drains
before each frame, so the marker's input sequence is exactly what the pictured frame had
applied. Which encoder runs is decided once the codec is negotiated (`start`): gamecast's own
H.264 encoder in the pipeline, or none, leaving aiortc to encode (VP8, or the stock baseline).
"""

from __future__ import annotations

import fractions
import time
from collections import deque
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from streamer.encoder import MIN_BITRATE, LowLatencyH264Encoder, bitrate_for
from streamer.feedback import BitrateController
from streamer.game import ReferenceGame
from streamer.input_events import InputEvent
from streamer.marker import FrameMarker, paint_marker_i420
from streamer.pipeline import SenderPipeline

MAX_PENDING_INPUT = 1024  # a burst beyond this is dropped oldest-first; rate limits sit before it


class GameVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, width: int, height: int, fps: int, seed: int = 0) -> None:
        super().__init__()
        self.fps = fps
        self.game = ReferenceGame(width, height, seed)
        self.frames_produced = 0
        self.pipeline: SenderPipeline | None = None
        self._time_base = fractions.Fraction(1, fps)
        self._pending: deque[InputEvent] = deque(maxlen=MAX_PENDING_INPUT)

    def push_input(self, event: InputEvent) -> None:
        self._pending.append(event)

    def start(self, encode: bool) -> SenderPipeline:
        """Build the pipeline: with gamecast's H.264 encoder, or handing aiortc raw frames.

        Its threads start with the first `recv`, i.e. once the peer connection is up.
        """
        if self.pipeline is not None:
            raise RuntimeError("the track's pipeline is already built")
        encoder, bitrate = None, None
        if encode:
            game = self.game
            encoder = LowLatencyH264Encoder()
            bitrate = BitrateController(MIN_BITRATE, bitrate_for(game.width, game.height, self.fps))
        self.pipeline = SenderPipeline(self._produce, self.fps, encoder, bitrate)
        return self.pipeline

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError("the game track has stopped")
        if self.pipeline is None:
            raise MediaStreamError("the game track was never started (StreamSession.accept)")
        return await self.pipeline.next_output()

    def _produce(self, slot: int) -> av.VideoFrame:
        game = self.game
        while self._pending:
            game.apply(self._pending.popleft())
        game.advance()
        picture = game.render_i420()
        marker = FrameMarker.at(
            self.frames_produced, time.time_ns() // 1_000_000, game.input_sequence
        )
        paint_marker_i420(picture, marker)
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts = slot
        frame.time_base = self._time_base
        self.frames_produced += 1
        return frame

    def stop(self) -> None:
        super().stop()
        if self.pipeline is not None:
            self.pipeline.stop()
