"""The loss/delay/bandwidth relay: its link model on a fake clock, its SDP routing on golden
SDP, its sockets on loopback, and two real aiortc peers connected through it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from testbed.relay import (
    HOST_PRIORITY,
    LinkConfig,
    LinkModel,
    RelayError,
    SdpRoutingError,
    UdpRelay,
    route_candidates,
)
from tests.conftest import eventually

Address = tuple[str, int]

# --- LinkModel: times are computed, so they are asserted exactly (binary-exact values) -------


def test_loss_rate_over_ten_thousand_packets_is_the_configured_one() -> None:
    link = LinkModel(LinkConfig(loss=0.1), seed=7)
    delivered = [link.admit(i * 0.001, 1200) is not None for i in range(10_000)]
    assert abs(link.counters.dropped_loss / 10_000 - 0.1) < 0.01
    assert link.counters.delivered == sum(delivered)
    assert link.counters.dropped_queue == 0

    twin = LinkModel(LinkConfig(loss=0.1), seed=7)
    assert [twin.admit(i * 0.001, 1200) is not None for i in range(10_000)] == delivered
    other = LinkModel(LinkConfig(loss=0.1), seed=8)
    assert [other.admit(i * 0.001, 1200) is not None for i in range(10_000)] != delivered


def test_no_loss_and_total_loss_are_exact() -> None:
    clean, dead = LinkModel(LinkConfig(loss=0.0)), LinkModel(LinkConfig(loss=1.0))
    for i in range(1000):
        assert clean.admit(float(i), 100) == float(i)
        assert dead.admit(float(i), 100) is None
    assert (clean.counters.delivered, dead.counters.dropped_loss) == (1000, 1000)


def test_rate_cap_spaces_back_to_back_packets_by_their_serialization_time() -> None:
    # 500 bytes at 8000 bit/s take 0.5 s on the link; the 0.25 s delay comes after it.
    link = LinkModel(LinkConfig(rate_bps=8000, queue_ms=10_000, delay_ms=250))
    assert [link.admit(0.0, 500) for _ in range(4)] == [0.75, 1.25, 1.75, 2.25]
    # The link is free again at 2.0: a packet at 5.0 waits for nothing.
    assert link.admit(5.0, 500) == 5.75
    assert link.counters.delivered_bytes == 2500


def test_queue_overflow_tail_drops_the_packet_that_would_wait_too_long() -> None:
    link = LinkModel(LinkConfig(rate_bps=8000, queue_ms=2000))  # 1000 bytes: 1 s each
    assert link.admit(0.0, 1000) == 1.0  # waits 0 s
    assert link.admit(0.0, 1000) == 2.0  # waits 1 s
    assert link.admit(0.0, 1000) == 3.0  # waits 2 s: exactly the limit, kept
    assert link.admit(0.0, 1000) is None  # would wait 3 s
    assert link.admit(2.5, 1000) == 4.0  # the queue has drained to 0.5 s
    assert link.counters == dataclasses.replace(
        link.counters, packets_in=5, delivered=4, dropped_queue=1, dropped_loss=0
    )
    assert link.counters.bytes_in == 5000


def test_fixed_delay_without_a_cap_is_added_to_every_packet() -> None:
    link = LinkModel(LinkConfig(delay_ms=250))
    assert [link.admit(t, 1500) for t in (1.0, 1.0, 3.5)] == [1.25, 1.25, 3.75]


def test_rate_change_at_runtime_applies_to_later_packets_only() -> None:
    link = LinkModel(LinkConfig(rate_bps=8000, queue_ms=10_000))
    assert [link.admit(0.0, 1000) for _ in range(2)] == [1.0, 2.0]
    link.config = dataclasses.replace(link.config, rate_bps=16_000)
    assert [link.admit(0.0, 1000) for _ in range(2)] == [2.5, 3.0]
    link.config = dataclasses.replace(link.config, rate_bps=None)
    # The cap lifted, the backlog drains at once but never overtakes what is queued.
    assert link.admit(0.0, 1000) == 3.0
    assert link.admit(4.0, 1000) == 4.0


def test_loss_change_at_runtime_keeps_the_seeded_pattern() -> None:
    link, twin = LinkModel(LinkConfig(loss=0.5), seed=3), LinkModel(LinkConfig(loss=0.5), seed=3)
    link.config = LinkConfig(loss=1.0)
    assert all(link.admit(0.0, 10) is None for _ in range(10))
    link.config = LinkConfig(loss=0.5)
    for _ in range(10):
        twin.admit(0.0, 10)  # the same ten draws, whatever the loss was
    assert [link.admit(0.0, 10) for _ in range(50)] == [twin.admit(0.0, 10) for _ in range(50)]


def test_a_shorter_delay_never_reorders_the_link() -> None:
    link = LinkModel(LinkConfig(delay_ms=1000))
    assert link.admit(0.0, 100) == 1.0
    link.config = LinkConfig(delay_ms=0)
    assert link.admit(0.5, 100) == 1.0
    assert link.admit(2.0, 100) == 2.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"loss": 1.5}, "loss must be a probability in [0, 1], got 1.5"),
        ({"rate_bps": 0}, "rate_bps must be positive and finite, or None, got 0"),
        ({"queue_ms": -1}, "queue_ms must be >= 0, got -1"),
        ({"delay_ms": float("inf")}, "delay_ms must be finite and >= 0, got inf"),
    ],
)
def test_invalid_link_configuration_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        LinkConfig(**changes)
    assert str(raised.value) == message


def test_negative_packet_size_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^packet size must be >= 0, got -1$"):
        LinkModel().admit(0.0, -1)


# --- SDP routing: golden aiortc SDP (its shape as aiortc 1.16 writes it) ----------------------

AIORTC_OFFER = """\
v=0
o=- 4004529898 4004529898 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0 1
a=msid-semantic:WMS *
m=video 56619 UDP/TLS/RTP/SAVPF 97
c=IN IP4 192.0.2.2
a=sendrecv
a=mid:0
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
a=candidate:f957a2332b1715da3b0ef8ba684454eb 1 udp 2130706431 192.0.2.2 56619 typ host
a=candidate:d0bcf3d9c29a2bc887618212a1623bfa 1 udp 2130706431 fd00::2 40611 typ host
a=end-of-candidates
a=ice-ufrag:W5Xj
a=ice-pwd:E2ujhDgHdeooItI6GaWH51
a=setup:actpass
m=application 46194 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 192.0.2.2
a=mid:1
a=sctp-port:5000
a=candidate:f957a2332b1715da3b0ef8ba684454eb 1 udp 2130706431 192.0.2.2 46194 typ host
a=candidate:d0bcf3d9c29a2bc887618212a1623bfa 1 udp 2130706431 fd00::2 59893 typ host
a=end-of-candidates
a=ice-ufrag:W5Xj
a=ice-pwd:E2ujhDgHdeooItI6GaWH51
a=setup:actpass
""".replace("\n", "\r\n")

ROUTED_OFFER = f"""\
v=0
o=- 4004529898 4004529898 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0 1
a=msid-semantic:WMS *
m=video 40000 UDP/TLS/RTP/SAVPF 97
c=IN IP4 127.0.0.1
a=sendrecv
a=mid:0
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
a=candidate:gamecastrelay 1 udp {HOST_PRIORITY} 127.0.0.1 40000 typ host
a=end-of-candidates
a=ice-ufrag:W5Xj
a=ice-pwd:E2ujhDgHdeooItI6GaWH51
a=setup:actpass
m=application 40000 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 127.0.0.1
a=mid:1
a=sctp-port:5000
a=candidate:gamecastrelay 1 udp {HOST_PRIORITY} 127.0.0.1 40000 typ host
a=end-of-candidates
a=ice-ufrag:W5Xj
a=ice-pwd:E2ujhDgHdeooItI6GaWH51
a=setup:actpass
""".replace("\n", "\r\n")


def test_aiortc_offer_is_routed_to_one_relay_candidate_per_section() -> None:
    routed, real = route_candidates(AIORTC_OFFER, 40000)
    assert routed == ROUTED_OFFER
    assert real == ("192.0.2.2", 56619)  # the BUNDLE's first mid carries the session
    assert HOST_PRIORITY == 2130706431


def test_loopback_candidate_is_preferred_and_line_endings_are_kept() -> None:
    sdp = (
        "v=0\nm=application 5000 UDP/DTLS/SCTP webrtc-datachannel\nc=IN IP4 10.0.0.1\n"
        "a=candidate:a 1 udp 100 10.0.0.1 5000 typ host\n"
        "a=candidate:b 1 udp 90 127.0.0.1 6000 typ host\n"
        "a=candidate:c 1 UDP 80 127.0.0.1 7000 typ host\n"
    )
    routed, real = route_candidates(sdp, 41000)
    assert real == ("127.0.0.1", 6000)
    assert routed == (
        "v=0\nm=application 41000 UDP/DTLS/SCTP webrtc-datachannel\nc=IN IP4 127.0.0.1\n"
        f"a=candidate:gamecastrelay 1 udp {HOST_PRIORITY} 127.0.0.1 41000 typ host\n"
    )  # no a=end-of-candidates came in, none goes out


def test_non_host_tcp_and_rtcp_candidates_are_not_taken_for_the_peer() -> None:
    sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
        "a=candidate:a 1 udp 100 203.0.113.9 5000 typ srflx raddr 10.0.0.1 rport 4000\r\n"
        "a=candidate:b 1 tcp 100 10.0.0.1 5001 typ host tcptype passive\r\n"
        "a=candidate:c 2 udp 100 10.0.0.1 5002 typ host\r\n"
        "a=candidate:d 1 udp 100 10.0.0.1 5003 typ host\r\n"
    )
    assert route_candidates(sdp, 1)[1] == ("10.0.0.1", 5003)


def test_rejected_sections_are_left_alone() -> None:
    sdp = (
        "v=0\r\na=group:BUNDLE 1\r\nm=audio 0 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n"
        "a=mid:0\r\nm=application 5000 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 10.0.0.1\r\n"
        "a=mid:1\r\na=candidate:a 1 udp 100 10.0.0.1 5000 typ host\r\n"
    )
    routed, _ = route_candidates(sdp, 42000)
    assert "m=audio 0 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n" in routed
    assert "m=application 42000 " in routed


@pytest.mark.parametrize(
    ("sdp", "message"),
    [
        (
            "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n",
            "the SDP has no ICE candidates to route (gather before routing)",
        ),
        (
            "v=0\r\nm=application 5 UDP/DTLS/SCTP x\r\n"
            "a=candidate:a 1 udp 1 fd00::2 5 typ host\r\n",
            "the SDP has no IPv4 UDP host candidate for component 1",
        ),
        (
            "v=0\r\nm=audio 5 RTP/AVP 0\r\na=mid:0\r\na=candidate:a 1 udp 1 10.0.0.1 5 typ host\r\n"
            "m=video 6 RTP/AVP 96\r\na=mid:1\r\na=candidate:a 1 udp 1 10.0.0.1 6 typ host\r\n",
            "the SDP needs 2 ICE transports; the relay carries one (use BUNDLE)",
        ),
    ],
    ids=["no-candidates", "ipv6-only", "unbundled"],
)
def test_unroutable_sdp_says_why(sdp: str, message: str) -> None:
    with pytest.raises(SdpRoutingError) as raised:
        route_candidates(sdp, 1)
    assert str(raised.value) == message


def test_routing_before_start_is_misuse() -> None:
    with pytest.raises(RelayError) as raised:
        UdpRelay().route_offer(AIORTC_OFFER)
    assert str(raised.value) == "the relay is not started: await start() or use 'async with'"


# --- UdpRelay: real sockets on loopback; ordering and counters, never wall-clock bounds ------


class _Peer(asyncio.DatagramProtocol):
    """A plain UDP endpoint that records what reaches it, in order, with the loop time."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, Address, float]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.received.put_nowait((data, (addr[0], addr[1]), asyncio.get_running_loop().time()))

    async def next(self) -> tuple[bytes, Address, float]:
        async with asyncio.timeout(5):
            return await self.received.get()


