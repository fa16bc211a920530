"""A container's lifecycle: admission x liveness x availability, every move in one table.

DESIGN.md ("Container lifecycle") splits the seed's seven states into three independent
questions, each easy to get right on its own:

* admission: may this container serve players at all? Verifiers decide; the container's
  announced specs stay a claim (AWAITING_INSPECTION) until a verifier majority confirms them.
* liveness: is it still there? Heartbeats every `heartbeat_period`; after
  `missed_heartbeats` periods of silence it is MISSED, its seats are void, and only a fresh
  registration (re-authenticated with its host key) makes it LIVE again. A late heartbeat
  never revives it: by then its seats were freed and their players told, so a container that
  carried on as if nothing happened would believe it serves sessions nobody else does.
* availability: a container-level maintenance lock composed with one seat per session. A
  container of capacity N holds several seats at once, each RESERVED (claimed by the indexer,
  waiting for the session to start) or IN_SESSION, and each costing a `share` of it (1/N for
  its shape, as indexer/registry.py costs seats). For selection "standby" means "open for
  one more seat": unlocked and with room for the request's share; a container half full is
  still standby. The lock stops new claims but lets the seats it holds finish (an operator
  drains a container before taking it down).

Pure: time comes in as `now`. The machine changes only its own record and returns decisions
(which sessions the caller must end) instead of performing them. The seven names the seed
shows (`SeedState`), the display availability and `is_candidate` are all derived, never
stored, so they cannot disagree with the parts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import Enum
from typing import TypeAlias

from indexer.errors import IndexerError


class IllegalEventError(IndexerError):
    """The table has no move for this event in the container's current state, or the move's
    guard refused it (a claim on a container that is not a candidate, a heartbeat past the
    deadline). Nothing changed; the message names the container, the event and the state."""


class Admission(Enum):
    """Whether verifiers let the container serve players; only READY does.

    SUSPENDED is not one of the seed's seven but DESIGN.md lists it among the verifiers'
    penalties, and it has to be a state: without it a container that fails every inspection
    cycles CONFIGURING -> AWAITING_INSPECTION forever, spending verifier bot sessions each
    time, and because admission survives re-registration a suspended host cannot wash the
    verdict away by reconnecting. How many failures make "repeated" is the verifiers'
    scoring's call (it owns penalties); this machine only records the verdict.
    """

    CONFIGURING = "configuring"  # registered; specs not announced yet (or being fixed)
    AWAITING_INSPECTION = "awaiting_inspection"  # specs claimed, not confirmed yet
    READY = "ready"
    NEEDS_REINSPECTION = "needs_reinspection"
    QUALITY_CONTROL = "quality_control"
    SUSPENDED = "suspended"


class Liveness(Enum):
    LIVE = "live"
    MISSED = "missed"


class Maintenance(Enum):
    OPEN = "open"
    LOCKED = "locked"


class SeatState(Enum):
    """One session's seat on a container; FREE is the absence of a seat."""

    FREE = "free"
    RESERVED = "reserved"
    IN_SESSION = "in_session"


class Availability(Enum):
    """A container's availability as the dashboard shows it: the lock, else its busiest seat."""

    STANDBY = "standby"
    RESERVED = "reserved"
    IN_SESSION = "in_session"
    MAINTENANCE_LOCK = "maintenance_lock"


class SeedState(Enum):
    """The seven names of the seed, derived from the three parts by `seed_state`."""

    CONFIGURING = "configuring"
    AWAITING_INSPECTION = "awaiting inspection"
    INSPECTED_AND_READY = "inspected and ready"
    NEEDS_REINSPECTION = "needs re-inspection"
    CONNECTED_AND_HEALTHY = "connected and healthy"
    MAINTENANCE_LOCK = "maintenance lock"
    QUALITY_CONTROL = "quality control"


_ADMISSION_SHOWN: dict[Admission, SeedState] = {
    Admission.CONFIGURING: SeedState.CONFIGURING,
    Admission.AWAITING_INSPECTION: SeedState.AWAITING_INSPECTION,
    Admission.NEEDS_REINSPECTION: SeedState.NEEDS_REINSPECTION,
    Admission.QUALITY_CONTROL: SeedState.QUALITY_CONTROL,
    Admission.SUSPENDED: SeedState.QUALITY_CONTROL,
}


