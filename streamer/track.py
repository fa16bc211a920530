"""A game as an aiortc video track, fed by the sender pipeline's threads.

What the track streams comes from a `GameFrames` source: the reference game (the default)
or a game build's window captured from its virtual display (streamer/window_capture.py). The
track numbers the frames; the source makes each one in the pipeline's render thread
(streamer/pipeline.py), in the pixel format the encoder takes as it is, with the marker
painted in. The reference game draws:
- on the CPU, straight into I420 (BT.601; no colour conversion per frame);
- on a GPU (CuPy, streamer/gpu.py), as NV12 (BT.709) in GPU memory: handed to NVENC there
  without a host copy, or copied to the host once for x264 where the GPU has no NVENC.
Which encoder runs is decided once the codec is negotiated (`start`): gamecast's own H.264
encoder in the pipeline, or none, leaving aiortc to encode (VP8, or the stock baseline)
from CPU frames.
"""

from __future__ import annotations

import fractions
import functools
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from contracts.input_events import MAX_QUEUED_EVENTS, InputEvent
from contracts.marker import FrameMarker, paint_marker_i420
from contracts.planes import nv12_planes
from reference_game.game import ReferenceGame
from streamer.encoder import (
    BT601,
    BT709,
    MIN_BITRATE,
    NVENC,
    ColourDescription,
    H264Backend,
    LowLatencyH264Encoder,
    bitrate_for,
)
from streamer.feedback import BitrateController
from streamer.pipeline import SenderPipeline

# Draws the game's current state as a frame to encode; calls `mark` for the frame's marker
# once its pixels are final (shared/MARKER.md: the capture time).
FrameSource = Callable[[ReferenceGame, Callable[[], FrameMarker]], av.VideoFrame]


def cpu_frame(game: ReferenceGame, mark: Callable[[], FrameMarker]) -> av.VideoFrame:
    """The CPU path: I420 (BT.601) drawn directly, marker painted, copied once into the frame
    (`from_ndarray`; the game redraws its buffer for the next frame while this one encodes)."""
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


class GameFrames(Protocol):
    """Where a track's pictures come from: the reference game, drawn, or a build's window,
    captured (streamer/window_capture.py). The track numbers the frames and paces them; the
    source applies input and makes each picture, with its marker, in its final pixel format.
    """

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    def push_input(self, event: InputEvent) -> None:
        """Take a validated input event; called on the event loop, so it must not block."""

    def prepare(self, backend: H264Backend | None) -> ColourDescription:
        """Choose the pixel path for gamecast's `backend` (None: aiortc encodes CPU frames),
        once, before the first frame; the colour the frames will be in."""

    def produce(self, frame_sequence: int) -> av.VideoFrame:
        """The next picture, marked as frame `frame_sequence`; called in the render thread."""


class ReferenceGameFrames:
    """The reference game as a frame source: input applied before each frame, then drawn.

    Input events arrive from the event loop into a thread-safe queue that the render thread
    drains before each frame, so the marker's input sequence is exactly what the pictured
    frame had applied.
    """

    def __init__(self, width: int, height: int, seed: int = 0, *, gpu: bool = False) -> None:
        """`gpu`: draw on the GPU when gamecast's H.264 encoder runs (streamer/gpu.py)."""
        self.game = ReferenceGame(width, height, seed)
        self._gpu = gpu
        self._frame_source: FrameSource = cpu_frame  # a GPU one, if `prepare` chooses it
        self._pending: deque[InputEvent] = deque(maxlen=MAX_QUEUED_EVENTS)

    @property
    def width(self) -> int:
        return self.game.width

    @property
    def height(self) -> int:
        return self.game.height

    def push_input(self, event: InputEvent) -> None:
        self._pending.append(event)

    def prepare(self, backend: H264Backend | None) -> ColourDescription:
        if backend is not None and self._gpu:
            self._frame_source = _gpu_frame_source(self.game, on_device=backend is NVENC)
        return BT709 if self._gpu else BT601

    def produce(self, frame_sequence: int) -> av.VideoFrame:
        game = self.game
        while self._pending:
            game.apply(self._pending.popleft())
        game.advance()
        return self._frame_source(game, functools.partial(self._marker, frame_sequence))

    def _marker(self, frame_sequence: int) -> FrameMarker:
        """This frame's marker; its capture time is now (shared/MARKER.md: pixels final)."""
        now_ms = time.time_ns() // 1_000_000
        return FrameMarker.at(frame_sequence, now_ms, self.game.input_sequence)


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
        frames: GameFrames | None = None,
    ) -> None:
        """`frames`: where the pictures come from, `width` x `height` of them; by default the
        reference game with `seed`, drawn on the GPU if `gpu` (streamer/gpu.py) when
        gamecast's H.264 encoder runs. `steady_release`: hold encoded frames to a steady
        offset (streamer/pacing.py)."""
        super().__init__()
        if frames is None:
            frames = ReferenceGameFrames(width, height, seed, gpu=gpu)
        elif gpu:
            raise ValueError("gpu=True draws the reference game; it cannot apply to `frames`")
        elif (frames.width, frames.height) != (width, height):
            raise ValueError(
                f"the track is {width}x{height} but its frames are {frames.width}x{frames.height}"
            )
        self.frames = frames
        self._steady_release = steady_release
        self.fps = fps
        self.frames_produced = 0
        self.pipeline: SenderPipeline | None = None
        self._time_base = fractions.Fraction(1, fps)

    def push_input(self, event: InputEvent) -> None:
        self.frames.push_input(event)

    def start(self, backend: H264Backend | None) -> SenderPipeline:
        """Build the pipeline: with gamecast's H.264 encoder, or (None) handing aiortc raw frames.

        Its threads start with the first `recv`, i.e. once the peer connection is up.
        """
        if self.pipeline is not None:
            raise RuntimeError("the track's pipeline is already built")
        encoder, bitrate = None, None
        colour = self.frames.prepare(backend)
        if backend is not None:
            frames = self.frames
            encoder = LowLatencyH264Encoder(backend, colour)
            bitrate = BitrateController(
                MIN_BITRATE, bitrate_for(frames.width, frames.height, self.fps)
            )
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
        frame = self.frames.produce(self.frames_produced)
        frame.pts = slot
        frame.time_base = self._time_base
        self.frames_produced += 1
        return frame

    def stop(self) -> None:
        super().stop()
        if self.pipeline is not None:
            self.pipeline.stop()
