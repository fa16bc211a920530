"""playout-delay (min = max = 0): negotiated with real peers, written on every video packet."""

from __future__ import annotations

import pytest
from aiortc import rtp
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters

from streamer import playout_delay
from streamer.playout_delay import URI, ZERO_DELAY, PlayoutDelayHookError, install_playout_delay


def _configured(extensions: list[RTCRtpHeaderExtensionParameters]) -> rtp.HeaderExtensionsMap:
    install_playout_delay()
    extension_map = rtp.HeaderExtensionsMap()
    extension_map.configure(RTCRtpParameters(headerExtensions=extensions))
    return extension_map


def test_every_packet_carries_zero_delay_when_negotiated() -> None:
    mid = RTCRtpHeaderExtensionParameters(id=9, uri="urn:ietf:params:rtp-hdrext:sdes:mid")
    extension_map = _configured([mid, RTCRtpHeaderExtensionParameters(id=5, uri=URI)])
    values = rtp.HeaderExtensions()
    values.mid = "0"
    profile, data = extension_map.set(values)
    assert (5, ZERO_DELAY) in rtp.unpack_header_extensions(profile, data)
    assert extension_map.get(profile, data).mid == "0"

    packet = rtp.RtpPacket(payload_type=96, sequence_number=1, timestamp=0, payload=b"x")
    packet.extensions = values
    parsed = rtp.RtpPacket.parse(packet.serialize(extension_map), extension_map)
    assert (parsed.extensions.mid, parsed.payload) == ("0", b"x")


def test_nothing_is_added_when_the_player_did_not_offer_it() -> None:
    extension_map = _configured([])
    assert playout_delay.negotiated_id(extension_map) is None
    assert extension_map.set(rtp.HeaderExtensions()) == (0, b"")


def test_install_is_idempotent_and_offers_the_extension_once() -> None:
    from aiortc.codecs import HEADER_EXTENSIONS  # noqa: PLC0415

    install_playout_delay()
    install_playout_delay()
    assert [e.uri for e in HEADER_EXTENSIONS["video"]].count(URI) == 1


def test_fails_loudly_when_aiortc_moves_the_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(rtp, "HeaderExtensionsMap")
    with pytest.raises(PlayoutDelayHookError, match="must be ported"):
        install_playout_delay()
