"""A loopback UDP relay that gives a WebRTC session loss, delay and a bandwidth cap.

The kernel has no netem, so the benchmark puts this relay between a player and a container:
`UdpRelay.route_offer`/`route_answer` point each side's ICE candidates at the relay, and every
packet of the session (STUN checks, DTLS, SCTP, RTP, RTCP) crosses one `LinkModel` per
direction.

`LinkModel` is the pure core: given a packet's arrival time and size it answers when the
packet is delivered, or that it is dropped. `UdpRelay` is the thin asyncio edge: two sockets,
a FIFO per direction and one `loop.call_at` timer armed for the head of each FIFO.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from testbed.errors import TestbedError

Address = tuple[str, int]

LOOPBACK = "127.0.0.1"
# RFC 8445 section 5.1.2.1: type preference 126 (host), local preference 65535, component 1.
HOST_PRIORITY = (126 << 24) | (65535 << 8) | (256 - 1)
# RFC 8839 section 5.1: a foundation is 1 to 32 ice-chars; the relay offers one candidate.
RELAY_FOUNDATION = "gamecastrelay"


class RelayError(TestbedError):
    """Base of the relay's errors; raised as such for misuse (routing SDP before `start`)."""


class SdpRoutingError(RelayError, ValueError):
    """A peer's SDP cannot be routed through the relay; the message says what is missing."""


@dataclass(frozen=True)
class LinkConfig:
    """One direction of an emulated path; replace it on a running `LinkModel` to change it.

    loss: probability in [0, 1] that a packet is lost (before it reaches the bottleneck).
    rate_bps: bottleneck rate in bits of UDP payload per second; None is unlimited.
    queue_ms: the bottleneck's buffer as a time: a packet that would wait longer than this
        for the link to be free is tail-dropped. Real buffers are finite, so is the default.
    delay_ms: fixed one-way propagation delay, added after the bottleneck.
    """

    loss: float = 0.0
    rate_bps: float | None = None
    queue_ms: float = 100.0
    delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss must be a probability in [0, 1], got {self.loss}")
        if self.rate_bps is not None and not (self.rate_bps > 0 and math.isfinite(self.rate_bps)):
            raise ValueError(f"rate_bps must be positive and finite, or None, got {self.rate_bps}")
        if not self.queue_ms >= 0:
            raise ValueError(f"queue_ms must be >= 0, got {self.queue_ms}")
        if not (self.delay_ms >= 0 and math.isfinite(self.delay_ms)):
            raise ValueError(f"delay_ms must be finite and >= 0, got {self.delay_ms}")


@dataclass
class LinkCounters:
    """What a link did; `packets_in == delivered + dropped_loss + dropped_queue` always."""

    packets_in: int = 0
    bytes_in: int = 0
    delivered: int = 0
    delivered_bytes: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0


