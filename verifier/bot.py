"""A headless player built on aiortc: plays through the real signaling server, reads markers.

It speaks exactly what the browser speaks (play, offer with a recvonly video section and an
unordered no-retransmit "input" channel, answer), so what it measures is what a player gets.
Asked to, it also reports a summary of its frames every STATS_PERIOD_S as the page reports its
getStats summary (PlayerStatsReport), so its session can be sampled live like a browser's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import aiohttp
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from contracts import protocol as p
from contracts.marker import FrameMarker, MarkerError, read_marker
from contracts.sdp import negotiated_video_codec
from verifier.errors import VerifierError
from verifier.frame_stats import FrameLog
from verifier.jitter import install_marker_release
from verifier.live_sample import STATS_PERIOD_S, bot_summary


class BotError(VerifierError, RuntimeError):
    """The server refused the bot, or the session ended before it could play; `code` is the
    server's error code when it refused ("unavailable": no seat now)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def luma_plane(frame: Any) -> np.ndarray:
    """The Y plane of a decoded yuv420p frame as an H x W array, without a colour conversion."""
    plane = frame.planes[0]
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


class MediaRoute(Protocol):
    """Rewrites the ICE candidates of both sides so media crosses something in between."""

    def route_offer(self, offer_sdp: str) -> str: ...

    def route_answer(self, answer_sdp: str) -> str: ...


# Called on the event loop with each decoded frame's marker (None: unreadable) and the
# decoded av.VideoFrame itself.
FrameObserver = Callable[[FrameMarker | None, Any], None]