class Event(Enum):
    """What can happen to a container, each a fact one source reports.

    The container: REGISTERED, SPECS_RECEIVED, HEARTBEAT. The clock or the connection:
    HEARTBEAT_MISSED (a closed connection means no more heartbeats too). Verifiers:
    INSPECTION_PASSED/FAILED, REINSPECTION_DUE, QC_FLAGGED, SUSPENDED. The operator or the
    network's governance: MAINTENANCE_ON/OFF, REINSTATED. The session broker: CLAIMED,
    SESSION_STARTED, SESSION_ENDED.

    Complete: every state of every part can be left (SUSPENDED by REINSTATED, MISSED by
    REGISTERED, LOCKED by MAINTENANCE_OFF, each seat by SESSION_ENDED or HEARTBEAT_MISSED).
    Minimal: no two events share both a source and an outcome. So a verifier majority's
    verdict is one pair of events whatever it judged (first inspection, re-inspection or
    quality control), since each ends the same way: READY, or back to CONFIGURING to fix what
    failed. And a claim nobody starts ends like a finished session (SESSION_ENDED): the seat is
    freed either way, and why is the broker's to record.
    """

    REGISTERED = "registered"  # a fresh, authenticated registration of a MISSED container
    SPECS_RECEIVED = "specs_received"
    INSPECTION_PASSED = "inspection_passed"
    INSPECTION_FAILED = "inspection_failed"
    REINSPECTION_DUE = "reinspection_due"  # periodic, or the announced specs changed
    QC_FLAGGED = "qc_flagged"  # a spot check or a live-session sample fell short
    SUSPENDED = "suspended"
    REINSTATED = "reinstated"
    HEARTBEAT = "heartbeat"
    HEARTBEAT_MISSED = "heartbeat_missed"
    MAINTENANCE_ON = "maintenance_on"
    MAINTENANCE_OFF = "maintenance_off"
    CLAIMED = "claimed"
    SESSION_STARTED = "session_started"
    SESSION_ENDED = "session_ended"


State: TypeAlias = Admission | Liveness | Maintenance | SeatState
ContainerPart: TypeAlias = type[Admission] | type[Liveness] | type[Maintenance]


@dataclass(frozen=True, slots=True)
class Transition:
    event: Event
    source: State
    target: State


