"""A play session's states and the one table of moves between them, and what a live check
samples of it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from contracts import protocol as p
from indexer.selection import Request
from signaling.errors import SignalingError

MIN_SUMMARIES = 2  # a live sample compares the player's first summary with its last


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


class IllegalTransitionError(SignalingError):
    """A session was asked to make a move the table does not have."""


@dataclass(slots=True)
class LiveWindow:
    """What a live check samples of one session (contracts/protocol.py SessionSample): the
    player's latest summaries, each with when it arrived (monotonic seconds), and the
    container's latest frame timings as it reported them. Bounded: a long session keeps the
    latest MAX_SUMMARIES summaries and MAX_TIMINGS frames."""

    player: deque[tuple[float, p.PlayerStats]] = field(
        default_factory=lambda: deque(maxlen=p.MAX_SUMMARIES)
    )
    frame_times_ms: deque[float] = field(default_factory=lambda: deque(maxlen=p.MAX_TIMINGS))
    encode_ms: deque[float] = field(default_factory=lambda: deque(maxlen=p.MAX_TIMINGS))

    def add_player(self, stats: p.PlayerStats, now: float) -> None:
        self.player.append((now, stats))

    def add_timings(self, report: p.SessionTimings) -> None:
        # Rounded to 10 us: a sample then fits in one message whatever digits a container sent.
        self.frame_times_ms.extend(round(at, 2) for at in report.frame_times_ms)
        self.encode_ms.extend(round(ms, 2) for ms in report.encode_ms)

    @property
    def window_s(self) -> float:
        """From the first summary kept to the last, by their arrival."""
        return self.player[-1][0] - self.player[0][0] if self.player else 0.0

    @property
    def sampleable(self) -> bool:
        """Whether a live check can judge it. The player's side alone decides: a container
        cannot keep its sessions from being sampled by reporting nothing."""
        return len(self.player) >= MIN_SUMMARIES and self.window_s > 0

    def sample(self, session_id: str, container_id: str, fps: int) -> p.SessionSample:
        return p.SessionSample(
            session_id,
            container_id,
            fps,
            round(self.window_s, 3),
            list(self.frame_times_ms),
            list(self.encode_ms),
            [stats for _, stats in self.player],
        )


@dataclass(slots=True)
class Session:
    session_id: str
    player_id: str
    request: Request
    status: SessionStatus = SessionStatus.REQUESTED
    container_id: str | None = None
    answered: bool = False  # the container's answer was relayed (once) while connecting
    since: float = 0.0  # when the seat was claimed (monotonic seconds)
    live: LiveWindow = field(default_factory=LiveWindow)  # filled while it plays

    def move(self, target: SessionStatus) -> None:
        if target not in TRANSITIONS[self.status]:
            raise IllegalTransitionError(
                f"session {self.session_id} cannot go from {self.status.value} to {target.value}"
            )
        self.status = target