class BotPlayer:
    def __init__(
        self,
        player_url: str,
        codec: str | None = None,
        route: MediaRoute | None = None,
        observe: FrameObserver | None = None,
        *,
        report_stats: bool = False,
    ) -> None:
        """`codec` (e.g. "video/VP8") restricts the offer to one codec, like a narrow browser.

        `route` sends the media through a relay (testbed/relay.py emulates a lossy,
        narrow link: the kernel here has no netem). `observe` sees every decoded picture (a
        bot session keeps the frames it judges input reactions on). `report_stats`: send a
        summary of its frames while playing, as the page does (`stats_summary`).

        Installs marker-bit frame release process-wide before its peer exists, so latency is
        measured without aiortc's one-frame hold; the container process receives no video.
        """
        install_marker_release()
        self.player_url = player_url
        self.codec = codec
        self.route = route
        self.observe = observe
        self.report_stats = report_stats
        self.container: str | None = None  # the container the server matched
        self.codec_received = ""  # the MIME type the container's answer settled on
        self.log = FrameLog()
        self.latest_frame: Any = None
        self.session_id: str | None = None
        self.session_state = "requested"
        self.end_reason: str | None = None
        self.errors: list[dict[str, Any]] = []  # error replies on the input channel
        self._progress = asyncio.Condition()  # notified on every decoded frame
        self._channel_open = asyncio.Event()
        self._pc = RTCPeerConnection()
        self._channel = self._pc.createDataChannel("input", ordered=False, maxRetransmits=0)
        self._channel.on("message", self._on_channel_message)
        self._channel.on("open", self._channel_open.set)
        self._next_seq = 1
        self._reader: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def play(
        self,
        http: aiohttp.ClientSession,
        game: str = "reference",
        width: int = 1280,
        height: int = 720,
        fps: int = 60,
        *,
        ticket: str = "",
        marker: bool = True,
    ) -> AsyncIterator[BotPlayer]:
        """Connect, negotiate and receive frames until the block exits.

        `ticket`, a verifier's bot-check ticket (Play.ticket), seats the bot on the container
        under check; "" plays like any player. `marker`: ask for the frame marker (Play.marker).
        """
        async with http.ws_connect(self.player_url) as ws:
            try:
                play = p.Play(game, width, height, fps, ticket=ticket, marker=marker)
                await self._negotiate(ws, play)
            except BaseException:
                await self.close()  # refused or timed out: the peer still holds its sockets
                raise
            # Keep reading: it answers the server's pings and hears how the session goes.
            tasks = [asyncio.create_task(self._follow_signaling(ws))]
            if self.report_stats:
                tasks.append(asyncio.create_task(self._send_stats(ws)))
            try:
                yield self
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if not ws.closed:
                    await ws.send_str(p.End(reason="bot finished").to_json())
                await self.close()

    async def _negotiate(self, ws: aiohttp.ClientWebSocketResponse, play: p.Play) -> None:
        await ws.send_str(play.to_json())
        matched = await self._expect(ws, p.Matched)
        self.session_id = matched.session
        self.container = matched.container
        transceiver = self._pc.addTransceiver("video", direction="recvonly")
        if self.codec is not None:
            capabilities = RTCRtpReceiver.getCapabilities("video")
            assert capabilities is not None  # aiortc always knows video
            wanted = [c for c in capabilities.codecs if c.mimeType == self.codec]
            transceiver.setCodecPreferences(wanted)
        self._pc.on("track", self._start_reading)
        await self._pc.setLocalDescription(await self._pc.createOffer())
        offer_sdp = self._pc.localDescription.sdp
        if self.route is not None:
            offer_sdp = self.route.route_offer(offer_sdp)
        await ws.send_str(p.Offer(offer_sdp).to_json())
        answer_sdp = (await self._expect(ws, p.SessionAnswer)).sdp
        if self.route is not None:
            answer_sdp = self.route.route_answer(answer_sdp)
        self.codec_received = negotiated_video_codec(answer_sdp) or ""
        await self._pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._pc.close()

    def send_input(self, event: dict[str, Any]) -> int:
        """Send one input event (without seq); returns the seq it was given."""
        seq = self._next_seq
        self._next_seq += 1
        self.log.input_sent(seq, time.time() * 1000)
        self._channel.send(json.dumps({**event, "seq": seq}))
        return seq

    def stats_summary(self) -> p.PlayerStats:
        """What the page would report now (verifier/live_sample.py `bot_summary`)."""
        frame = self.latest_frame
        return bot_summary(
            self.log,
            time.time() * 1000,
            width=0 if frame is None else frame.width,
            height=0 if frame is None else frame.height,
            codec=self.codec_received,
        )

    def send_raw(self, data: str | bytes) -> None:
        """Send bytes as they are: for tests of hostile input."""
        self._channel.send(data)

    async def wait_channel_open(self) -> None:
        await self._channel_open.wait()

    async def wait_frames(self, count: int) -> None:
        await self._wait_for(lambda: self.log.frames >= count)

    async def wait_input_applied(self, seq: int) -> FrameMarker:
        """Wait for the first frame whose marker shows input `seq` applied, and return it."""
        samples = self.log.samples
        await self._wait_for(lambda: bool(samples) and samples[-1].marker.input_sequence >= seq)
        return samples[-1].marker

    async def _wait_for(self, predicate: Callable[[], bool]) -> None:
        async with self._progress:
            await self._progress.wait_for(predicate)

    async def _expect(self, ws: aiohttp.ClientWebSocketResponse, kind: type[p.Message]) -> Any:
        async with asyncio.timeout(15):
            async for frame in ws:
                message = p.parse_message(frame.data, "server")
                if isinstance(message, kind):
                    return message
                if isinstance(message, p.Error | p.Ended):
                    code = message.code if isinstance(message, p.Error) else ""
                    raise BotError(f"server answered {message.to_json()}", code)
        raise BotError("signaling closed before the session started")

    async def _follow_signaling(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:
            message = p.parse_message(frame.data, "server")
            if isinstance(message, p.SessionState):
                self.session_state = message.state
            elif isinstance(message, p.Ended):
                self.session_state = "ended"
                self.end_reason = message.reason

    async def _send_stats(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Every STATS_PERIOD_S while playing, with frames to summarise (a drift of a few
        ms a report matters no more here than to the page's setInterval)."""
        while not ws.closed:
            await asyncio.sleep(STATS_PERIOD_S)
            if self.session_state == "playing" and self.latest_frame is not None:
                await ws.send_str(p.PlayerStatsReport(self.stats_summary()).to_json())

    def _start_reading(self, track: Any) -> None:
        if track.kind == "video" and self._reader is None:
            self._reader = asyncio.create_task(self._read_frames(track))

    async def _read_frames(self, track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                received = time.time() * 1000
                try:
                    marker: FrameMarker | None = read_marker(luma_plane(frame))
                except MarkerError:
                    marker = None
                self.log.add(marker, received)
                if self.observe is not None:
                    self.observe(marker, frame)
                self.latest_frame = frame
                async with self._progress:
                    self._progress.notify_all()

    def _on_channel_message(self, raw: str | bytes) -> None:
        with contextlib.suppress(ValueError):
            self.errors.append(json.loads(raw))