TRANSITIONS: tuple[Transition, ...] = (
    Transition(Event.SPECS_RECEIVED, Admission.CONFIGURING, Admission.AWAITING_INSPECTION),
    Transition(Event.INSPECTION_PASSED, Admission.AWAITING_INSPECTION, Admission.READY),
    Transition(Event.INSPECTION_PASSED, Admission.NEEDS_REINSPECTION, Admission.READY),
    Transition(Event.INSPECTION_PASSED, Admission.QUALITY_CONTROL, Admission.READY),
    Transition(Event.INSPECTION_FAILED, Admission.AWAITING_INSPECTION, Admission.CONFIGURING),
    Transition(Event.INSPECTION_FAILED, Admission.NEEDS_REINSPECTION, Admission.CONFIGURING),
    Transition(Event.INSPECTION_FAILED, Admission.QUALITY_CONTROL, Admission.CONFIGURING),
    Transition(Event.REINSPECTION_DUE, Admission.READY, Admission.NEEDS_REINSPECTION),
    Transition(Event.QC_FLAGGED, Admission.READY, Admission.QUALITY_CONTROL),
    Transition(Event.QC_FLAGGED, Admission.NEEDS_REINSPECTION, Admission.QUALITY_CONTROL),
    Transition(Event.SUSPENDED, Admission.CONFIGURING, Admission.SUSPENDED),
    Transition(Event.SUSPENDED, Admission.AWAITING_INSPECTION, Admission.SUSPENDED),
    Transition(Event.SUSPENDED, Admission.READY, Admission.SUSPENDED),
    Transition(Event.SUSPENDED, Admission.NEEDS_REINSPECTION, Admission.SUSPENDED),
    Transition(Event.SUSPENDED, Admission.QUALITY_CONTROL, Admission.SUSPENDED),
    Transition(Event.REINSTATED, Admission.SUSPENDED, Admission.CONFIGURING),
    Transition(Event.REGISTERED, Liveness.MISSED, Liveness.LIVE),
    Transition(Event.HEARTBEAT, Liveness.LIVE, Liveness.LIVE),
    Transition(Event.HEARTBEAT_MISSED, Liveness.LIVE, Liveness.MISSED),
    Transition(Event.HEARTBEAT_MISSED, SeatState.RESERVED, SeatState.FREE),
    Transition(Event.HEARTBEAT_MISSED, SeatState.IN_SESSION, SeatState.FREE),
    Transition(Event.MAINTENANCE_ON, Maintenance.OPEN, Maintenance.LOCKED),
    Transition(Event.MAINTENANCE_OFF, Maintenance.LOCKED, Maintenance.OPEN),
    Transition(Event.CLAIMED, SeatState.FREE, SeatState.RESERVED),
    Transition(Event.SESSION_STARTED, SeatState.RESERVED, SeatState.IN_SESSION),
    Transition(Event.SESSION_ENDED, SeatState.RESERVED, SeatState.FREE),
    Transition(Event.SESSION_ENDED, SeatState.IN_SESSION, SeatState.FREE),
)
"""Every move of every part. A container-level event is legal when its part's state has a row,
a seat event when the addressed seat's state has one. The seat rows of HEARTBEAT_MISSED, a
container-level event, free every seat the container holds: a silent container serves no one."""

_MOVES: dict[tuple[Event, State], State] = {(t.event, t.source): t.target for t in TRANSITIONS}
_SEAT_MOVES: dict[tuple[Event, SeatState], SeatState] = {
    (t.event, t.source): t.target
    for t in TRANSITIONS
    if isinstance(t.source, SeatState) and isinstance(t.target, SeatState)
}
_CONTAINER_PART: dict[Event, ContainerPart] = {
    t.event: type(t.source) for t in TRANSITIONS if not isinstance(t.source, SeatState)
}
# The events that move one session's seat (`apply_seat`), the others moving the container.
SEAT_EVENTS: tuple[Event, ...] = tuple(e for e in Event if e not in _CONTAINER_PART)
FULL = 1.0 + 1e-9  # seats cost 1/n each: n of them must fit despite rounding


def seed_state(admission: Admission, live: bool, maintenance: Maintenance) -> SeedState:
    """Which of the seed's seven names a container with these parts shows (`live`: LIVE and
    within its deadline)."""
    if maintenance is Maintenance.LOCKED:
        return SeedState.MAINTENANCE_LOCK
    if admission is Admission.READY:
        return SeedState.CONNECTED_AND_HEALTHY if live else SeedState.INSPECTED_AND_READY
    return _ADMISSION_SHOWN[admission]


# Admissions on which a verifier's bot session may seat (`apply_seat(verification=True)`).
VERIFIABLE = (Admission.READY, Admission.QUALITY_CONTROL)


def offered(admission: Admission, liveness: Liveness, maintenance: Maintenance) -> bool:
    """Whether selection may offer the container at all (room for a seat aside): admitted,
    LIVE and unlocked. The deadline is the caller's to check, in its own clock."""
    return (
        admission is Admission.READY
        and liveness is Liveness.LIVE
        and maintenance is Maintenance.OPEN
    )


def admission_events(
    admission: Admission | None, specs_changed: bool, admit: bool
) -> tuple[Event, ...]:
    """The admission moves a registration makes: a new container (`admission` None) announces
    its specs; a READY one announcing different specs is inspected again; and while `admit`
    stands in for the verifiers, what awaits inspection passes it. A verdict (quality control,
    a failed inspection, a suspension) is never washed away by registering again."""
    events: list[Event] = []
    if admission is None:
        events.append(Event.SPECS_RECEIVED)
        admission = Admission.AWAITING_INSPECTION
    elif specs_changed and admission is Admission.READY:
        events.append(Event.REINSPECTION_DUE)
        admission = Admission.NEEDS_REINSPECTION
    if admit and admission in (Admission.AWAITING_INSPECTION, Admission.NEEDS_REINSPECTION):
        events.append(Event.INSPECTION_PASSED)
    return tuple(events)


