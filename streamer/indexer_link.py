"""The container's rules for its indexer connection, without the socket.

`IndexerLink` takes each message the indexer sends and returns what the agent must do, as a
few small records; streamer/agent.py owns the socket, the sessions and the tasks and only
carries them out. The rules that live here, unit-tested without a network: registration
answers the connection's challenge; heartbeats and timing reports start once, when the
registration is accepted; an offer is streamed at the shape its seat was booked at, and
refused (with the reason, for the player) for a game this container does not host or a build
at any other shape than its manifest's; a refused registration drops the connection so the
agent backs off and registers again; which indexer to try after a lost connection and how long
to wait first.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from contracts import protocol as p
from contracts.stream_shapes import Shape

RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)  # seconds before the 1st, 2nd, ... retry


@dataclass(frozen=True, slots=True)
class Register:
    """Send our registration, signed over this connection's `challenge`."""

    challenge: str


@dataclass(frozen=True, slots=True)
class StartReporting:
    """Start the heartbeat (every `interval_s`) and the sessions' timing reports."""

    interval_s: float


@dataclass(frozen=True, slots=True)
class StartSession:
    offer: p.SessionOffer


@dataclass(frozen=True, slots=True)
class RefuseSession:
    """Tell the indexer the offered session ends before it starts, and why."""

    session_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class EndSession:
    session_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class AnswerChallenge:
    """A verifier's registration challenge, worked in a thread (streamer/inspected.py)."""

    challenge: p.InspectionChallenge


@dataclass(frozen=True, slots=True)
class RevealRows:
    reveal: p.InspectionReveal


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Drop this connection, back off and register again (the reason is logged)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Note:
    """Nothing to do but tell the operator (logged as a warning)."""

    text: str


Action = (
    Register
    | StartReporting
    | StartSession
    | RefuseSession
    | EndSession
    | AnswerChallenge
    | RevealRows
    | Disconnect
    | Note
)


def describe(shape: Shape) -> str:
    width, height, fps = shape
    return f"{width}x{height}@{fps}"


class IndexerLink:
    """One connection's worth of the container's side of the protocol.

    `games`: the built-in games this container serves at any shape; `build_shapes`: each
    deployed build by name and the one shape its manifest runs it at.
    """

    def __init__(self, games: Collection[str], build_shapes: Mapping[str, Shape]) -> None:
        self._games = games
        self._build_shapes = build_shapes
        self.registered = False

    def receive(self, message: p.Message) -> list[Action]:
        if isinstance(message, p.Challenge):
            return [Register(message.challenge)]
        if isinstance(message, p.Registered):
            if self.registered:
                return []  # reporting runs already; a repeat changes nothing
            self.registered = True
            return [StartReporting(message.heartbeat_interval_ms / 1000)]
        if isinstance(message, p.SessionOffer):
            refusal = self.refusal(message)
            if refusal is not None:
                return [RefuseSession(message.session, refusal)]
            return [StartSession(message)]
        if isinstance(message, p.End):
            return [EndSession(message.session, message.reason)]
        if isinstance(message, p.InspectionChallenge):
            return [AnswerChallenge(message)]
        if isinstance(message, p.InspectionReveal):
            return [RevealRows(message)]
        if isinstance(message, p.Error) and message.ref == "register":
            # Usually our previous connection is still registered: back off, then retry.
            return [Disconnect(f"registration refused: {message.reason}")]
        if isinstance(message, p.Error):
            return [Note(f"server says {message.code}: {message.reason}")]
        return [Note(f"unexpected {message.type} message from the server")]

    def refusal(self, offer: p.SessionOffer) -> str | None:
        """Why this container cannot stream `offer` as booked, or None when it can."""
        booked = (offer.width, offer.height, offer.fps)
        runs = self._build_shapes.get(offer.game)
        if runs is None and offer.game not in self._games:
            return f"this container does not host {offer.game!r}"
        if runs is not None and runs != booked:
            return f"{offer.game} runs at {describe(runs)}, not the {describe(booked)} booked"
        return None


def reconnect_delay(attempt: int) -> float:
    """Seconds to wait before reconnecting after `attempt` failures in a row (0: the first)."""
    return RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]


def next_server(
    servers: Sequence[str], failed: str, choose: Callable[[Sequence[str]], str] = random.choice
) -> str:
    """The indexer to try after `failed`: any other of `servers`, never the one that just
    failed while another is left."""
    others = [url for url in servers if url != failed]
    return choose(others) if others else failed
