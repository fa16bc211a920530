"""Each WebSocket's rules without the socket: a player's, a container's, a verifier's.

A connection takes one frame and `now` and returns a `Reaction`: the replies to its own socket,
the messages for other peers, whether to close, and which peer id its socket starts or stops
speaking for. It awaits the broker, the desk and the authenticator (the registry store may be
remote) but never touches a socket, the bus or the clock: signaling/server.py reads frames,
feeds them in and does what comes back. A malformed or hostile message costs its sender an
error reply, never the server a session.
"""

from __future__ import annotations

import enum
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

from contracts import protocol as p
from contracts.token_bucket import TokenBucket
from indexer.errors import IndexerError
from judge.desk import VerificationDesk
from signaling.authentication import Authenticator
from signaling.broker import DEMOTED, Outgoing, PeerKind, SessionBroker
from signaling.errors import REFUSALS, Refusal, error_reply

log = logging.getLogger(__name__)

MESSAGES_PER_SECOND = 20
MESSAGE_BURST = 40
# Close codes, RFC 6455 section 7.4.1.
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011

PeerKey = tuple[PeerKind, str]


class FrameType(enum.Enum):
    TEXT = "text"
    BINARY = "binary"
    ERROR = "error"  # the transport failed (aiohttp has closed the socket already)


@dataclass(frozen=True, slots=True)
class Frame:
    type: FrameType
    data: str | bytes = ""


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


EXPIRED = Close(POLICY_VIOLATION, "expired")  # the registration is gone: start over
TRANSPORT_FAILED = Close(INTERNAL_ERROR, "transport failed")


@dataclass(frozen=True, slots=True)
class Reaction:
    """What the edge does for one event, in this order: take `joined` (this socket now receives
    that peer's messages), send `replies` to this socket, deliver `outgoing`, close the socket
    with `close` and read no more, give up `left`."""

    joined: PeerKey | None = None
    replies: tuple[p.Message, ...] = ()
    outgoing: tuple[Outgoing, ...] = ()
    close: Close | None = None
    left: PeerKey | None = None


def refused(refusal: Refusal, ref: str = "") -> Reaction:
    return Reaction(replies=(error_reply(refusal, ref),))


class Peers(Protocol):
    """Which socket speaks for each peer id, as the edge keeps it: one view per connection."""

    def speaks_for(self, peer: PeerKey) -> bool:
        """Whether this connection's socket does."""

    def taken(self, peer: PeerKey) -> bool:
        """Whether another socket, still open, does."""


class Relay(Protocol):
    async def forward(self, container_id: str, message: p.Message, text: str, now: float) -> bool:
        """Hand a container's message about another indexer's session to that indexer (as
        sent: `text`); True when it is taken care of, False to handle it here."""


@dataclass(frozen=True, slots=True)
class Admitted:
    message: p.Message
    text: str  # as sent: a registration's signature covers these bytes


class FrameGate:
    """A connection's door: the per-connection rate limit, then text only, then the protocol."""

    def __init__(self, role: p.Role, now: float) -> None:
        self._role = role
        self._bucket = TokenBucket(MESSAGES_PER_SECOND, MESSAGE_BURST, now)

    def admit(self, frame: Frame, now: float) -> Admitted | Reaction:
        """The valid message in `frame`, or the reaction to a frame that is not one."""
        if frame.type is FrameType.ERROR:
            return Reaction(close=TRANSPORT_FAILED)
        try:
            if not self._bucket.allow(now):
                raise p.ProtocolError(
                    "rate_limited", f"more than {MESSAGES_PER_SECOND} messages per second"
                )
            if frame.type is not FrameType.TEXT or not isinstance(frame.data, str):
                raise p.ProtocolError("malformed", "only text (JSON) messages are accepted")
            return Admitted(p.parse_message(frame.data, self._role), frame.data)
        except p.ProtocolError as exc:
            return refused(exc)


