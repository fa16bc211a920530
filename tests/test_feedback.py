"""Bitrate and keyframe decisions from receiver feedback, and the RTCP that carries it."""

from __future__ import annotations

import pytest
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    pack_remb_fci,
)

from streamer.feedback import BitrateChange, BitrateController, KeyframeGate
from streamer.rtcp_feedback import FeedbackHookError, dispatch, observe_feedback

FLOOR, CEILING = 1_000_000, 6_000_000
SSRC = 0x1234


def controller() -> BitrateController:
    return BitrateController(FLOOR, CEILING)


def test_starts_at_the_ceiling_and_follows_remb_within_the_range() -> None:
    rate = controller()
    assert rate.target == CEILING
    assert rate.on_estimate(3_000_000, now=1.0) == 3_000_000
    assert rate.on_estimate(50_000_000, now=2.0) == CEILING
    assert rate.on_estimate(100_000, now=3.0) == FLOOR
    assert [c.reason for c in rate.trace] == ["remb", "remb", "remb"]


def test_heavy_loss_cuts_by_half_the_loss() -> None:
    rate = controller()
    assert rate.on_loss(0.20, now=1.0) == int(CEILING * 0.9)
    assert rate.trace == [BitrateChange(1.0, int(CEILING * 0.9), "loss")]


@pytest.mark.parametrize("loss", [0.02, 0.05, 0.10])
def test_moderate_loss_holds(loss: float) -> None:
    rate = controller()
    rate.on_loss(0.5, now=0.0)
    held = rate.target
    assert rate.on_loss(loss, now=1.0) == held


def test_low_loss_recovers_by_five_percent_steps_up_to_the_ceiling() -> None:
    rate = controller()
    rate.on_loss(0.5, now=0.0)  # 75 %
    targets = [rate.on_loss(0.0, now=float(t)) for t in range(1, 10)]
    assert targets[0] == int(CEILING * 0.75 * 1.05)
    assert targets == sorted(targets) and targets[-1] == CEILING
    assert rate.trace[-1].reason == "recovery"


def test_target_is_the_lower_of_remb_and_loss_based() -> None:
    rate = controller()
    rate.on_estimate(5_000_000, now=0.0)
    rate.on_loss(0.4, now=1.0)  # loss-based: 5.0 * 0.8 = 4.0 Mb/s
    assert rate.target == 4_000_000
    rate.on_estimate(2_000_000, now=2.0)
    assert rate.target == 2_000_000


def test_the_trace_keeps_moves_of_one_percent_or_more() -> None:
    rate = controller()
    for step in range(100):  # REMB with every packet, wobbling by a few kb/s
        rate.on_estimate(3_000_000 + 1000 * (step % 3), now=step / 100)
    rate.on_estimate(2_900_000, now=2.0)
    assert [c.bitrate for c in rate.trace] == [3_000_000, 2_900_000]
    assert rate.target == 2_900_000


def test_floor_above_ceiling_is_refused() -> None:
    with pytest.raises(ValueError, match="floor <= ceiling"):
        BitrateController(2, 1)


def test_keyframe_requests_inside_the_interval_wait_and_are_coalesced() -> None:
    gate = KeyframeGate(interval=0.3)
    assert not gate.take(0.0)  # nothing asked
    gate.request()
    assert gate.take(0.0)
    for now in (0.05, 0.1, 0.2):  # a burst of PLIs after a loss
        gate.request()
        assert not gate.take(now)
    assert gate.take(0.31)  # one keyframe for the whole burst, once the interval is over
    assert not gate.take(0.7)
    assert (gate.requested, gate.granted) == (4, 2)


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []

    def on_estimate(self, bitrate: int) -> None:
        self.events.append(("estimate", bitrate))

    def on_loss(self, fraction_lost: float) -> None:
        self.events.append(("loss", fraction_lost))

    def on_keyframe_request(self) -> None:
        self.events.append(("keyframe", 0))


def _report(ssrc: int, fraction_lost: int) -> RtcpReceiverInfo:
    return RtcpReceiverInfo(
        ssrc=ssrc,
        fraction_lost=fraction_lost,
        packets_lost=3,
        highest_sequence=100,
        jitter=0,
        lsr=0,
        dlsr=0,
    )


def _application(fci: bytes) -> RtcpPsfbPacket:
    return RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=fci)


def _over_the_wire(packet: object) -> object:
    """Serialize and parse, as the receiver's packet reaches the sender."""
    (parsed,) = RtcpPacket.parse(bytes(packet))  # type: ignore[call-overload]
    return parsed


def test_rtcp_packets_become_feedback_for_our_stream_only() -> None:
    sink = Sink()
    packets = [
        RtcpRrPacket(ssrc=1, reports=[_report(SSRC, 64), _report(999, 255)]),
        RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=SSRC),
        RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=1, media_ssrc=SSRC),
        _application(pack_remb_fci(2_500_000, [SSRC])),
        _application(pack_remb_fci(1_000, [999])),
        _application(b"not remb"),
    ]
    for packet in packets:
        dispatch(_over_the_wire(packet), SSRC, sink)
    assert sink.events[0] == ("loss", 0.25)
    assert sink.events[1:3] == [("keyframe", 0), ("keyframe", 0)]
    assert sink.events[3][0] == "estimate" and sink.events[3][1] == pytest.approx(2_500_000, 0.01)
    assert len(sink.events) == 4


def test_observe_feedback_fails_loudly_when_aiortc_moves_its_hook() -> None:
    with pytest.raises(FeedbackHookError, match="must be ported"):
        observe_feedback(object(), Sink())  # type: ignore[arg-type]
