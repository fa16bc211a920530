"""The reference game as an aiortc video track, fed by the sender pipeline's threads.

The track draws each frame in the pipeline's render thread (streamer/pipeline.py), in the
pixel format its encoder takes as it is, with the marker painted in:
- on the CPU, straight into I420 (BT.601; no colour conversion per frame);
- on a GPU (CuPy, streamer/gpu.py), as NV12 (BT.709) in GPU memory: handed to NVENC there
  without a host copy, or copied to the host once for x264 where the GPU has no NVENC.
Input events arrive from the event loop into a thread-safe queue that the render thread
drains before each frame, so the marker's input sequence is exactly what the pictured frame
had applied. Which encoder runs is decided once the codec is negotiated (`start`): gamecast's
own H.264 encoder in the pipeline, or none, leaving aiortc to encode (VP8, or the stock
baseline) from CPU frames.
"""

from __future__ import annotations

import fractions
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from streamer.colour import nv12_planes
from streamer.encoder import (
    BT601,
    BT709,
    MIN_BITRATE,
    NVENC,
    H264Backend,
    LowLatencyH264Encoder,
    bitrate_for,
)
from streamer.feedback import BitrateController
from streamer.game import ReferenceGame
from streamer.input_events import InputEvent
from streamer.marker import FrameMarker, paint_marker_i420
from streamer.pipeline import SenderPipeline

MAX_PENDING_INPUT = 1024  # a burst beyond this is dropped oldest-first; rate limits sit before it


# Draws the game's current state as a frame to encode; calls `mark` for the frame's marker
# once its pixels are final (shared/MARKER.md: the capture time).
FrameSource = Callable[[ReferenceGame, Callable[[], FrameMarker]], av.VideoFrame]


def cpu_frame(game: ReferenceGame, mark: Callable[[], FrameMarker]) -> av.VideoFrame:
    """The CPU path: I420 (BT.601) drawn directly, marker painted, wrapped without a copy."""
    picture = game.render_i420()
    paint_marker_i420(picture, mark())
    return av.VideoFrame.from_ndarray(picture, format="yuv420p")


def _gpu_frame_source(game: ReferenceGame, on_device: bool) -> FrameSource:
    """The GPU path (CuPy, GPU hosts only): NV12 (BT.709) drawn, marked and converted on the
    device, handed to NVENC where it is (`on_device`) or copied to the host once for x264."""
    from streamer.gpu import GpuFrameSource, nv12_to_host  # noqa: PLC0415

    source = GpuFrameSource(game)

    def frame(_: ReferenceGame, mark: Callable[[], FrameMarker]) -> av.VideoFrame:
        nv12 = source.render_nv12(mark())
        if on_device:
            return av.VideoFrame.from_dlpack(nv12_planes(nv12), format="nv12")
        return av.VideoFrame.from_ndarray(nv12_to_host(nv12), format="nv12")

    return frame


class GameVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(
        self,
        width: int,
        height: int,
        fps: int,
        seed: int = 0,
        *,
        gpu: bool = False,
        steady_release: bool = True,
    ) -> None:
        """`gpu`: draw on the GPU when gamecast's H.264 encoder runs (streamer/gpu.py);
        `steady_release`: hold encoded frames to a steady offset (streamer/pacing.py)."""
        super().__init__()
        self._steady_release = steady_release
        self.fps = fps
        self.game = ReferenceGame(width, height, seed)
        self._gpu = gpu
        self._frame_source: FrameSource = cpu_frame  # a GPU one, if `start` chooses it
        self.frames_produced = 0
        self.pipeline: SenderPipeline | None = None
        self._time_base = fractions.Fraction(1, fps)
        self._pending: deque[InputEvent] = deque(maxlen=MAX_PENDING_INPUT)

    def push_input(self, event: InputEvent) -> None:
        self._pending.append(event)

    def start(self, backend: H264Backend | None) -> SenderPipeline:
        """Build the pipeline: with gamecast's H.264 encoder, or (None) handing aiortc raw frames.

        Its threads start with the first `recv`, i.e. once the peer connection is up.
        """
        if self.pipeline is not None:
            raise RuntimeError("the track's pipeline is already built")
        encoder, bitrate = None, None
        if backend is not None:
            game = self.game
            if self._gpu:
                self._frame_source = _gpu_frame_source(game, on_device=backend is NVENC)
            encoder = LowLatencyH264Encoder(backend, BT709 if self._gpu else BT601)
            bitrate = BitrateController(MIN_BITRATE, bitrate_for(game.width, game.height, self.fps))
        self.pipeline = SenderPipeline(
            self._produce, self.fps, encoder, bitrate, self._steady_release
        )
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
        frame = self._frame_source(game, self._marker)
        frame.pts = slot
        frame.time_base = self._time_base
        self.frames_produced += 1
        return frame

    def _marker(self) -> FrameMarker:
        """This frame's marker; its capture time is now (shared/MARKER.md: pixels final)."""
        now_ms = time.time_ns() // 1_000_000
        return FrameMarker.at(self.frames_produced, now_ms, self.game.input_sequence)

    def stop(self) -> None:
        super().stop()
        if self.pipeline is not None:
            self.pipeline.stop()