class Connection(ABC):
    """One peer's socket: `opened` once, `receive` each frame, `closed` once at the end."""

    def __init__(self, role: p.Role, now: float) -> None:
        self._gate = FrameGate(role, now)

    @abstractmethod
    def opened(self) -> Reaction: ...

    async def receive(self, frame: Frame, now: float, wall: float) -> Reaction:
        """`now`: monotonic seconds (the registry's clock); `wall`: Unix seconds (verdicts')."""
        admitted = self._gate.admit(frame, now)
        if isinstance(admitted, Reaction):
            return admitted
        message = admitted.message
        try:
            return await self._handle(message, admitted.text, now, wall)
        except REFUSALS as exc:
            return self._refused(exc, message.type)

    @abstractmethod
    async def closed(self, now: float) -> Reaction: ...

    @abstractmethod
    async def _handle(self, message: p.Message, text: str, now: float, wall: float) -> Reaction: ...

    def _refused(self, refusal: Refusal, ref: str) -> Reaction:
        return refused(refusal, ref)


class PlayerConnection(Connection):
    def __init__(self, player_id: str, broker: SessionBroker, now: float) -> None:
        super().__init__("player", now)
        self.player_id = player_id
        self._broker = broker

    def opened(self) -> Reaction:
        return Reaction(joined=("player", self.player_id))

    async def _handle(self, message: p.Message, text: str, now: float, wall: float) -> Reaction:
        broker, player_id = self._broker, self.player_id
        if isinstance(message, p.Play):
            out = await broker.play(player_id, message, now)
        elif isinstance(message, p.Probed):
            out = await broker.probed(player_id, message, now)
        elif isinstance(message, p.Offer):
            out = await broker.offer(player_id, message)
        elif isinstance(message, p.PlayerStatsReport):
            broker.player_stats(player_id, message, now)
            out = []
        else:
            assert isinstance(message, p.End)
            out = await broker.player_end(player_id, message.reason, now)
        return Reaction(outgoing=tuple(out))

    async def closed(self, now: float) -> Reaction:
        gone = await self._broker.player_gone(self.player_id, now)
        return Reaction(outgoing=tuple(gone), left=("player", self.player_id))


async def container_message(
    broker: SessionBroker,
    desk: VerificationDesk,
    container_id: str,
    message: p.Message,
    now: float,
    *,
    wall: float,
) -> list[Outgoing]:
    """A registered container's message, from its socket or forwarded by its indexer; `now`
    is monotonic (the registry's clock), `wall` Unix seconds (what reports are stamped with)."""
    if isinstance(message, p.Heartbeat):
        await broker.heartbeat(container_id, now, message.telemetry)
        return []
    if isinstance(message, p.Answer):
        return await broker.answer(container_id, message)
    if isinstance(message, p.Playing):
        return await broker.playing(container_id, message, now)
    if isinstance(message, p.End):
        return await broker.container_end(container_id, message, now)
    if isinstance(message, p.SessionTimings):
        broker.session_timings(container_id, message)
        return []
    if isinstance(message, p.BuildEvent):
        return await broker.build_event(container_id, message, now, wall)
    if isinstance(message, p.Maintenance):
        log.info("container %s is leaving: %s", container_id, message.reason)
        return await broker.maintenance(container_id, now)
    if isinstance(message, p.InspectionCommitment | p.InspectionRows):
        verifier_id = desk.answer_route(container_id, message.inspection)
        return [Outgoing("verifier", verifier_id, message)]
    raise p.ProtocolError("unexpected", f"already registered as {container_id!r}")


class _SignedConnection(Connection):
    """A peer that proves its key first: the socket opens with a fresh `challenge`, which its
    registration or enlistment must be signed over (`authenticator` None takes unsigned ones)."""

    def __init__(
        self,
        role: p.Role,
        broker: SessionBroker,
        desk: VerificationDesk,
        challenge: str,
        now: float,
        *,
        peers: Peers,
        authenticator: Authenticator | None = None,
    ) -> None:
        super().__init__(role, now)
        self._broker, self._desk = broker, desk
        self._challenge = challenge
        self._peers = peers
        self._authenticator = authenticator

    def opened(self) -> Reaction:
        return Reaction(replies=(p.Challenge(self._challenge),))


