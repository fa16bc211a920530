"""The RTCP seam: hand a sender's receiver feedback to gamecast's own encoder pipeline.

aiortc routes each RTCP packet to `RTCRtpSender._handle_rtcp_packet`, which retransmits on
NACK, flags a keyframe on PLI/FIR and passes REMB to its encoder. Our encoder runs in the
streamer's own thread (streamer/pipeline.py), out of aiortc's reach, so this module wraps
that one method per sender: aiortc keeps doing its part (NACK/RTX, statistics) and every
packet is also translated into the three things our encoder acts on. It is not a public
aiortc API: `observe_feedback` fails loudly if an upgrade moves it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiortc import RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)

from streamer.errors import StreamerError


class FeedbackHookError(StreamerError, RuntimeError):
    """aiortc no longer routes RTCP where this module hooks in; update the seam."""


class FeedbackSink(Protocol):
    def on_estimate(self, bitrate: int) -> None: ...

    def on_loss(self, fraction_lost: float) -> None: ...

    def on_keyframe_request(self) -> None: ...


def dispatch(packet: Any, ssrc: int, sink: FeedbackSink) -> None:
    """Tell `sink` what one RTCP packet says about the stream with this `ssrc`."""
    if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
        for report in packet.reports:
            if report.ssrc == ssrc:
                sink.on_loss(report.fraction_lost / 256)
    elif isinstance(packet, RtcpPsfbPacket):
        if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            sink.on_keyframe_request()
        elif packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return  # an application packet that is not REMB
            if ssrc in ssrcs:
                sink.on_estimate(bitrate)


def observe_feedback(sender: RTCRtpSender, sink: FeedbackSink) -> None:
    """Route every RTCP packet `sender` receives to `sink` as well as to aiortc."""
    original: Callable[[Any], Awaitable[None]] | None = getattr(sender, "_handle_rtcp_packet", None)
    ssrc = getattr(sender, "_ssrc", None)
    if original is None or not isinstance(ssrc, int):
        raise FeedbackHookError(
            "RTCRtpSender no longer has _handle_rtcp_packet/_ssrc: "
            "streamer/rtcp_feedback.py must be ported to this aiortc version"
        )

    async def handle(packet: Any) -> None:
        dispatch(packet, ssrc, sink)
        await original(packet)

    sender._handle_rtcp_packet = handle  # type: ignore[method-assign]
