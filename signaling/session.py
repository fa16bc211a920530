"""A play session's states and the one table of moves between them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from indexer.selection import Request


class SessionStatus(Enum):
    REQUESTED = "requested"
    MATCHED = "matched"
    CONNECTING = "connecting"
    PLAYING = "playing"
    ENDED = "ended"


TRANSITIONS: dict[SessionStatus, frozenset[SessionStatus]] = {
    SessionStatus.REQUESTED: frozenset({SessionStatus.MATCHED, SessionStatus.ENDED}),
    SessionStatus.MATCHED: frozenset({SessionStatus.CONNECTING, SessionStatus.ENDED}),
    SessionStatus.CONNECTING: frozenset({SessionStatus.PLAYING, SessionStatus.ENDED}),
    SessionStatus.PLAYING: frozenset({SessionStatus.ENDED}),
    SessionStatus.ENDED: frozenset(),
}


class IllegalTransitionError(Exception):
    """A session was asked to make a move the table does not have."""


@dataclass(slots=True)
class Session:
    session_id: str
    player_id: str
    request: Request
    status: SessionStatus = SessionStatus.REQUESTED
    container_id: str | None = None
    answered: bool = False  # the container's answer was relayed (once) while connecting
    since: float = 0.0  # when the seat was claimed (monotonic seconds)

    def move(self, target: SessionStatus) -> None:
        if target not in TRANSITIONS[self.status]:
            raise IllegalTransitionError(
                f"session {self.session_id} cannot go from {self.status.value} to {target.value}"
            )
        self.status = target