def availability(maintenance: Maintenance, seats: Iterable[SeatState]) -> Availability:
    """The lock, else the busiest seat's state, else standby."""
    if maintenance is Maintenance.LOCKED:
        return Availability.MAINTENANCE_LOCK
    held = set(seats)
    if SeatState.IN_SESSION in held:
        return Availability.IN_SESSION
    if SeatState.RESERVED in held:
        return Availability.RESERVED
    return Availability.STANDBY


@dataclass(frozen=True, slots=True)
class LivenessConfig:
    """How often a container heartbeats and how many periods of silence make it MISSED."""

    heartbeat_period: float
    missed_heartbeats: int

    def __post_init__(self) -> None:
        if self.heartbeat_period <= 0 or self.missed_heartbeats < 1:
            raise ValueError(
                "heartbeats need a positive period and a miss threshold of at least 1, not "
                f"{self.heartbeat_period} s x {self.missed_heartbeats}"
            )

    @property
    def timeout(self) -> float:
        return self.heartbeat_period * self.missed_heartbeats


@dataclass(frozen=True, slots=True)
class _Seat:
    state: SeatState
    share: float


class ContainerLifecycle:
    """One container's three parts and the only way to change them: events through the table.

    Constructing one is the container's first registration: CONFIGURING, LIVE (its heartbeat
    clock starts at `now`), OPEN, no seats. The record outlives a MISSED spell so that
    admission (and any penalty in it) survives reconnection; whoever stores records decides
    when to forget one.
    """

    def __init__(self, container_id: str, config: LivenessConfig, now: float) -> None:
        self.container_id = container_id
        self.config = config
        self._admission = Admission.CONFIGURING
        self._liveness = Liveness.LIVE
        self._maintenance = Maintenance.OPEN
        self._last_heartbeat = now
        self._seats: dict[str, _Seat] = {}

    @property
    def admission(self) -> Admission:
        return self._admission

    @property
    def liveness(self) -> Liveness:
        return self._liveness

    @property
    def maintenance(self) -> Maintenance:
        return self._maintenance

    @property
    def last_heartbeat(self) -> float:
        return self._last_heartbeat

    @property
    def seats(self) -> dict[str, SeatState]:
        """A copy: each held seat's state, by session id."""
        return {session_id: seat.state for session_id, seat in self._seats.items()}

    @property
    def load(self) -> float:
        """The share of the container its seats take, 0 to 1."""
        return sum(seat.share for seat in self._seats.values())

    def seat(self, session_id: str) -> SeatState:
        seat = self._seats.get(session_id)
        return SeatState.FREE if seat is None else seat.state

    @property
    def availability(self) -> Availability:
        return availability(self._maintenance, (seat.state for seat in self._seats.values()))

    def is_live(self, now: float) -> bool:
        """LIVE and not yet past the deadline: selection must not wait for `expire` to run."""
        return self._liveness is Liveness.LIVE and not self._overdue(now)

    def is_candidate(self, now: float, share: float) -> bool:
        """Whether selection may offer this container for a session costing `share` of it:
        admitted, live, and standby (unlocked, with room for one more such seat)."""
        return self._blocker(now, share, (Admission.READY,)) is None

    def seed_state(self, now: float) -> SeedState:
        """Which of the seed's seven names the container shows. The lock comes first: it is
        the operator's own act, and a container under maintenance is usually also silent.
        Then the admission verdicts (SUSPENDED shows as quality control, the verifiers'
        hold it grew out of); an admitted container is "connected and healthy" while live,
        and "inspected and ready" while its heartbeats are missing."""
        return seed_state(self._admission, self.is_live(now), self._maintenance)

    def apply(self, event: Event, now: float) -> tuple[str, ...]:
        """Apply a container-level event; returns the sessions the caller must end (their
        seats are already freed here): those the container held when it lost liveness.

        A heartbeat past the deadline is refused rather than taken: call `expire(now)` first,
        so that it meets a MISSED container and the container is told to register again.
        """
        part = _CONTAINER_PART.get(event)
        if part is None:
            raise ValueError(f"{event.value} moves a seat: use apply_seat")
        current = self._current(part)
        target = _MOVES.get((event, current))
        if target is None:
            raise self._illegal(event, f" while {current.value}")
        if event is Event.HEARTBEAT and self._overdue(now):
            raise self._illegal(
                event,
                f" while {current.value} but overdue (last heartbeat at "
                f"{self._last_heartbeat:g}, now {now:g}); expire it first",
            )
        self._set(target)
        if event in (Event.REGISTERED, Event.HEARTBEAT):
            self._last_heartbeat = now
        freed = []
        for session_id, seat in list(self._seats.items()):
            if _SEAT_MOVES.get((event, seat.state)) is SeatState.FREE:
                del self._seats[session_id]
                freed.append(session_id)
        return tuple(freed)

    def expire(self, now: float) -> tuple[str, ...]:
        """HEARTBEAT_MISSED if the container is LIVE but silent past its deadline (else
        nothing); returns the sessions the caller must end."""
        if self._liveness is Liveness.LIVE and self._overdue(now):
            return self.apply(Event.HEARTBEAT_MISSED, now)
        return ()

    def apply_seat(
        self,
        event: Event,
        session_id: str,
        now: float,
        share: float = 1.0,
        *,
        verification: bool = False,
    ) -> None:
        """Apply a seat event to `session_id`'s seat. A claim takes `share` of the container
        (1.0, the default, for a container that advertised no capacity: one session at a
        time) and is refused unless the container is a candidate for it at `now`: the check
        and the booking happen in this one call, so a claim is atomic on its event loop.
        A `verification` claim (a verifier's bot session) also seats on a container in
        quality control: playing is how it proves itself again."""
        if event in _CONTAINER_PART:
            raise ValueError(f"{event.value} moves the container: use apply")
        current = self.seat(session_id)
        target = _SEAT_MOVES.get((event, current))
        if target is None:
            raise self._illegal(
                event, f" for session {session_id!r} while its seat is {current.value}"
            )
        if event is Event.CLAIMED:
            if not 0 < share <= 1:
                raise ValueError(f"a seat takes a share in (0, 1] of its container, not {share}")
            blocker = self._blocker(now, share, VERIFIABLE if verification else (Admission.READY,))
            if blocker is not None:
                raise self._illegal(event, f" for session {session_id!r}: {blocker}")
            self._seats[session_id] = _Seat(target, share)
        elif target is SeatState.FREE:
            del self._seats[session_id]
        else:
            self._seats[session_id] = replace(self._seats[session_id], state=target)

    def _overdue(self, now: float) -> bool:
        return now - self._last_heartbeat > self.config.timeout

    def _blocker(self, now: float, share: float, admitted: tuple[Admission, ...]) -> str | None:
        """Why the container is not a candidate for `share`, or None when it is."""
        if self._admission not in admitted:
            return f"it is not admitted ({self._admission.value})"
        if not self.is_live(now):
            return f"its heartbeats stopped (last at {self._last_heartbeat:g}, now {now:g})"
        if self._maintenance is Maintenance.LOCKED:
            return "it is under maintenance lock"
        if self.load + share > FULL:
            return f"it is full ({self.load:g} taken, {share:g} more does not fit)"
        return None

    def _current(self, part: ContainerPart) -> State:
        states: tuple[State, ...] = (self._admission, self._liveness, self._maintenance)
        return next(state for state in states if isinstance(state, part))

    def _set(self, target: State) -> None:
        if isinstance(target, Admission):
            self._admission = target
        elif isinstance(target, Liveness):
            self._liveness = target
        else:
            assert isinstance(target, Maintenance)  # container-level events move no seat part
            self._maintenance = target

    def _illegal(self, event: Event, why: str) -> IllegalEventError:
        return IllegalEventError(f"container {self.container_id!r} cannot take {event.value}{why}")