@dataclass
class LinkModel:
    """One direction of the path as a pure function of (arrival time, size): no clock, no I/O.

    The bottleneck is the classic one: `link_free_at = max(now, link_free_at) + size*8/rate`.
    Assigning `config` (e.g. `dataclasses.replace(model.config, rate_bps=1e6)`) changes the
    path for packets admitted from then on; admitted ones keep their delivery times. The link
    is FIFO: no packet is delivered before one admitted earlier, even after the delay shrinks
    or the cap is lifted (the backlog then drains at once, in order). Give the two directions
    of a path different seeds: one seed makes their losses coincide packet for packet, which
    hits a request and its retransmission's reply alike and stalls handshakes for seconds.
    """

    config: LinkConfig = field(default_factory=LinkConfig)
    seed: int | None = 0
    counters: LinkCounters = field(default_factory=LinkCounters, init=False)
    _random: random.Random = field(init=False, repr=False)
    _link_free_at: float = field(default=-math.inf, init=False, repr=False)
    _last_delivery: float = field(default=-math.inf, init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def admit(self, now: float, size: int) -> float | None:
        """The delivery time, on the caller's clock, of a packet arriving at `now` (seconds).

        None when it is dropped: lost at random, or its wait for the link would exceed
        `queue_ms`. One random number is drawn per packet whatever the loss, so one seed gives
        one loss pattern per packet index, whatever the other settings.
        """
        if size < 0:
            raise ValueError(f"packet size must be >= 0, got {size}")
        config, counters = self.config, self.counters
        counters.packets_in += 1
        counters.bytes_in += size
        if self._random.random() < config.loss:
            counters.dropped_loss += 1
            return None
        start = max(now, self._link_free_at)
        if start - now > config.queue_ms / 1000:
            counters.dropped_queue += 1
            return None
        serialization = 0.0 if config.rate_bps is None else size * 8 / config.rate_bps
        self._link_free_at = start + serialization
        delivery = max(self._link_free_at + config.delay_ms / 1000, self._last_delivery)
        self._last_delivery = delivery
        counters.delivered += 1
        counters.delivered_bytes += size
        return delivery


def _split_sections(lines: list[str]) -> list[list[str]]:
    """The session part, then one list of lines per m= section (RFC 8866 section 5)."""
    sections: list[list[str]] = [[]]
    for line in lines:
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections


def _mid(section: list[str]) -> str | None:
    return next(
        (line.removeprefix("a=mid:") for line in section if line.startswith("a=mid:")), None
    )


def _host_candidate(line: str) -> Address | None:
    """The address of an RFC 8839 candidate line if it is a component-1 UDP IPv4 host one."""
    bits = line.removeprefix("a=candidate:").split()
    if len(bits) < 8 or bits[1] != "1" or bits[2].lower() != "udp" or bits[6:8] != ["typ", "host"]:
        return None
    try:
        if ipaddress.ip_address(bits[4]).version != 4:
            return None
        return bits[4], int(bits[5])
    except ValueError:
        return None


def route_candidates(sdp: str, port: int, host: str = LOOPBACK) -> tuple[str, Address]:
    """Point an SDP's ICE candidates at `host:port`; return the new SDP and the real address.

    The real address is the peer's IPv4 UDP host candidate (127.0.0.1 if offered, which aioice
    never does, else the first) in the transport that carries the session: the first mid of
    the BUNDLE group (RFC 9143 section 7), else the only m= section with candidates. Each
    section's candidates become one host candidate for the relay, its m= port and c= address
    (the default candidate, RFC 8839 section 4.2.1.1) follow, and `a=end-of-candidates` stays
    where it was. The relay carries one transport per side, so SDP that would use several
    unbundled transports is refused.
    """
    newline = "\r\n" if "\r\n" in sdp else "\n"
    lines = sdp.split(newline)
    trailing = lines[-1] == ""
    if trailing:
        lines.pop()
    session, *media = _split_sections(lines)
    bundle = next((line.split()[1:] for line in session if line.startswith("a=group:BUNDLE")), [])
    routed = [
        index
        for index, section in enumerate(media)
        if section[0].split()[1:2] != ["0"]  # port 0: a rejected section (RFC 3264 section 6)
        and any(line.startswith("a=candidate:") for line in section)
    ]
    if not routed:
        raise SdpRoutingError("the SDP has no ICE candidates to route (gather before routing)")
    unbundled = sum(_mid(media[i]) not in bundle for i in routed)
    transports = unbundled + (unbundled < len(routed))
    if transports > 1:
        raise SdpRoutingError(
            f"the SDP needs {transports} ICE transports; the relay carries one (use BUNDLE)"
        )
    primary = next((media[i] for i in routed if bundle and _mid(media[i]) == bundle[0]), None)
    candidates = [line for line in primary or media[routed[0]] if line.startswith("a=candidate:")]
    found = [a for a in map(_host_candidate, candidates) if a is not None]
    if not found:
        raise SdpRoutingError("the SDP has no IPv4 UDP host candidate for component 1")
    real = next((a for a in found if a[0] == LOOPBACK), found[0])

    relay_line = f"a=candidate:{RELAY_FOUNDATION} 1 udp {HOST_PRIORITY} {host} {port} typ host"
    out = list(session)
    for index, section in enumerate(media):
        if index not in routed:
            out.extend(section)
            continue
        kind, _, *rest = section[0].split(" ")
        out.append(" ".join([kind, str(port), *rest]))
        placed = False
        for line in section[1:]:
            if line.startswith("a=candidate:"):
                if not placed:
                    out.append(relay_line)
                placed = True
            elif line.startswith("c=IN IP"):
                out.append(f"c=IN IP4 {host}")
            else:
                out.append(line)
    return newline.join(out) + (newline if trailing else ""), real


class _Side(asyncio.DatagramProtocol):
    """One of the relay's sockets: hands each datagram and its source to the relay."""

    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self._on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._on_datagram(data, (addr[0], addr[1]))


class _Direction:
    """One way through the relay: a link, the FIFO of packets it admitted, one timer."""

    def __init__(self, link: LinkModel) -> None:
        self.link = link
        self._pending: deque[tuple[float, bytes, Address]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = -math.inf
        self._transport: asyncio.DatagramTransport | None = None

    def attach(self, transport: asyncio.DatagramTransport) -> None:
        self._transport = transport

    def push(self, data: bytes, destination: Address) -> None:
        loop = asyncio.get_running_loop()
        delivery = self.link.admit(loop.time(), len(data))
        if delivery is None:
            return
        self._pending.append((delivery, data, destination))
        if self._timer is None:
            self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._armed_for = self._pending[0][0]
        self._timer = loop.call_at(self._armed_for, self._flush, loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        # asyncio may run a timer up to its clock resolution early: the armed time counts as due.
        now = max(loop.time(), self._armed_for)
        self._timer = None
        while self._pending and self._pending[0][0] <= now:
            _, data, destination = self._pending.popleft()
            if self._transport is not None:
                self._transport.sendto(data, destination)
        if self._pending:
            self._arm(loop)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
        self._transport = None


class UdpRelay:
    """Two loopback sockets that forward a WebRTC session through one `LinkModel` each way.

    The player sends to `player_side`, believing it is the container, and the relay forwards
    from `container_side` to the container; the container's packets go the other way.
    `downstream` models container -> player, `upstream` player -> container. A peer's real
    address comes from the constructor, from `route_offer`/`route_answer`, or else from the
    first packet that arrives on its side. A packet whose destination is still unknown is
    counted in `unroutable` and dropped before the link.
    """

    def __init__(
        self,
        downstream: LinkModel | None = None,
        upstream: LinkModel | None = None,
        *,
        player: Address | None = None,
        container: Address | None = None,
        host: str = LOOPBACK,
    ) -> None:
        self.downstream = downstream if downstream is not None else LinkModel()
        self.upstream = upstream if upstream is not None else LinkModel()
        self.player = player
        self.container = container
        self.unroutable = 0
        self._host = host
        self._up = _Direction(self.upstream)
        self._down = _Direction(self.downstream)
        self._player_side: asyncio.DatagramTransport | None = None
        self._container_side: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        """Bind both sockets on ephemeral ports of `host`."""
        if self._player_side is not None:
            raise RelayError("the relay is already started")
        loop = asyncio.get_running_loop()
        player_side, _ = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_player), local_addr=(self._host, 0)
        )
        try:
            container_side, _ = await loop.create_datagram_endpoint(
                lambda: _Side(self._from_container), local_addr=(self._host, 0)
            )
        except BaseException:
            player_side.close()
            raise
        self._player_side, self._container_side = player_side, container_side
        self._up.attach(container_side)
        self._down.attach(player_side)

    def close(self) -> None:
        """Close both sockets; packets still in flight on the links are discarded."""
        self._up.close()
        self._down.close()
        for transport in (self._player_side, self._container_side):
            if transport is not None:
                transport.close()
        self._player_side = self._container_side = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def player_side(self) -> Address:
        """Where the player sends, believing it is the container."""
        return self._sockname(self._player_side)

    @property
    def container_side(self) -> Address:
        """Where the container sends, believing it is the player."""
        return self._sockname(self._container_side)

    def route_offer(self, offer_sdp: str) -> str:
        """The player's offer for the container: the player is reached via `container_side`."""
        sdp, self.player = route_candidates(offer_sdp, self.container_side[1], self._host)
        return sdp

    def route_answer(self, answer_sdp: str) -> str:
        """The container's answer for the player: the container is reached via `player_side`."""
        sdp, self.container = route_candidates(answer_sdp, self.player_side[1], self._host)
        return sdp

    @staticmethod
    def _sockname(transport: asyncio.DatagramTransport | None) -> Address:
        if transport is None:
            raise RelayError("the relay is not started: await start() or use 'async with'")
        host, port = transport.get_extra_info("sockname")[:2]
        return host, port

    def _from_player(self, data: bytes, source: Address) -> None:
        if self.player is None:
            self.player = source
        self._forward(self._up, data, self.container)

    def _from_container(self, data: bytes, source: Address) -> None:
        if self.container is None:
            self.container = source
        self._forward(self._down, data, self.player)

    def _forward(self, direction: _Direction, data: bytes, destination: Address | None) -> None:
        if destination is None:
            self.unroutable += 1
            return
        direction.push(data, destination)
