"""A game build's window, captured from its virtual X display into the streamer's pipeline.

    x11grab (XShm) --> swscale bgr0 -> I420 --newest frame wins--> render thread: marker, send

`WindowCapture` grabs the whole screen of the build's own display (the build is the only
client there, its window covers the screen) in an owned thread, at the manifest's frame
rate, paced by FFmpeg's x11grab, which grabs through MIT-SHM into its packet buffers. Each
grab is converted to I420 (BT.601, limited range: swscale's defaults, what the encoder
signals) by one reused swscale context in this thread, and gathered into one contiguous
(H * 3/2) x W numpy buffer, the layout the marker painter and the encoder take; that gather
is the only copy, as the planes swscale writes are padded apart. A frame nobody took before
the next grab is replaced, never queued.

Each captured frame keeps what its marker needs: the Unix time the grab returned (the
marker's capture time: the pixels were final then) and the highest input `seq` the server
had processed before the grab began (streamer/x_input.py; the build may not have drawn it
yet, and we cannot know more). Its capture latency runs from the grab's start, which x11grab
stamps in Unix microseconds, to the I420 buffer being ready.

x11grab does not notice a display that went away: it goes on returning the last picture.
What ends the session then is the build, which dies with its display (streamer/game_process).

`WindowFrames` is the track's frame source for a build (streamer/track.py `GameFrames`):
input goes to XTEST, and each frame is the newest capture, marked when the session asks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from types import TracebackType
from typing import cast

import av
from av.video.reformatter import Interpolation, VideoReformatter

from contracts.input_events import InputEvent
from contracts.marker import FrameMarker, paint_marker_i420
from contracts.planes import I420Frame
from streamer.encoder import BT601, ColourDescription, H264Backend
from streamer.errors import StreamerError
from streamer.pipeline import NewestFrame
from streamer.x_input import XTestInput

log = logging.getLogger(__name__)

FIRST_FRAME_LIMIT_S = 5.0  # how long the stream's first frame may wait for the first grab
_STOP_JOIN_S = 2.0
_TRUSTED_STAMP_US = 1_000_000  # x11grab's stamp is wall-clock; one further off is not that


class CaptureError(StreamerError, RuntimeError):
    """The display could not be captured (x11grab failed to open or to grab)."""


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    picture: I420Frame  # (H * 3/2) x W, this frame's own buffer
    grabbed_at_us: int  # Unix microseconds when the grab began
    returned_at_ms: int  # Unix milliseconds when the grab returned: the marker's capture time
    input_sequence: int  # the highest input seq processed before the grab began
    latency_ms: float  # from the grab's start to `picture` being ready


class WindowCapture:
    """Captures X display `display_name` (a `width` x `height` screen) at `fps` in a thread.

    `input_sequence(grab_start_us)` says which input the server had processed by then
    (`XTestInput.log.sequence_before`); without it every frame reports 0.
    """

    def __init__(
        self,
        display_name: str,
        width: int,
        height: int,
        fps: int,
        input_sequence: Callable[[int], int] = lambda _: 0,
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"I420 needs an even capture size, got {width}x{height}")
        self.display_name = display_name
        self.width, self.height, self.fps = width, height, fps
        self.frames_captured = 0
        self._input_sequence = input_sequence
        self._mailbox: NewestFrame[CapturedFrame] = NewestFrame()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    async def __aenter__(self) -> WindowCapture:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def start(self) -> None:
        if self._thread is not None:
            raise CaptureError("the capture is already started")
        self._thread = threading.Thread(target=self._run, name="gamecast-capture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop grabbing; returns within about one frame interval."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=_STOP_JOIN_S)

    def take(self, timeout: float) -> CapturedFrame | None:
        """The newest frame not taken before, waiting up to `timeout` seconds for one.

        Raises CaptureError once the capture has failed.
        """
        return self._mailbox.take(timeout)

    def _run(self) -> None:
        options = {
            "framerate": str(self.fps),
            "video_size": f"{self.width}x{self.height}",
            "draw_mouse": "0",  # the build draws its own cursor, if it wants one
        }
        try:
            with av.open(self.display_name, format="x11grab", options=options) as grab:
                self._grab_until_stopped(grab, time.time_ns() // 1000)
        except Exception as exc:
            log.exception("capturing %s failed", self.display_name)
            self._mailbox.close(CaptureError(f"capturing {self.display_name} failed: {exc}"))
            return
        if not self._stopped.is_set():
            self._mailbox.close(CaptureError(f"{self.display_name} stopped giving frames"))

    def _grab_until_stopped(self, grab: av.container.InputContainer, opened_us: int) -> None:
        stream = grab.streams.video[0]
        reformatter = VideoReformatter()  # one swscale context for every frame
        to_us = Fraction(1_000_000) * (stream.time_base or Fraction(1, 1_000_000))
        for packet in grab.demux(stream):
            returned_ns = time.time_ns()
            if self._stopped.is_set():
                return
            if packet.pts is None:
                continue
            stamp_us = int(packet.pts * to_us)
            if stamp_us < opened_us:
                continue  # grabbed while the container probed the stream: stale by now
            if abs(returned_ns // 1000 - stamp_us) > _TRUSTED_STAMP_US:
                stamp_us = returned_ns // 1000  # not a wall-clock stamp: the grab's end will do
            for raw in stream.codec_context.decode(packet):
                # threads=1: swscale's slice threads made it 2x slower on a 2-core host.
                i420 = reformatter.reformat(
                    raw, format="yuv420p", interpolation=Interpolation.BILINEAR, threads=1
                )
                picture = cast(I420Frame, i420.to_ndarray())  # planes gathered: one buffer
                latency_ms = (time.time_ns() // 1000 - stamp_us) / 1000
                self._deliver(
                    CapturedFrame(
                        picture,
                        stamp_us,
                        returned_ns // 1_000_000,
                        self._input_sequence(stamp_us),
                        latency_ms,
                    )
                )

    def _deliver(self, frame: CapturedFrame) -> None:
        self.frames_captured += 1
        self._mailbox.put(frame)


class WindowFrames:
    """A build's window as a track's frames (`GameFrames`): captured, marked, sent as I420.

    `mark`: paint the frame marker over the picture (a session asks for it; verification
    sessions always do). A frame is the newest capture; when none arrived within a frame
    interval (the capture runs slower than the stream) the last picture is sent again.
    """

    def __init__(self, capture: WindowCapture, x_input: XTestInput, *, mark: bool) -> None:
        self.capture = capture
        self.x_input = x_input
        self.mark = mark
        self.repeats = 0  # frames sent again for want of a new capture
        self._last: CapturedFrame | None = None

    @property
    def width(self) -> int:
        return self.capture.width

    @property
    def height(self) -> int:
        return self.capture.height

    def push_input(self, event: InputEvent) -> None:
        self.x_input.push(event)

    def prepare(self, backend: H264Backend | None) -> ColourDescription:
        return BT601  # swscale's default matrix for yuv420p, limited range

    def produce(self, frame_sequence: int) -> av.VideoFrame:
        wait = FIRST_FRAME_LIMIT_S if self._last is None else 1 / self.capture.fps
        captured = self.capture.take(wait)
        if captured is not None:
            self._last, picture = captured, captured.picture
        elif self._last is None:
            raise CaptureError(
                f"no frame captured from {self.capture.display_name} within {wait:.0f} s"
            )
        else:
            captured = self._last
            self.repeats += 1
            # Marking writes: the encoder may still be reading the buffer sent last time.
            picture = captured.picture.copy() if self.mark else captured.picture
        if self.mark:
            marker = FrameMarker.at(
                frame_sequence, captured.returned_at_ms, captured.input_sequence
            )
            paint_marker_i420(picture, marker)
        return av.VideoFrame.from_numpy_buffer(picture, format="yuv420p")
