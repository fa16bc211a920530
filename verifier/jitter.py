"""Release a received video frame on its RTP marker bit, as libwebrtc does.

aiortc's receiver reassembles video in `aiortc.jitterbuffer.JitterBuffer`, which only knows a
frame has ended when a packet with the next frame's timestamp arrives. The last frame thus
waits one whole frame interval (15.6 ms at 60 fps) before it reaches the decoder, and a bot
built on aiortc would report that hold as streaming latency. RFC 7741 section 4.1 (VP8) and
RFC 6184 section 5.1 (H.264) set the marker bit on a frame's last packet, so a frame whose
packets are all present up to that bit is complete. aiortc offers no option for this;
`install_marker_release` swaps the class at the one place the receiver looks it up.
"""

from __future__ import annotations

import aiortc.rtcrtpreceiver as _receiver_module
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from verifier.errors import VerifierError


class JitterHookError(VerifierError, RuntimeError):
    """aiortc no longer builds its jitter buffer where this module hooks in; update the seam."""


class MarkerBitJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer, plus: a video frame is complete at its marker packet.

    Everything else is aiortc's: a timestamp change still ends a frame (a sender that never
    sets the marker still plays), a hole still holds the frame until NACK/RTX fills it, and
    misorder, overflow and the PLI flag are untouched because only `_remove_frame` changes.
    """

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        if not self._is_video or self._origin is None:
            return super()._remove_frame(sequence_number)
        packets: list[RtpPacket] = []
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None:
                return None  # a hole: aiortc would not release anything either
            if packets and packet.timestamp != packets[0].timestamp:
                break  # the frame ended without a marker: aiortc's own rule applies
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                data = b"".join(p._data for p in packets)  # type: ignore[attr-defined]
                return JitterFrame(data=data, timestamp=packet.timestamp)
        return super()._remove_frame(sequence_number)


def install_marker_release() -> None:
    """Make every aiortc receiver created afterwards in this process release on the marker.

    Process-wide on purpose: the only video receivers are the bot's (the container process
    sends video and receives none), and aiortc gives no per-receiver hook. Idempotent.
    """
    current = getattr(_receiver_module, "JitterBuffer", None)
    if current is MarkerBitJitterBuffer:
        return
    if current is not JitterBuffer:
        raise JitterHookError(
            "aiortc.rtcrtpreceiver no longer builds aiortc.jitterbuffer.JitterBuffer by that "
            "name in this aiortc version: verifier/jitter.py must be ported before the bot "
            "can release frames on the RTP marker bit"
        )
    _receiver_module.JitterBuffer = MarkerBitJitterBuffer  # type: ignore[attr-defined]
