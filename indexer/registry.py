"""Container registry: liveness from heartbeats, availability, and atomic claims.

Pure: time comes in as `now`, randomness as an injected generator. The in-memory registry is
the embedded default; every decision happens inside one synchronous call, so on one event loop
a claim is atomic by construction (never two players on one container).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum


class IndexerError(Exception):
    """Base of the indexer's errors."""


class NoContainerError(IndexerError):
    """No container can take this request; the message names the filter that emptied the set."""


class ClaimError(IndexerError):
    """A claim or release does not fit the container's availability (our misuse)."""


class Availability(Enum):
    STANDBY = "standby"
    RESERVED = "reserved"
    IN_SESSION = "in_session"


_ALLOWED_MOVES = {
    (Availability.STANDBY, Availability.RESERVED),
    (Availability.RESERVED, Availability.IN_SESSION),
    (Availability.RESERVED, Availability.STANDBY),
    (Availability.IN_SESSION, Availability.STANDBY),
}


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """What a container announced when it registered."""

    container_id: str
    games: frozenset[str]
    encoders: tuple[str, ...]
    max_width: int
    max_height: int
    max_fps: int


@dataclass(slots=True)
class ContainerRecord:
    spec: ContainerSpec
    last_heartbeat: float
    availability: Availability = Availability.STANDBY
    session_id: str | None = None
    sessions_served: int = field(default=0)


@dataclass(frozen=True, slots=True)
class StreamRequest:
    game: str
    width: int
    height: int
    fps: int


class ContainerRegistry:
    """Registered containers, keyed by id. A container is live while heartbeats keep coming."""

    def __init__(self, heartbeat_period: float, missed_heartbeats: int, rng: random.Random) -> None:
        self.heartbeat_period = heartbeat_period
        self._timeout = heartbeat_period * missed_heartbeats
        self._rng = rng
        self._containers: dict[str, ContainerRecord] = {}

    def __contains__(self, container_id: str) -> bool:
        return container_id in self._containers

    def get(self, container_id: str) -> ContainerRecord:
        try:
            return self._containers[container_id]
        except KeyError:
            raise IndexerError(f"container {container_id!r} is not registered") from None

    def records(self) -> list[ContainerRecord]:
        return list(self._containers.values())

    def register(self, spec: ContainerSpec, now: float) -> None:
        if spec.container_id in self._containers:
            raise IndexerError(f"container {spec.container_id!r} is already registered and live")
        self._containers[spec.container_id] = ContainerRecord(spec, last_heartbeat=now)

    def unregister(self, container_id: str) -> ContainerRecord:
        return self._containers.pop(container_id)

    def heartbeat(self, container_id: str, now: float) -> None:
        self.get(container_id).last_heartbeat = now

    def expired(self, now: float) -> list[str]:
        """Containers whose heartbeats stopped for `missed_heartbeats` periods."""
        return [
            cid for cid, r in self._containers.items() if now - r.last_heartbeat > self._timeout
        ]

    def claim(self, request: StreamRequest, session_id: str) -> ContainerSpec:
        """Pick a standby container that can serve `request` and reserve it for `session_id`."""
        candidates = list(self._containers.values())
        filters = (
            ("standby", lambda r: r.availability is Availability.STANDBY),
            (f"hosting {request.game!r}", lambda r: request.game in r.spec.games),
            (
                f"able to stream {request.width}x{request.height}@{request.fps}",
                lambda r: (
                    r.spec.max_width >= request.width
                    and r.spec.max_height >= request.height
                    and r.spec.max_fps >= request.fps
                ),
            ),
        )
        if not candidates:
            raise NoContainerError("no container is registered")
        for label, keep in filters:
            candidates = [r for r in candidates if keep(r)]
            if not candidates:
                raise NoContainerError(f"no container is {label}")
        fewest = min(r.sessions_served for r in candidates)
        chosen = self._rng.choice([r for r in candidates if r.sessions_served == fewest])
        self._move(chosen, Availability.RESERVED)
        chosen.session_id = session_id
        chosen.sessions_served += 1
        return chosen.spec

    def start(self, container_id: str) -> None:
        self._move(self.get(container_id), Availability.IN_SESSION)

    def release(self, container_id: str) -> None:
        record = self.get(container_id)
        self._move(record, Availability.STANDBY)
        record.session_id = None

    @staticmethod
    def _move(record: ContainerRecord, target: Availability) -> None:
        if (record.availability, target) not in _ALLOWED_MOVES:
            raise ClaimError(
                f"container {record.spec.container_id!r} cannot go from "
                f"{record.availability.value} to {target.value}"
            )
        record.availability = target