@asynccontextmanager
async def _peer() -> AsyncIterator[tuple[asyncio.DatagramTransport, _Peer, Address]]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        _Peer, local_addr=("127.0.0.1", 0)
    )
    try:
        yield transport, protocol, transport.get_extra_info("sockname")[:2]
    finally:
        transport.close()


async def test_packets_flow_both_ways_and_unknown_peers_are_learned() -> None:
    async with UdpRelay() as relay, _peer() as player, _peer() as container:
        player[0].sendto(b"lost: container unknown", relay.player_side)
        container[0].sendto(b"hello player", relay.container_side)
        data, source, _ = await player[1].next()
        assert (data, source) == (b"hello player", relay.player_side)
        player[0].sendto(b"hello container", relay.player_side)
        data, source, _ = await container[1].next()
        assert (data, source) == (b"hello container", relay.container_side)

        assert (relay.player, relay.container) == (player[2], container[2])
        assert relay.unroutable == 1
        assert relay.upstream.counters.delivered == relay.downstream.counters.delivered == 1


async def test_configured_delay_holds_packets_and_keeps_their_order() -> None:
    async with _peer() as player, _peer() as container:
        downstream = LinkModel(LinkConfig(delay_ms=50))
        async with UdpRelay(downstream, player=player[2], container=container[2]) as relay:
            loop = asyncio.get_running_loop()
            sent_at = loop.time()
            for i in range(20):
                container[0].sendto(b"%d" % i, relay.container_side)
            received = [await player[1].next() for _ in range(20)]
    assert [data for data, _, _ in received] == [b"%d" % i for i in range(20)]
    # A lower bound only: the link cannot deliver before the delay (asyncio may run a timer
    # up to its clock resolution early, hence the 1 ms).
    assert all(at - sent_at >= 0.050 - 0.001 for _, _, at in received)


