"""The session broker: matches players to containers and relays their negotiation.

Pure: each method takes one event (a parsed message, a disconnect, the clock) and returns the
messages to deliver. The aiohttp edge (signaling/server.py) only moves bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from indexer.registry import ContainerRegistry, ContainerSpec, IndexerError, StreamRequest
from signaling import protocol as p
from signaling.session import IllegalTransitionError, Session, SessionStatus

PeerKind = Literal["player", "container"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    kind: PeerKind
    peer_id: str
    message: p.Message


class SessionBroker:
    def __init__(self, registry: ContainerRegistry, new_session_id: Callable[[], str]) -> None:
        self.registry = registry
        self._new_session_id = new_session_id
        self.sessions: dict[str, Session] = {}
        self._by_player: dict[str, str] = {}

    # Containers --------------------------------------------------------------------------------

    def register(self, message: p.Register, now: float) -> list[Outgoing]:
        spec = ContainerSpec(
            container_id=message.container,
            games=frozenset(message.games),
            encoders=tuple(message.encoders),
            max_width=message.max_width,
            max_height=message.max_height,
            max_fps=message.max_fps,
            host=message.host,
            capacity=tuple(message.capacity),
            encoder_reason=message.encoder_reason,
            frames_on=message.frames_on,
        )
        try:
            self.registry.register(spec, now)
        except IndexerError as exc:
            raise p.ProtocolError("conflict", str(exc)) from None
        reply = p.Registered(spec.container_id, round(self.registry.heartbeat_period * 1000))
        return [Outgoing("container", spec.container_id, reply)]

    def heartbeat(
        self, container_id: str, now: float, telemetry: p.Telemetry | None = None
    ) -> None:
        if container_id not in self.registry:
            raise p.ProtocolError(
                "expired", f"container {container_id!r} missed its heartbeats; register again"
            )
        self.registry.heartbeat(container_id, now, telemetry)

    def container_gone(self, container_id: str, reason: str) -> list[Outgoing]:
        """The container disconnected or stopped heartbeating: end its sessions, forget it."""
        out: list[Outgoing] = []
        for session_id in sorted(self._seats_of(container_id)):
            out += self._end(self.sessions[session_id], reason, notify_container=False)
        if container_id in self.registry:
            self.registry.unregister(container_id)
        return out

    def expire(self, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        for container_id in self.registry.expired(now):
            out += self.container_gone(container_id, "the container stopped sending heartbeats")
        return out

    def answer(self, container_id: str, message: p.Answer) -> list[Outgoing]:
        session = self._container_session(container_id, message.session, SessionStatus.CONNECTING)
        if session.answered:
            raise p.ProtocolError(
                "unexpected", f"session {session.session_id} was answered already"
            )
        session.answered = True
        return [
            Outgoing("player", session.player_id, p.SessionAnswer(session.session_id, message.sdp))
        ]

    def playing(self, container_id: str, message: p.Playing) -> list[Outgoing]:
        session = self._container_session(container_id, message.session, SessionStatus.CONNECTING)
        if not session.answered:
            raise p.ProtocolError("unexpected", f"session {session.session_id} has no answer yet")
        session.move(SessionStatus.PLAYING)
        self.registry.start(container_id, session.session_id)
        state = p.SessionState(session.session_id, session.status.value)
        return [Outgoing("player", session.player_id, state)]

    def container_end(self, container_id: str, message: p.End) -> list[Outgoing]:
        session = self._container_session(container_id, message.session, None)
        return self._end(session, message.reason, notify_container=False)

    # Players -----------------------------------------------------------------------------------

    def play(self, player_id: str, message: p.Play) -> list[Outgoing]:
        if player_id in self._by_player:
            raise p.ProtocolError("unexpected", "this player already has a session; end it first")
        request = StreamRequest(message.game, message.width, message.height, message.fps)
        session = Session(self._new_session_id(), player_id, request)
        try:
            spec = self.registry.claim(request, session.session_id)
        except IndexerError as exc:
            raise p.ProtocolError("unavailable", str(exc)) from None
        session.container_id = spec.container_id
        session.move(SessionStatus.MATCHED)
        self.sessions[session.session_id] = session
        self._by_player[player_id] = session.session_id
        return [Outgoing("player", player_id, p.Matched(session.session_id, spec.container_id))]

    def offer(self, player_id: str, message: p.Offer) -> list[Outgoing]:
        session = self._player_session(player_id)
        self._move(session, SessionStatus.CONNECTING)
        request = session.request
        relay = p.SessionOffer(
            session.session_id, message.sdp, request.width, request.height, request.fps
        )
        assert session.container_id is not None  # set when matched
        return [Outgoing("container", session.container_id, relay)]

    def player_end(self, player_id: str, reason: str) -> list[Outgoing]:
        return self._end(self._player_session(player_id), reason, notify_container=True)

    def player_gone(self, player_id: str) -> list[Outgoing]:
        if player_id not in self._by_player:
            return []
        return self.player_end(player_id, "the player disconnected")

    # Internals ---------------------------------------------------------------------------------

    def _player_session(self, player_id: str) -> Session:
        session_id = self._by_player.get(player_id)
        if session_id is None:
            raise p.ProtocolError("unexpected", "no session: send play first")
        return self.sessions[session_id]

    def _seats_of(self, container_id: str) -> list[str]:
        """The sessions holding a seat on this container (none once it is unregistered)."""
        if container_id not in self.registry:
            return []
        return list(self.registry.get(container_id).seats)

    def _container_session(
        self, container_id: str, session_id: str, status: SessionStatus | None
    ) -> Session:
        if session_id not in self._seats_of(container_id):
            raise p.ProtocolError("unexpected", f"session {session_id!r} is not this container's")
        session = self.sessions[session_id]
        if status is not None and session.status is not status:
            raise p.ProtocolError(
                "unexpected", f"session {session_id} is {session.status.value}, not {status.value}"
            )
        return session

    @staticmethod
    def _move(session: Session, target: SessionStatus) -> None:
        try:
            session.move(target)
        except IllegalTransitionError as exc:
            raise p.ProtocolError("unexpected", str(exc)) from None

    def _end(self, session: Session, reason: str, *, notify_container: bool) -> list[Outgoing]:
        session.move(SessionStatus.ENDED)
        del self.sessions[session.session_id]
        del self._by_player[session.player_id]
        out = [Outgoing("player", session.player_id, p.Ended(session.session_id, reason))]
        container_id = session.container_id
        if container_id is not None:
            if container_id in self.registry:
                self.registry.release(container_id, session.session_id)
            if notify_container:
                out.append(Outgoing("container", container_id, p.End(session.session_id, reason)))
        return out