class ContainerConnection(_SignedConnection):
    """Registers first, signed over `challenge`; then heartbeats, answers and inspections."""

    def __init__(
        self,
        broker: SessionBroker,
        desk: VerificationDesk,
        challenge: str,
        now: float,
        *,
        peers: Peers,
        authenticator: Authenticator | None = None,
        relay: Relay | None = None,
    ) -> None:
        """`relay` None: no other indexer to hand messages about its sessions to."""
        super().__init__(
            "container", broker, desk, challenge, now, peers=peers, authenticator=authenticator
        )
        self.container_id: str | None = None
        self._relay = relay

    async def _handle(self, message: p.Message, text: str, now: float, wall: float) -> Reaction:
        container_id = self.container_id
        if container_id is None:
            if not isinstance(message, p.Register):
                raise p.ProtocolError("unexpected", "register first")
            if self._authenticator is not None:
                await self._authenticator.authenticate(message, text, self._challenge)
            out = await self._broker.register(message, now)
            self.container_id = message.container
            log.info("container %s registered (%s)", message.container, ", ".join(message.games))
            return Reaction(joined=("container", message.container), outgoing=tuple(out))
        if self._relay is not None and await self._relay.forward(container_id, message, text, now):
            return Reaction()
        out = await container_message(
            self._broker, self._desk, container_id, message, now, wall=wall
        )
        return Reaction(outgoing=tuple(out))

    def _refused(self, refusal: Refusal, ref: str) -> Reaction:
        reaction = refused(refusal, ref)
        if isinstance(refusal, p.ProtocolError) and refusal.code == "expired":
            return Reaction(replies=reaction.replies, close=EXPIRED)  # make it register again
        return reaction

    async def closed(self, now: float) -> Reaction:
        """Only while this socket still speaks for the id: after an expiry the agent may have
        registered again on a new socket, which this one's goodbye must not undo."""
        container_id = self.container_id
        if container_id is None or not self._peers.speaks_for(("container", container_id)):
            return Reaction()
        self._desk.container_gone(container_id)
        try:
            gone = await self._broker.container_gone(
                container_id, "the container disconnected", now
            )
        except IndexerError as exc:  # the sweep ends its sessions once the store is back
            log.warning("container %s disconnected; store says: %s", container_id, exc)
            gone = []
        return Reaction(outgoing=tuple(gone), left=("container", container_id))


class VerifierConnection(_SignedConnection):
    """Enlists first, signed over `challenge`; then relays inspections and reports verdicts."""

    def __init__(
        self,
        broker: SessionBroker,
        desk: VerificationDesk,
        challenge: str,
        now: float,
        *,
        peers: Peers,
        authenticator: Authenticator | None = None,
    ) -> None:
        super().__init__(
            "verifier", broker, desk, challenge, now, peers=peers, authenticator=authenticator
        )
        self.verifier_id: str | None = None

    async def _handle(self, message: p.Message, text: str, now: float, wall: float) -> Reaction:
        verifier_id, desk = self.verifier_id, self._desk
        if isinstance(message, p.Enlist):
            return await self._enlist(message, text)
        if verifier_id is None:
            raise p.ProtocolError("unexpected", "enlist first")
        if isinstance(message, p.InspectionChallenge):
            container_id = desk.challenge_route(verifier_id, message.inspection)
            return Reaction(outgoing=(Outgoing("container", container_id, message),))
        if isinstance(message, p.InspectionReveal):
            container_id = desk.reveal_route(verifier_id, message.inspection)
            return Reaction(outgoing=(Outgoing("container", container_id, message),))
        assert isinstance(message, p.VerdictReport)
        ended = await desk.verdict(verifier_id, message, wall, now)
        return Reaction(outgoing=tuple(self._broker.sessions_lost(ended, DEMOTED)))

    async def _enlist(self, message: p.Enlist, text: str) -> Reaction:
        if self.verifier_id not in (None, message.verifier):
            raise p.ProtocolError("unexpected", f"already enlisted as {self.verifier_id!r}")
        peer: PeerKey = ("verifier", message.verifier)
        if self._peers.taken(peer):
            raise p.ProtocolError("conflict", f"verifier {message.verifier!r} is connected already")
        if self._authenticator is not None:
            await self._authenticator.authenticate(message, text, self._challenge)
        enlisted = self._desk.enlist(message)
        self.verifier_id = message.verifier
        log.info("verifier %s enlisted (stake %d)", message.verifier, message.stake)
        return Reaction(joined=peer, replies=(enlisted,))

    async def closed(self, now: float) -> Reaction:
        verifier_id = self.verifier_id
        if verifier_id is None or not self._peers.speaks_for(("verifier", verifier_id)):
            return Reaction()
        return Reaction(left=("verifier", verifier_id))
