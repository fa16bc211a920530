"""Players waiting for a container, first come first served, with a latency bound that relaxes.

A player whose request nothing fits right now is told why (the filter that emptied the set)
and where they stand. Waiting trades latency for a seat: every `step` seconds the RTT bound
widens by `factor`, up to `ceiling` (a bound the player set wider than that stays theirs), so
a player far from free containers is matched eventually instead of never. Only waits that time
can end are queued: every container busy ("standby") or none near enough ("rtt"); a build no
container hosts, a shape or a budget nothing meets is refused at once, since waiting would
not change the answer unless the fleet changes.

Pure: time comes in as `now`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

from indexer.errors import IndexerError
from indexer.selection import Request

QUEUEABLE_FILTERS = frozenset({"standby", "rtt"})


class QueueFullError(IndexerError):
    """The queue holds as many players as it may; the player should try again later."""


@dataclass(frozen=True, slots=True)
class Relaxation:
    """How the RTT bound widens while a player waits."""

    step: float = 5.0  # seconds between widenings
    factor: float = 1.5
    ceiling: float = 0.25  # seconds

    def __post_init__(self) -> None:
        if self.step <= 0 or self.factor < 1 or self.ceiling <= 0:
            raise ValueError(
                "relaxation needs a positive step and ceiling and a factor of at least 1, not "
                f"step={self.step}, factor={self.factor}, ceiling={self.ceiling}"
            )

    def bound(self, initial: float, waited: float) -> float:
        """The bound after `waited` seconds in the queue."""
        if math.isinf(initial):
            return initial
        widened = initial * self.factor ** int(max(waited, 0.0) // self.step)
        return min(widened, max(initial, self.ceiling))


@dataclass(frozen=True, slots=True)
class Waiting:
    player_id: str
    request: Request  # as the player asked; `relaxed` gives the bound that applies now
    since: float


class PlayQueue:
    """Waiting players in arrival order; at most `limit` of them."""

    def __init__(self, relaxation: Relaxation, limit: int = 1000) -> None:
        self.relaxation = relaxation
        self.limit = limit
        self._waiting: dict[str, Waiting] = {}  # insertion order is arrival order

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, player_id: object) -> bool:
        return player_id in self._waiting

    def add(self, player_id: str, request: Request, now: float) -> int:
        """Queue the player (again: their place is kept) and return their 1-based position."""
        if player_id not in self._waiting:
            if len(self._waiting) >= self.limit:
                raise QueueFullError(
                    f"{self.limit} players are already waiting for a container; try again later"
                )
            self._waiting[player_id] = Waiting(player_id, request, now)
        return self.position(player_id)

    def remove(self, player_id: str) -> None:
        self._waiting.pop(player_id, None)

    def position(self, player_id: str) -> int:
        for position, waiting in enumerate(self._waiting, start=1):
            if waiting == player_id:
                return position
        raise KeyError(player_id)

    def relaxed(self, waiting: Waiting, now: float) -> Request:
        """The player's request with the bound their wait has earned."""
        bound = self.relaxation.bound(waiting.request.rtt_bound, now - waiting.since)
        return replace(waiting.request, rtt_bound=bound)

    def __iter__(self) -> Iterator[Waiting]:
        """The waiting players in order, safe to remove from while iterating."""
        return iter(list(self._waiting.values()))