async def test_drops_are_counted_and_the_seeded_loss_pattern_is_the_models() -> None:
    async with _peer() as player, _peer() as container:
        upstream = LinkModel(LinkConfig(loss=0.5), seed=11)
        async with UdpRelay(upstream=upstream, container=container[2]) as relay:
            for i in range(40):
                player[0].sendto(b"%d" % i, relay.player_side)
            await eventually(lambda: upstream.counters.packets_in == 40)
            upstream.config = LinkConfig(loss=0.0)
            player[0].sendto(b"end", relay.player_side)
            received = []
            while not received or received[-1] != b"end":
                received.append((await container[1].next())[0])

    twin = LinkModel(LinkConfig(loss=0.5), seed=11)
    expected = [b"%d" % i for i in range(40) if twin.admit(0.0, 1) is not None]
    assert received == [*expected, b"end"]
    counters = upstream.counters
    assert counters.packets_in == 41
    assert counters.dropped_loss == 40 - len(expected) > 0
    assert counters.delivered == len(expected) + 1


# --- End to end: two aiortc peers whose only path is through the relay ----------------------


@pytest.mark.parametrize(
    "link",
    [LinkConfig(delay_ms=5), LinkConfig(loss=0.1, rate_bps=2_000_000, delay_ms=10)],
    ids=["delay", "lossy-capped"],
)
async def test_aiortc_data_channel_crosses_the_relay(link: LinkConfig) -> None:
    config = RTCConfiguration(iceServers=[])  # no STUN: loopback only
    player, container = RTCPeerConnection(config), RTCPeerConnection(config)
    # At 10 % loss seeds 353 and 303 lose packet 0 and none of the next 29: the first ICE
    # check each way is lost and retried, then the handshake runs clean (lost DTLS or SCTP
    # handshake packets cost aiortc seconds of retransmission timers, too slow for a test).
    relay = UdpRelay(LinkModel(link, seed=353), LinkModel(link, seed=303))
    arrived: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    try:
        await relay.start()
        channel = player.createDataChannel("input")
        opened = asyncio.Event()
        channel.on("open", opened.set)

        @container.on("datachannel")
        def on_datachannel(incoming: Any) -> None:
            incoming.on("message", arrived.set_result)

        await player.setLocalDescription(await player.createOffer())
        offer = relay.route_offer(player.localDescription.sdp)
        await container.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await container.setLocalDescription(await container.createAnswer())
        answer = relay.route_answer(container.localDescription.sdp)
        await player.setRemoteDescription(RTCSessionDescription(answer, "answer"))

        async with asyncio.timeout(15):
            await opened.wait()
            channel.send("through the relay")
            assert await arrived == "through the relay"
    finally:
        await player.close()
        await container.close()
        relay.close()

    assert relay.player is not None and relay.container is not None  # from the SDP
    assert relay.upstream.counters.delivered > 0
    assert relay.downstream.counters.delivered > 0
    assert relay.unroutable == 0
    if link.loss:
        assert relay.upstream.counters.dropped_loss == relay.downstream.counters.dropped_loss == 1
