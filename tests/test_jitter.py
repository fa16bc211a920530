"""Marker-bit frame release in the bot's aiortc receiver, fed real RTP packets."""

from __future__ import annotations

import aiortc.rtcrtpreceiver
import pytest
from aiortc import (
    RTCCertificate,
    RTCDtlsTransport,
    RTCIceGatherer,
    RTCIceTransport,
    RTCRtpReceiver,
)
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from tests.conftest import unexplained_gaps
from verifier.jitter import JitterHookError, MarkerBitJitterBuffer, install_marker_release


def _packet(seq: int, timestamp: int, data: bytes, marker: bool = False) -> RtpPacket:
    packet = RtpPacket(
        payload_type=96, marker=int(marker), sequence_number=seq, timestamp=timestamp
    )
    packet._data = data  # what aiortc's receiver sets after depayloading, before the buffer
    return packet


def _video_buffer() -> MarkerBitJitterBuffer:
    return MarkerBitJitterBuffer(capacity=512, is_video=True)  # as aiortc builds it for video


def _feed(buffer: JitterBuffer, *packets: RtpPacket) -> list[tuple[bytes, int] | None]:
    """What each `add` released, as (data, timestamp) or None; asserts no PLI was asked."""
    released: list[tuple[bytes, int] | None] = []
    for packet in packets:
        pli, frame = buffer.add(packet)
        assert not pli
        released.append(None if frame is None else (frame.data, frame.timestamp))
    return released


def test_frame_is_released_on_its_marker_packet_without_a_later_packet() -> None:
    released = _feed(
        _video_buffer(),
        _packet(100, 3000, b"a"),
        _packet(101, 3000, b"b"),
        _packet(102, 3000, b"c", marker=True),
    )
    assert released == [None, None, (b"abc", 3000)]


def test_consecutive_frames_each_release_on_their_own_marker() -> None:
    released = _feed(
        _video_buffer(),
        _packet(100, 3000, b"a", marker=True),
        _packet(101, 4500, b"b"),
        _packet(102, 4500, b"c", marker=True),
    )
    assert released == [(b"a", 3000), None, (b"bc", 4500)]


def test_out_of_order_packets_release_only_when_the_frame_is_complete() -> None:
    released = _feed(
        _video_buffer(),
        _packet(100, 3000, b"a"),
        _packet(103, 3000, b"d", marker=True),
        _packet(102, 3000, b"c"),
        _packet(101, 3000, b"b"),
    )
    assert released == [None, None, None, (b"abcd", 3000)]


def test_missing_middle_packet_holds_the_frame_until_its_retransmission() -> None:
    buffer = _video_buffer()
    assert _feed(buffer, _packet(100, 3000, b"a"), _packet(102, 3000, b"c", marker=True)) == [
        None,
        None,
    ]
    # aiortc unwraps an RTX retransmission to the original sequence number before the buffer.
    assert _feed(buffer, _packet(101, 3000, b"b")) == [(b"abc", 3000)]


def test_sequence_numbers_wrap_from_65535_to_0() -> None:
    released = _feed(
        _video_buffer(),
        _packet(65534, 3000, b"a"),
        _packet(65535, 3000, b"b"),
        _packet(0, 3000, b"c", marker=True),
        _packet(1, 4500, b"d"),
        _packet(2, 4500, b"e", marker=True),
    )
    assert released == [None, None, (b"abc", 3000), None, (b"de", 4500)]


def test_frame_without_a_marker_is_released_by_the_next_frames_first_packet() -> None:
    released = _feed(
        _video_buffer(),
        _packet(100, 3000, b"a"),
        _packet(101, 3000, b"b"),
        _packet(102, 4500, b"c"),
    )
    assert released == [None, None, (b"ab", 3000)]


def test_lost_marker_packet_holds_the_frame_as_aiortc_does_until_it_is_retransmitted() -> None:
    sent = [
        _packet(100, 3000, b"a"),
        _packet(102, 4500, b"c"),  # 101, frame 3000's marker packet, was lost
        _packet(103, 4500, b"d", marker=True),
    ]
    assert _feed(JitterBuffer(capacity=512, is_video=True), *sent) == [None, None, None]
    buffer = _video_buffer()
    assert _feed(buffer, *sent) == [None, None, None]
    assert _feed(buffer, _packet(101, 3000, b"b", marker=True)) == [(b"ab", 3000)]
    # One frame per `add` (aiortc's contract): the complete next frame leaves on the next packet.
    assert _feed(buffer, _packet(104, 6000, b"e")) == [(b"cd", 4500)]


def test_big_misorder_still_resets_the_buffer_and_asks_for_a_keyframe() -> None:
    buffer = _video_buffer()
    _feed(buffer, _packet(1000, 3000, b"a"))
    pli, frame = buffer.add(_packet(800, 1500, b"z", marker=True))
    assert pli
    assert frame is not None
    assert (frame.data, frame.timestamp) == (b"z", 1500)  # restarted at the old packet


def test_overflow_still_asks_for_a_keyframe() -> None:
    buffer = _video_buffer()
    _feed(buffer, _packet(1000, 3000, b"a"))
    pli, _ = buffer.add(_packet(1000 + buffer.capacity, 9000, b"b"))
    assert pli


async def test_install_makes_new_video_receivers_release_on_the_marker(monkeypatch) -> None:
    monkeypatch.setattr(aiortc.rtcrtpreceiver, "JitterBuffer", JitterBuffer)
    install_marker_release()
    install_marker_release()  # idempotent
    assert aiortc.rtcrtpreceiver.JitterBuffer is MarkerBitJitterBuffer

    transport = RTCDtlsTransport(
        RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()]
    )
    receiver = RTCRtpReceiver("video", transport)
    try:
        assert isinstance(receiver._RTCRtpReceiver__jitter_buffer, MarkerBitJitterBuffer)
    finally:
        await receiver.stop()
        await transport.stop()


def test_install_fails_loudly_when_aiortc_moves_the_jitter_buffer(monkeypatch) -> None:
    monkeypatch.delattr(aiortc.rtcrtpreceiver, "JitterBuffer")
    with pytest.raises(JitterHookError, match=r"verifier/jitter\.py must be ported"):
        install_marker_release()
    monkeypatch.setattr(aiortc.rtcrtpreceiver, "JitterBuffer", object, raising=False)
    with pytest.raises(JitterHookError, match=r"aiortc\.rtcrtpreceiver no longer builds"):
        install_marker_release()


async def test_bot_session_decodes_readable_frames_through_marker_release(
    network, playing_bot
) -> None:
    _, agent = network
    bot = playing_bot
    await bot.wait_frames(60)
    receiver = bot._pc.getReceivers()[0]
    assert isinstance(receiver._RTCRtpReceiver__jitter_buffer, MarkerBitJitterBuffer)
    assert bot.log.unreadable == 0
    assert unexplained_gaps(bot, agent) == 0
