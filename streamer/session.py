"""One play session on the container: an aiortc peer streaming the game and taking input.

The player offers (video recvonly + an unordered, no-retransmit data channel "input"); we
answer with H.264 preferred. Every data-channel message is validated and rate limited; a bad
one is counted and answered with an error on the same channel, and the session goes on.
A container impaired on purpose (streamer/impairment.py) serves a lower frame rate, holds
frames back, or drops valid input here, as its options say.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from contracts import protocol as p
from contracts.input_events import EVENT_BURST, EVENTS_PER_SECOND, InputError, parse_input
from contracts.sdp import negotiated_video_codec, without_mdns_candidates
from contracts.token_bucket import TokenBucket
from streamer.encoder import H264_BACKENDS
from streamer.impairment import NO_IMPAIRMENT, Impairment
from streamer.rtcp_feedback import observe_feedback
from streamer.track import GameFrames, GameVideoTrack

log = logging.getLogger(__name__)

CODEC_PREFERENCES = {"h264": ("video/H264", "video/VP8"), "vp8": ("video/VP8", "video/H264")}
ERROR_REPLIES_PER_SECOND = 10


@dataclass
class InputCounters:
    accepted: int = 0
    rejected: int = 0
    rate_limited: int = 0
    ignored: int = 0  # valid, and dropped on purpose (Impairment.ignore_input)


@dataclass(frozen=True)
class StreamOptions:
    width: int
    height: int
    fps: int
    codec: str = "h264"
    encoder: str = "x264"  # one of streamer.encoder.ENCODERS, as streamer.backends chose it
    seed: int = 0
    gpu: bool = False  # draw frames with CuPy when gamecast's H.264 encoder runs
    steady_release: bool = True  # even frame intervals for ~1 ms of latency (streamer/pacing.py)
    impairment: Impairment = NO_IMPAIRMENT  # faults on purpose, for verifier tests


class StreamSession:
    """Owns the peer connection and the game track of one session."""

    def __init__(
        self,
        session_id: str,
        options: StreamOptions,
        on_playing: Callable[[], Awaitable[None]],
        on_ended: Callable[[str], Awaitable[None]],
        frames: GameFrames | None = None,
    ) -> None:
        """`frames`: a build's window (streamer/build_run.py); None streams the reference game."""
        self.session_id = session_id
        self.options = options
        self.track = GameVideoTrack(
            options.width,
            options.height,
            options.impairment.frame_rate(options.fps),
            options.seed,
            gpu=options.gpu and frames is None,
            steady_release=options.steady_release,
            frames=frames,
        )
        self.input = InputCounters()
        self._pc = RTCPeerConnection()
        self._on_playing = on_playing
        self._on_ended = on_ended
        self._ended = False
        now = time.monotonic()
        self._input_bucket = TokenBucket(EVENTS_PER_SECOND, EVENT_BURST, now)
        self._error_bucket = TokenBucket(ERROR_REPLIES_PER_SECOND, ERROR_REPLIES_PER_SECOND, now)
        self._pc.on("connectionstatechange", self._connection_state_changed)
        self._pc.on("datachannel", self._attach_input_channel)

    @property
    def video_sender(self) -> RTCRtpSender:
        return next(s for s in self._pc.getSenders() if s.track is self.track)

    async def accept(self, offer_sdp: str) -> str:
        """Apply the player's offer and return our answer (with all our ICE candidates)."""
        # aiortc applies codec preferences while it reads the offer, so the sending transceiver
        # must exist, with its preferences, before the offer does.
        transceiver = self._pc.addTransceiver(self.track, direction="sendonly")
        preferred = CODEC_PREFERENCES[self.options.codec]
        rank = {mime: index for index, mime in enumerate(preferred)}
        codecs = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences(
            sorted(
                (c for c in codecs if c.mimeType in rank or c.mimeType == "video/rtx"),
                key=lambda c: rank.get(c.mimeType, len(rank)),
            )
        )
        offer = RTCSessionDescription(without_mdns_candidates(offer_sdp), "offer")
        await self._pc.setRemoteDescription(offer)
        if transceiver.mid is None:
            raise ValueError("the offer has no video section to stream into")
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        answer: str = self._pc.localDescription.sdp
        h264 = negotiated_video_codec(answer) == "video/H264"
        backend = H264_BACKENDS.get(self.options.encoder) if h264 else None
        pipeline = self.track.start(backend)
        pipeline.hold_output(self.options.impairment.extra_delay_ms / 1000)
        if backend is not None:
            observe_feedback(transceiver.sender, pipeline)
        return answer

    def timings(self) -> p.SessionTimings | None:
        """The frames sent since the last call, for the indexer's live samples; None when
        there are none (the stream has not started, or stalled)."""
        pipeline = self.track.pipeline
        if pipeline is None:
            return None
        sent, encode = pipeline.timings.take()
        if not sent and not encode:
            return None
        return p.SessionTimings(self.session_id, sent, encode)

    async def close(self, reason: str = "closed") -> None:
        if not self._ended:
            self._ended = True
            log.info("session %s ended: %s", self.session_id, reason)
        self.track.stop()
        await self._pc.close()

    async def _connection_state_changed(self) -> None:
        state = self._pc.connectionState
        if state == "connected":
            await self._on_playing()
        elif state in ("failed", "closed") and not self._ended:
            self._ended = True
            await self._on_ended(f"peer connection {state}")

    def _attach_input_channel(self, channel: object) -> None:
        if getattr(channel, "label", None) != "input":
            return
        channel.on("message", lambda raw: self._handle_input(channel, raw))  # type: ignore[attr-defined]

    def _handle_input(self, channel: object, raw: str | bytes) -> None:
        now = time.monotonic()
        if not self._input_bucket.allow(now):
            self.input.rate_limited += 1
            self._reply_error(
                channel,
                InputError(
                    "rate_limited", f"more than {EVENTS_PER_SECOND} input events per second"
                ),
                now,
            )
            return
        try:
            event = parse_input(raw)
        except InputError as exc:
            self.input.rejected += 1
            self._reply_error(channel, exc, now)
            return
        if self.options.impairment.ignore_input:
            self.input.ignored += 1
            return
        self.input.accepted += 1
        self.track.push_input(event)

    def _reply_error(self, channel: object, error: InputError, now: float) -> None:
        if not self._error_bucket.allow(now):
            return  # a flood gets counted, not answered one by one
        reply = {"type": "error", "code": error.code, "reason": error.reason, "seq": error.seq}
        channel.send(json.dumps(reply))  # type: ignore[attr-defined]
