"""The registry store seam: what the session broker needs from wherever containers are kept.

Two stores, chosen at start-up: `MemoryStore` (the embedded default: one process, the pure
registry behind async methods that never await, so each call is atomic on the event loop) and
`RedisStore`'s adapter in indexer/shared_registry.py (several indexer processes, claims made
atomic by one script on the Redis server). The broker is written against this protocol only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from contracts.protocol import Telemetry
from indexer.build_events import BuildEventRecord, BuildEvents
from indexer.coordinates import Coordinate
from indexer.lifecycle import Admission, Event, LivenessConfig, SeatState
from indexer.registry import ContainerRecord, ContainerRegistry, ContainerSpec
from indexer.selection import Choice, Request


@dataclass(frozen=True, slots=True)
class ContainerView:
    """One container as the API and the dashboard show it."""

    spec: ContainerSpec
    state: str  # the seed's name for it (lifecycle.SeedState)
    admission: Admission
    live: bool
    availability: str
    load: float
    sessions: tuple[str, ...]
    heartbeat_age: float | None  # None: this indexer has not heard it (another holds it)
    telemetry: Telemetry | None
    telemetry_age: float | None
    build_events: BuildEvents = field(default_factory=BuildEvents)


class RegistryStore(Protocol):
    liveness: LivenessConfig

    async def register(self, spec: ContainerSpec, now: float) -> None: ...

    async def heartbeat(
        self, container_id: str, now: float, telemetry: Telemetry | None
    ) -> None: ...

    async def expire(self, now: float) -> list[tuple[str, tuple[str, ...]]]: ...

    async def apply(self, container_id: str, event: Event, now: float) -> tuple[str, ...]: ...

    async def claim(self, request: Request, session_id: str, now: float) -> Choice: ...

    async def claim_on(
        self, container_id: str, request: Request, session_id: str, now: float
    ) -> Choice: ...

    async def set_quality(self, container_id: str, qos: float, penalty: float) -> None: ...

    async def record_build_event(self, container_id: str, record: BuildEventRecord) -> None:
        """Keep a container's report about its builds where every indexer's views see it."""
        ...

    async def start(self, container_id: str, session_id: str, now: float) -> None: ...

    async def release(self, container_id: str, session_id: str, now: float) -> None: ...

    async def set_coordinate(self, container_id: str, coordinate: Coordinate) -> None: ...

    def reserved(self, container_ids: Iterable[str]) -> list[tuple[str, str]]:
        """(container, session) for each RESERVED seat on these containers."""
        ...

    def can_stream(self, container_id: str, width: int, height: int, fps: int) -> bool: ...

    def views(self, now: float) -> list[ContainerView]: ...

    def view(self, container_id: str, now: float) -> ContainerView | None:
        """One container's view (None: not registered), without building everyone's."""
        ...


class MemoryStore:
    """The in-memory registry behind the store protocol."""

    def __init__(self, registry: ContainerRegistry) -> None:
        self.registry = registry
        self.liveness = registry.liveness

    async def register(self, spec: ContainerSpec, now: float) -> None:
        self.registry.register(spec, now)

    async def heartbeat(self, container_id: str, now: float, telemetry: Telemetry | None) -> None:
        self.registry.heartbeat(container_id, now, telemetry)

    async def expire(self, now: float) -> list[tuple[str, tuple[str, ...]]]:
        return self.registry.expire(now)

    async def apply(self, container_id: str, event: Event, now: float) -> tuple[str, ...]:
        return self.registry.apply(container_id, event, now)

    async def claim(self, request: Request, session_id: str, now: float) -> Choice:
        return self.registry.claim(request, session_id, now)

    async def claim_on(
        self, container_id: str, request: Request, session_id: str, now: float
    ) -> Choice:
        return self.registry.claim_on(container_id, request, session_id, now)

    async def set_quality(self, container_id: str, qos: float, penalty: float) -> None:
        self.registry.get(container_id)
        self.registry.fleet.set_quality(container_id, qos, penalty)

    async def record_build_event(self, container_id: str, record: BuildEventRecord) -> None:
        self.registry.record_build_event(container_id, record)

    async def start(self, container_id: str, session_id: str, now: float) -> None:
        self.registry.start(container_id, session_id, now)

    async def release(self, container_id: str, session_id: str, now: float) -> None:
        self.registry.release(container_id, session_id, now)

    async def set_coordinate(self, container_id: str, coordinate: Coordinate) -> None:
        self.registry.get(container_id)  # raises for an unknown container
        self.registry.fleet.set_coordinate(container_id, coordinate)

    def reserved(self, container_ids: Iterable[str]) -> list[tuple[str, str]]:
        records = (self.registry.get(c) for c in container_ids if c in self.registry)
        return [
            (record.container_id, session)
            for record in records
            for session, seat in record.lifecycle.seats.items()
            if seat is SeatState.RESERVED
        ]

    def can_stream(self, container_id: str, width: int, height: int, fps: int) -> bool:
        return self.registry.can_stream(container_id, width, height, fps)

    def views(self, now: float) -> list[ContainerView]:
        return [_view(record, now) for record in self.registry.records()]

    def view(self, container_id: str, now: float) -> ContainerView | None:
        if container_id not in self.registry:
            return None
        return _view(self.registry.get(container_id), now)


def _view(record: ContainerRecord, now: float) -> ContainerView:
    lifecycle = record.lifecycle
    return ContainerView(
        spec=record.spec,
        state=lifecycle.seed_state(now).value,
        admission=lifecycle.admission,
        live=lifecycle.is_live(now),
        availability=lifecycle.availability.value,
        load=lifecycle.load,
        sessions=tuple(sorted(lifecycle.seats)),
        heartbeat_age=now - lifecycle.last_heartbeat,
        telemetry=record.telemetry,
        telemetry_age=None if record.telemetry_at is None else now - record.telemetry_at,
        build_events=record.build_events,
    )
