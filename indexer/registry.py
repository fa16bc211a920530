"""Container registry: liveness from heartbeats, seats for sessions, and atomic claims.

Pure: time comes in as `now`, randomness as an injected generator. The in-memory registry is
the embedded default; every decision happens inside one synchronous call, so on one event loop
a claim is atomic by construction.

A container serves as many sessions at once as it advertised for their stream shape
(streamer/capacity.py); each session holds a seat that costs 1/capacity of the container, so
mixed shapes share it and the indexer never books more than it can carry. A container that
advertised nothing (an agent that predates capacity) serves one session at a time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

from indexer.errors import ClaimError, IndexerError, NoContainerError
from signaling.protocol import HostSpecs, StreamCapacity, Telemetry


class Availability(Enum):
    """A seat's state; a container's is its busiest seat's (standby when it has none)."""

    STANDBY = "standby"
    RESERVED = "reserved"
    IN_SESSION = "in_session"


# A seat is born RESERVED by `claim`; these are its moves after that.
_ALLOWED_MOVES = {
    (Availability.RESERVED, Availability.IN_SESSION),
    (Availability.RESERVED, Availability.STANDBY),
    (Availability.IN_SESSION, Availability.STANDBY),
}
_FULL = 1.0 + 1e-9  # seats cost 1/n each: n of them must fit despite rounding


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """What a container announced when it registered."""

    container_id: str
    games: frozenset[str]
    encoders: tuple[str, ...]
    max_width: int
    max_height: int
    max_fps: int
    host: HostSpecs | None = None  # None from a container that predates host specs
    capacity: tuple[StreamCapacity, ...] = ()  # () from one that predates capacity
    encoder_reason: str = ""
    frames_on: str = "cpu"

    def seat_cost(self, request: StreamRequest) -> float | None:
        """The share of this container one session of `request`'s shape takes; None when the
        container cannot stream it. The smallest advertised shape that covers it counts."""
        if not self.capacity:
            return 1.0
        covering = [
            c for c in self.capacity
            if c.width >= request.width and c.height >= request.height and c.fps >= request.fps
        ]  # fmt: skip
        if not covering:
            return None
        smallest = min(covering, key=lambda c: (c.width * c.height * c.fps, -c.sessions))
        return 1.0 / smallest.sessions


@dataclass(frozen=True, slots=True)
class StreamRequest:
    game: str
    width: int
    height: int
    fps: int


@dataclass(slots=True)
class Seat:
    cost: float  # the share of its container this session takes
    state: Availability = Availability.RESERVED


@dataclass(slots=True)
class ContainerRecord:
    spec: ContainerSpec
    last_heartbeat: float
    seats: dict[str, Seat] = field(default_factory=dict)  # by session id
    sessions_served: int = 0
    telemetry: Telemetry | None = None  # the latest a heartbeat carried
    telemetry_at: float | None = None

    @property
    def load(self) -> float:
        """The share of the container its seats take, 0 to 1."""
        return sum(seat.cost for seat in self.seats.values())

    @property
    def availability(self) -> Availability:
        states = {seat.state for seat in self.seats.values()}
        for busiest in (Availability.IN_SESSION, Availability.RESERVED):
            if busiest in states:
                return busiest
        return Availability.STANDBY


def _cost_within_limits(spec: ContainerSpec, request: StreamRequest) -> float | None:
    """The seat's cost on a container whose limits and capacity allow `request`, else None."""
    within = (
        spec.max_width >= request.width
        and spec.max_height >= request.height
        and spec.max_fps >= request.fps
    )
    return spec.seat_cost(request) if within else None


def can_stream(spec: ContainerSpec, width: int, height: int, fps: int) -> bool:
    """Whether `claim` would consider this container for a stream of that shape (any game):
    what the play page may offer, by the claim's own rule."""
    return _cost_within_limits(spec, StreamRequest("", width, height, fps)) is not None


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

    def heartbeat(self, container_id: str, now: float, telemetry: Telemetry | None = None) -> None:
        """The container is alive; keep its telemetry if the heartbeat carried some."""
        record = self.get(container_id)
        record.last_heartbeat = now
        if telemetry is not None:
            record.telemetry = telemetry
            record.telemetry_at = now

    def expired(self, now: float) -> list[str]:
        """Containers whose heartbeats stopped for `missed_heartbeats` periods."""
        return [
            cid for cid, r in self._containers.items() if now - r.last_heartbeat > self._timeout
        ]

    def claim(self, request: StreamRequest, session_id: str) -> ContainerSpec:
        """Pick a container with room for `request` and give `session_id` a seat on it.

        The filters run in order and the first that leaves nothing names the refusal.
        """
        size = f"{request.width}x{request.height}@{request.fps}"
        if not self._containers:
            raise NoContainerError("no container is registered")
        hosting = [r for r in self._containers.values() if request.game in r.spec.games]
        if not hosting:
            raise NoContainerError(f"no container is hosting {request.game!r}")
        able = [(r, cost) for r in hosting if (cost := _cost_within_limits(r.spec, request))]
        if not able:
            raise NoContainerError(f"no container is able to stream {size}")
        free = [(r, cost) for r, cost in able if r.load + cost <= _FULL]
        if not free:
            raise NoContainerError(f"no container is free for another {size} session")
        # Spread sessions: the least loaded first, then the least used, then at random.
        least = min((r.load, r.sessions_served) for r, _ in free)
        chosen, cost = self._rng.choice(
            [(r, cost) for r, cost in free if (r.load, r.sessions_served) == least]
        )
        chosen.seats[session_id] = Seat(cost)
        chosen.sessions_served += 1
        return chosen.spec

    def start(self, container_id: str, session_id: str) -> None:
        self._move(self.get(container_id), session_id, Availability.IN_SESSION)

    def release(self, container_id: str, session_id: str) -> None:
        self._move(self.get(container_id), session_id, Availability.STANDBY)

    @staticmethod
    def _move(record: ContainerRecord, session_id: str, target: Availability) -> None:
        seat = record.seats.get(session_id)
        current = Availability.STANDBY if seat is None else seat.state
        if seat is None or (current, target) not in _ALLOWED_MOVES:
            raise ClaimError(
                f"session {session_id!r} on container {record.spec.container_id!r} cannot go "
                f"from {current.value} to {target.value}"
            )
        if target is Availability.STANDBY:
            del record.seats[session_id]
        else:
            seat.state = target
