"""The in-memory registry: each container's lifecycle, and the fleet index that selection reads.

The embedded default. Every decision happens inside one synchronous call, so on one event loop
a claim (select, then seat) is atomic by construction. Two structures, kept in step by
`_sync` after every change: a `ContainerLifecycle` per container (indexer/lifecycle.py: the
only place states change, through its table) and a `Fleet` (indexer/selection.py: numpy
columns for fast filtering and ranking). The Redis store (indexer/redis_store.py) keeps the
same lifecycle on the server for several indexers.

Records outlive a lost connection: a container whose heartbeats stop (or whose socket closes)
becomes MISSED, its seats are freed and its sessions must be ended by the caller, and it keeps
its admission (a penalty survives reconnection) until it registers again.

Pure: time comes in as `now`, randomness as an injected generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from contracts.protocol import HostSpecs, Register, StreamCapacity, Telemetry
from indexer.build_events import BuildEventRecord, BuildEvents
from indexer.errors import IndexerError, NoContainerError
from indexer.lifecycle import (
    ContainerLifecycle,
    Event,
    Liveness,
    LivenessConfig,
    admission_events,
    offered,
)
from indexer.selection import Choice, Fleet, Profile, Request


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
    region: str = ""
    price_per_minute: float = 0.0
    uplink_mbps: float = 0.0  # 0: not measured

    @classmethod
    def from_register(cls, message: Register) -> ContainerSpec:
        return cls(
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
            region=message.region,
            price_per_minute=message.price_per_minute,
            uplink_mbps=message.uplink_mbps,
        )

    def to_register(self) -> Register:
        """The registration that announces this spec (unsigned): how a shared store keeps it."""
        return Register(
            self.container_id,
            sorted(self.games),
            list(self.encoders),
            self.max_width,
            self.max_height,
            self.max_fps,
            host=self.host,
            encoder_reason=self.encoder_reason,
            frames_on=self.frames_on,
            capacity=list(self.capacity),
            region=self.region,
            price_per_minute=self.price_per_minute,
            uplink_mbps=self.uplink_mbps,
        )

    def profile(self) -> Profile:
        """What selection filters and ranks on."""
        host = self.host
        vram = max((g.memory_total_mib or 0 for g in host.gpus), default=0) if host else 0
        return Profile(
            container_id=self.container_id,
            builds=self.games,
            region=self.region,
            price_per_minute=self.price_per_minute,
            vram_mib=vram,
            cpu_cores=host.cpu_cores if host else 0,
            ram_mib=host.ram_mib if host else 0,
            uplink_mbps=self.uplink_mbps,
            encoders=frozenset(self.encoders),
            max_width=self.max_width,
            max_height=self.max_height,
            max_fps=self.max_fps,
            capacity=self.capacity,
        )


@dataclass(slots=True)
class ContainerRecord:
    spec: ContainerSpec
    lifecycle: ContainerLifecycle
    telemetry: Telemetry | None = None  # the latest a heartbeat carried
    telemetry_at: float | None = None
    build_events: BuildEvents = field(default_factory=BuildEvents)  # what it reported

    @property
    def container_id(self) -> str:
        return self.spec.container_id


class ContainerRegistry:
    """Registered containers, keyed by id.

    `admit_on_register` stands in for the verifiers where none run: a container's announced
    specs are taken as inspected. Without it a container waits in AWAITING_INSPECTION, never
    offered to players, until a verifier committee passes its registration check.
    """

    def __init__(
        self, liveness: LivenessConfig, rng: np.random.Generator, *, admit_on_register: bool
    ) -> None:
        self.liveness = liveness
        self._rng = rng
        self._admit_on_register = admit_on_register
        self._containers: dict[str, ContainerRecord] = {}
        self.fleet = Fleet()

    def __contains__(self, container_id: object) -> bool:
        return container_id in self._containers

    def get(self, container_id: str) -> ContainerRecord:
        try:
            return self._containers[container_id]
        except KeyError:
            raise IndexerError(f"container {container_id!r} is not registered") from None

    def records(self) -> list[ContainerRecord]:
        return list(self._containers.values())

    def register(self, spec: ContainerSpec, now: float) -> None:
        """A new container, or a known one back after its heartbeats stopped.

        A known container keeps its admission; one that announces different specs is
        inspected again (REINSPECTION_DUE) before it is offered.
        """
        record = self._containers.get(spec.container_id)
        known = None if record is None else record.lifecycle.admission
        if record is None:
            lifecycle = ContainerLifecycle(spec.container_id, self.liveness, now)
            record = self._containers[spec.container_id] = ContainerRecord(spec, lifecycle)
        else:
            lifecycle = record.lifecycle
            lifecycle.expire(now)
            if lifecycle.liveness is Liveness.LIVE:
                raise IndexerError(
                    f"container {spec.container_id!r} is already registered and live"
                )
            lifecycle.apply(Event.REGISTERED, now)
        changed = spec != record.spec
        for event in admission_events(known, changed, self._admit_on_register):
            lifecycle.apply(event, now)
        if changed or spec.container_id not in self.fleet:
            record.spec = spec
            self.fleet.add(spec.profile())
        self._sync(record)

    def heartbeat(self, container_id: str, now: float, telemetry: Telemetry | None = None) -> None:
        """The container is alive (refused once it is MISSED: it must register again); keep
        its telemetry if the heartbeat carried some."""
        record = self.get(container_id)
        record.lifecycle.apply(Event.HEARTBEAT, now)
        if telemetry is not None:
            record.telemetry = telemetry
            record.telemetry_at = now
        self.fleet.set_deadline(container_id, now + self.liveness.timeout)

    def record_build_event(self, container_id: str, record: BuildEventRecord) -> None:
        """Keep what the container reported about one of its builds (bounded)."""
        entry = self.get(container_id)
        entry.build_events = entry.build_events.add(record)

    def expire(self, now: float) -> list[tuple[str, tuple[str, ...]]]:
        """Mark containers silent past their deadline MISSED; each with the sessions the
        caller must end (their seats are freed already)."""
        expired = []
        for record in self._containers.values():
            lifecycle = record.lifecycle
            if lifecycle.liveness is Liveness.LIVE and not lifecycle.is_live(now):
                expired.append((record.container_id, lifecycle.expire(now)))
                self._sync(record)
        return expired

    def apply(self, container_id: str, event: Event, now: float) -> tuple[str, ...]:
        """A container-level event (a verdict, a lock, a lost connection as HEARTBEAT_MISSED);
        returns the sessions the caller must end."""
        record = self.get(container_id)
        freed = record.lifecycle.apply(event, now)
        self._sync(record)
        return freed

    def claim(self, request: Request, session_id: str, now: float) -> Choice:
        """Select the best container for `request` and seat `session_id` on it; raises
        NoContainerError naming the filter that emptied the set."""
        (choice,) = self.fleet.select(request, now, self._rng)
        record = self._containers[choice.container_id]
        record.lifecycle.apply_seat(Event.CLAIMED, session_id, now, choice.share)
        self.fleet.set_load(choice.container_id, record.lifecycle.load)
        return choice

    def claim_on(self, container_id: str, request: Request, session_id: str, now: float) -> Choice:
        """Seat a verifier's bot session on the container it must judge, whatever the
        ranking says; refused (IllegalEventError, with the reason) when that container cannot
        take it now, NoContainerError when it cannot stream the request's shape at all."""
        record = self.get(container_id)
        share = self.fleet.seat_cost(container_id, request.width, request.height, request.fps)
        if share is None or request.build not in record.spec.games:
            raise NoContainerError(
                f"container {container_id!r} cannot stream {request.build!r} at "
                f"{request.width}x{request.height}@{request.fps}",
                filter="resources",
            )
        record.lifecycle.apply_seat(Event.CLAIMED, session_id, now, share, verification=True)
        self.fleet.set_load(container_id, record.lifecycle.load)
        return Choice(container_id, share, math.nan, 0.0)

    def start(self, container_id: str, session_id: str, now: float) -> None:
        record = self.get(container_id)
        record.lifecycle.apply_seat(Event.SESSION_STARTED, session_id, now)

    def release(self, container_id: str, session_id: str, now: float) -> None:
        record = self.get(container_id)
        record.lifecycle.apply_seat(Event.SESSION_ENDED, session_id, now)
        self.fleet.set_load(container_id, record.lifecycle.load)

    def can_stream(self, container_id: str, width: int, height: int, fps: int) -> bool:
        """Whether a claim would consider this container for a stream of that shape: what
        the play page may offer, by the claim's own rule."""
        return self.fleet.seat_cost(container_id, width, height, fps) is not None

    def _sync(self, record: ContainerRecord) -> None:
        """Show the lifecycle's verdict to the fleet index selection reads."""
        lifecycle = record.lifecycle
        candidate = offered(lifecycle.admission, lifecycle.liveness, lifecycle.maintenance)
        self.fleet.set_candidate(record.container_id, candidate)
        self.fleet.set_deadline(
            record.container_id, lifecycle.last_heartbeat + self.liveness.timeout
        )
        self.fleet.set_load(record.container_id, lifecycle.load)
