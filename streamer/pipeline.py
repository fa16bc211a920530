"""The sender pipeline: pace, render and encode in owned threads; the event loop only sends.

    render thread  --newest frame wins-->  encode thread  --in order-->  event loop (RTP)

The render thread wakes at each slot of a monotonic-clock pacer (streamer/pacing.py) and
produces a frame in its final pixel format. The encode thread takes the newest frame waiting;
a frame the encoder had no time for is replaced, not queued, so a slow encode costs frames
rather than adding latency. It hands each encoded frame on at a steady offset from its slot
(SteadyRelease), so the variation of encode times does not reach the player as jitter; in the
latency benchmark that halves the bot's frame-interval deviation and lowers Chromium's, for
a millisecond or two of latency (`steady_release=False` trades back).

Encoded frames reach the loop in order; they are never dropped one by one, because every
later frame references them. If the loop falls behind by more than
MAX_BACKLOG frames, the backlog is discarded whole and the stream restarts from an immediate
keyframe. Without an encoder (VP8, or aiortc's stock encoders as a baseline) raw frames go to
the loop and aiortc encodes them; there too only the newest waiting frame is kept.

Receiver feedback (streamer/rtcp_feedback.py) arrives on the loop: the bitrate decision is
made there, and the keyframe gate is shared with the encode thread under a lock.

Each frame's encode time and the moment it is handed to the sender are kept (`FrameTimings`)
for the indexer's live samples: the container's own account of its frame rate and encoder.

A container impaired on purpose (streamer/impairment.py) holds every output for a fixed time
before the loop gets it (`hold_output`): a third thread keeps a delay line and hands each
item on when it is due, so the loop's side is the same as without the delay.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiortc.mediastreams import MediaStreamError

from streamer.encoder import LowLatencyH264Encoder
from streamer.feedback import BitrateController, KeyframeGate
from streamer.impairment import DelayLine
from streamer.pacing import FramePacer, SteadyRelease

log = logging.getLogger(__name__)

MAX_BACKLOG = 3  # encoded frames waiting for the loop before the stream restarts from an IDR
TIMINGS_KEPT = 600  # per-frame timings kept between two reads (10 s at 60 fps)

FrameProducer = Callable[[int], Any]  # slot index -> av.VideoFrame, called in the render thread
_FAILED = object()  # what a thread that died on an error leaves for the loop


@dataclass
class PipelineStats:
    frames_rendered: int = 0
    frames_encoded: int = 0
    frames_sent: int = 0
    dropped_before_encode: int = 0  # replaced by a newer frame while the encoder was busy
    dropped_before_send: int = 0  # raw frames replaced, or encoded frames of a flushed backlog
    slots_skipped: int = 0  # pacer slots given up because rendering ran late
    backlog_flushes: int = 0
    keyframes: int = 0


class FrameTimings:
    """The sender's latest frames for live samples: when each was handed to the sender (ms on
    the monotonic clock) and how long each encode took, rounded to 10 us. The encode thread
    and the loop add; one reader takes what is new since its last `take`. Bounded: when
    nobody reads, the oldest are dropped."""

    def __init__(self, kept: int = TIMINGS_KEPT) -> None:
        self._sent: deque[float] = deque(maxlen=kept)
        self._encode: deque[float] = deque(maxlen=kept)
        self._lock = threading.Lock()

    def sent(self, at_ms: float) -> None:
        with self._lock:
            self._sent.append(at_ms)

    def encoded(self, took_ms: float) -> None:
        with self._lock:
            self._encode.append(took_ms)

    def take(self) -> tuple[list[float], list[float]]:
        """The send times and encode times added since the last take, oldest first."""
        with self._lock:
            sent, encode = list(self._sent), list(self._encode)
            self._sent.clear()
            self._encode.clear()
        return [round(t, 2) for t in sent], [round(t, 2) for t in encode]  # off the frame path


T = TypeVar("T")


class NewestFrame(Generic[T]):
    """A one-frame mailbox between two threads: a new frame replaces an unread one (the
    pipeline's render and encode threads, a window capture and the track)."""

    def __init__(self) -> None:
        self._frame: T | None = None
        self._closed = False
        self._error: Exception | None = None
        self._ready = threading.Condition()

    def put(self, frame: T) -> bool:
        """Leave `frame`; False when it replaced one that was never taken."""
        with self._ready:
            replaced = self._frame is not None
            self._frame = frame
            self._ready.notify_all()
        return not replaced

    def take(self, timeout: float | None = None) -> T | None:
        """The newest frame not taken before, waiting up to `timeout` seconds (None: until
        one comes or the mailbox closes); None when none came. A mailbox closed with an
        error raises it once no frame is left."""
        with self._ready:
            self._ready.wait_for(lambda: self._frame is not None or self._closed, timeout)
            if self._frame is None and self._error is not None:
                raise self._error
            frame, self._frame = self._frame, None
        return frame

    def close(self, error: Exception | None = None) -> None:
        with self._ready:
            self._closed = True
            self._error = error
            self._ready.notify_all()


class SenderPipeline:
    """One stream's render and encode threads, started by the first `next_output`."""

    def __init__(
        self,
        produce: FrameProducer,
        fps: int,
        encoder: LowLatencyH264Encoder | None,
        bitrate: BitrateController | None = None,
        steady_release: bool = True,
    ) -> None:
        self.fps = fps
        self.stats = PipelineStats()
        self.timings = FrameTimings()
        self.bitrate = bitrate
        self.keyframes = KeyframeGate()
        self._produce = produce
        self._encoder = encoder
        self._lock = threading.Lock()  # guards `keyframes` and `_restart` across threads
        self._restart = False  # the next encoded frame must be an immediate keyframe
        self._awaiting_keyframe = False  # loop side: discard output until a keyframe comes
        self._mailbox: NewestFrame[tuple[float, Any]] = NewestFrame()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._output: asyncio.Queue[Any] = asyncio.Queue()
        self._pacer = FramePacer(fps, 0.0)
        self.release = SteadyRelease(fps) if steady_release else None
        self._held: DelayLine[Any] | None = None  # outputs held back on purpose (hold_output)
        self._held_changed = threading.Condition()  # guards `_held` between its two threads

    @property
    def encoding(self) -> bool:
        return self._encoder is not None

    async def next_output(self) -> Any:
        """The next frame to send: an EncodedFrame, or a raw av.VideoFrame without an encoder."""
        if self._loop is None:
            self._start(asyncio.get_running_loop())
        while True:
            item = await self._output.get()
            if self._output.qsize() >= MAX_BACKLOG:
                item = self._flush_backlog(item)
            if item is _FAILED:
                raise MediaStreamError("the sender pipeline stopped on an error (see the log)")
            if self._awaiting_keyframe:
                if item is None or not item.keyframe:
                    self.stats.dropped_before_send += item is not None
                    continue
                self._awaiting_keyframe = False
            self.stats.frames_sent += 1
            self.timings.sent(time.monotonic() * 1000)
            return item

    def hold_output(self, delay: float) -> None:
        """Hold every output `delay` seconds before it is sent: an impairment for verifier
        tests and benchmarks (streamer/impairment.py). The rate is unchanged; only latency
        grows. Call it before the pipeline starts; 0 holds nothing."""
        if self._loop is not None:
            raise RuntimeError("hold_output must be called before the pipeline starts")
        self._held = DelayLine(delay) if delay > 0 else None

    def stop(self) -> None:
        self._stopped.set()
        self._mailbox.close()
        with self._held_changed:
            self._held_changed.notify()
        for thread in self._threads:
            thread.join(timeout=1.0)

    # Feedback from the receiver, called on the event loop (streamer/rtcp_feedback.py).

    def on_estimate(self, bitrate: int) -> None:
        if self.bitrate is not None:
            self._set_bitrate(self.bitrate.on_estimate(bitrate, time.monotonic()))

    def on_loss(self, fraction_lost: float) -> None:
        if self.bitrate is not None:
            self._set_bitrate(self.bitrate.on_loss(fraction_lost, time.monotonic()))

    def on_keyframe_request(self) -> None:
        with self._lock:
            self.keyframes.request()

    def _set_bitrate(self, bitrate: int) -> None:
        if self._encoder is not None:
            self._encoder.target_bitrate = bitrate

    # The threads.

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pacer = FramePacer(self.fps, time.monotonic())
        stages = [("render", self._render_loop)]
        if self._encoder is not None:
            stages.append(("encode", self._encode_loop))
        if self._held is not None:
            stages.append(("hold", self._hold_loop))
        for name, target in stages:
            thread = threading.Thread(target=target, name=f"gamecast-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _render_loop(self) -> None:
        try:
            while not self._stopped.is_set():
                slot = self._pacer.next_slot(time.monotonic())
                self.stats.slots_skipped += slot.skipped
                delay = slot.deadline - time.monotonic()
                if delay > 0 and self._stopped.wait(delay):
                    return
                frame = self._produce(slot.index)
                self.stats.frames_rendered += 1
                if self._encoder is not None:
                    if not self._mailbox.put((slot.deadline, frame)):
                        self.stats.dropped_before_encode += 1
                else:
                    self._deliver(frame)
        except Exception:
            log.exception("render thread failed; the stream stops")
            self._deliver(_FAILED)

    def _encode_loop(self) -> None:
        encoder = self._encoder
        assert encoder is not None
        try:
            while (taken := self._mailbox.take()) is not None:
                deadline, frame = taken
                with self._lock:
                    keyframe = self._restart or self.keyframes.take(time.monotonic())
                    self._restart = False
                started = time.perf_counter()
                encoded = encoder.encode_frame(frame, keyframe)
                self.timings.encoded((time.perf_counter() - started) * 1000)
                self.stats.frames_encoded += 1
                self.stats.keyframes += encoded.keyframe
                if self.release is not None:
                    now = time.monotonic()
                    delay = self.release.release_at(deadline, now) - now
                    if delay > 0 and self._stopped.wait(delay):
                        return
                self._deliver(encoded)
        except Exception:
            log.exception("encode thread failed; the stream stops")
            self._deliver(_FAILED)

    def _deliver(self, item: Any) -> None:
        """Hand `item` on from either thread: to the loop, or into the delay line."""
        if self._held is None:
            self._hand_to_loop(item)
            return
        with self._held_changed:
            self._held.push(item, time.monotonic())
            self._held_changed.notify()

    def _hand_to_loop(self, item: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self._stopped.set()
            return
        try:
            loop.call_soon_threadsafe(self._output.put_nowait, item)
        except RuntimeError:  # the loop closed between the check and the call
            self._stopped.set()

    def _hold_loop(self) -> None:
        """The hold thread: wait for the head of the delay line, hand on what is due."""
        held = self._held
        assert held is not None
        while True:
            with self._held_changed:  # checked under the lock `stop` notifies with
                if self._stopped.is_set():
                    return
                due = held.next_due
                wait = None if due is None else due - time.monotonic()
                if wait is None or wait > 0:
                    self._held_changed.wait(wait)
                    continue
                items = held.pop_due(time.monotonic())
            for item in items:
                self._hand_to_loop(item)

    def _flush_backlog(self, item: Any) -> Any:
        """The loop fell behind: keep the newest raw frame, or restart from a keyframe.

        Returns the item to go on with: the newest raw frame, _FAILED if the threads failed
        meanwhile, or None when nothing of the backlog may be sent.
        """
        backlog = [item]
        while not self._output.empty():
            backlog.append(self._output.get_nowait())
        self.stats.backlog_flushes += 1
        if _FAILED in backlog:
            return _FAILED
        if self._encoder is None:
            self.stats.dropped_before_send += len(backlog) - 1
            return backlog[-1]
        log.warning("sender fell %d frames behind; restarting from a keyframe", len(backlog))
        self.stats.dropped_before_send += len(backlog)
        with self._lock:
            self._restart = True
        self._awaiting_keyframe = True
        return None
