"""Container lifecycle: every move of the table, every illegal one, and what is derived."""

from __future__ import annotations

import itertools
import re

import pytest

from indexer.lifecycle import (
    TRANSITIONS,
    Admission,
    Availability,
    ContainerLifecycle,
    Event,
    IllegalEventError,
    Liveness,
    LivenessConfig,
    Maintenance,
    SeatState,
    SeedState,
    State,
)
from tests.samples import SEAT_EVENTS

A, L, M, S, E = Admission, Liveness, Maintenance, SeatState, Event
CONFIG = LivenessConfig(heartbeat_period=1.0, missed_heartbeats=3)  # silent for > 3 s: missed
NOW = 1.0  # when the helpers' events happen; the container registered at 0
LATE = 3.5  # past the deadline of a container that never heartbeat after registering

# Written by hand from the design, not from TRANSITIONS, so a wrong table fails the tests.
EXPECTED: set[tuple[Event, State, State]] = {
    (E.SPECS_RECEIVED, A.CONFIGURING, A.AWAITING_INSPECTION),
    (E.INSPECTION_PASSED, A.AWAITING_INSPECTION, A.READY),
    (E.INSPECTION_PASSED, A.NEEDS_REINSPECTION, A.READY),
    (E.INSPECTION_PASSED, A.QUALITY_CONTROL, A.READY),
    (E.INSPECTION_FAILED, A.AWAITING_INSPECTION, A.CONFIGURING),
    (E.INSPECTION_FAILED, A.NEEDS_REINSPECTION, A.CONFIGURING),
    (E.INSPECTION_FAILED, A.QUALITY_CONTROL, A.CONFIGURING),
    (E.REINSPECTION_DUE, A.READY, A.NEEDS_REINSPECTION),
    (E.QC_FLAGGED, A.READY, A.QUALITY_CONTROL),
    (E.QC_FLAGGED, A.NEEDS_REINSPECTION, A.QUALITY_CONTROL),
    *((E.SUSPENDED, source, A.SUSPENDED) for source in Admission if source is not A.SUSPENDED),
    (E.REINSTATED, A.SUSPENDED, A.CONFIGURING),
    (E.REGISTERED, L.MISSED, L.LIVE),
    (E.HEARTBEAT, L.LIVE, L.LIVE),
    (E.HEARTBEAT_MISSED, L.LIVE, L.MISSED),
    (E.HEARTBEAT_MISSED, S.RESERVED, S.FREE),
    (E.HEARTBEAT_MISSED, S.IN_SESSION, S.FREE),
    (E.MAINTENANCE_ON, M.OPEN, M.LOCKED),
    (E.MAINTENANCE_OFF, M.LOCKED, M.OPEN),
    (E.CLAIMED, S.FREE, S.RESERVED),
    (E.SESSION_STARTED, S.RESERVED, S.IN_SESSION),
    (E.SESSION_ENDED, S.RESERVED, S.FREE),
    (E.SESSION_ENDED, S.IN_SESSION, S.FREE),
}
EVENTS_OF: dict[type[State], set[Event]] = {
    Admission: {
        E.SPECS_RECEIVED,
        E.INSPECTION_PASSED,
        E.INSPECTION_FAILED,
        E.REINSPECTION_DUE,
        E.QC_FLAGGED,
        E.SUSPENDED,
        E.REINSTATED,
    },
    Liveness: {E.REGISTERED, E.HEARTBEAT, E.HEARTBEAT_MISSED},
    Maintenance: {E.MAINTENANCE_ON, E.MAINTENANCE_OFF},
    SeatState: set(SEAT_EVENTS),
}
# How an admitted container (which alone can take seats) reaches each admission state.
FROM_READY: dict[Admission, tuple[Event, ...]] = {
    A.READY: (),
    A.NEEDS_REINSPECTION: (E.REINSPECTION_DUE,),
    A.QUALITY_CONTROL: (E.QC_FLAGGED,),
    A.CONFIGURING: (E.REINSPECTION_DUE, E.INSPECTION_FAILED),
    A.AWAITING_INSPECTION: (E.REINSPECTION_DUE, E.INSPECTION_FAILED, E.SPECS_RECEIVED),
    A.SUSPENDED: (E.SUSPENDED,),
}


def container(
    admission: Admission = A.READY,
    liveness: Liveness = L.LIVE,
    maintenance: Maintenance = M.OPEN,
    seats: tuple[SeatState, ...] = (),
    share: float = 0.25,
) -> ContainerLifecycle:
    """Container "a", registered at 0 and moved by events only (at NOW) into these parts, its
    seats held by sessions s1, s2, ... (a MISSED container has freed them)."""
    machine = ContainerLifecycle("a", CONFIG, now=0.0)
    machine.apply(E.SPECS_RECEIVED, NOW)
    machine.apply(E.INSPECTION_PASSED, NOW)
    for n, state in enumerate(seats, start=1):
        machine.apply_seat(E.CLAIMED, f"s{n}", NOW, share)
        if state is S.IN_SESSION:
            machine.apply_seat(E.SESSION_STARTED, f"s{n}", NOW)
    for event in FROM_READY[admission]:
        machine.apply(event, NOW)
    if maintenance is M.LOCKED:
        machine.apply(E.MAINTENANCE_ON, NOW)
    if liveness is L.MISSED:
        machine.apply(E.HEARTBEAT_MISSED, NOW)
    assert (machine.admission, machine.liveness, machine.maintenance) == (
        admission,
        liveness,
        maintenance,
    )
    return machine


def in_state(state: State) -> ContainerLifecycle:
    """A container whose part of `state`'s kind is in `state`; seat states are session s1's."""
    if isinstance(state, Admission):
        return container(admission=state)
    if isinstance(state, Liveness):
        return container(liveness=state)
    if isinstance(state, Maintenance):
        return container(maintenance=state)
    return container(seats=() if state is S.FREE else (state,))


def state_of(machine: ContainerLifecycle, part: type[State]) -> State:
    parts: dict[type[State], State] = {
        Admission: machine.admission,
        Liveness: machine.liveness,
        Maintenance: machine.maintenance,
        SeatState: machine.seat("s1"),
    }
    return parts[part]


def fire(machine: ContainerLifecycle, event: Event) -> None:
    if event in SEAT_EVENTS:
        machine.apply_seat(event, "s1", NOW)
    else:
        machine.apply(event, NOW)


def snapshot(machine: ContainerLifecycle) -> tuple[object, ...]:
    return (
        machine.admission,
        machine.liveness,
        machine.maintenance,
        machine.seats,
        machine.last_heartbeat,
    )


def test_the_table_is_the_designed_lifecycle() -> None:
    rows = [(t.event, t.source, t.target) for t in TRANSITIONS]
    assert set(rows) == EXPECTED
    assert len(rows) == len(EXPECTED)  # no row twice
    assert {t.event for t in TRANSITIONS} == set(Event)  # no event without a move


def move_id(move: tuple[Event, State, State]) -> str:
    event, source, target = move
    return f"{event.value}:{type(source).__name__}.{source.value}->{target.value}"


@pytest.mark.parametrize("move", sorted(EXPECTED, key=move_id), ids=move_id)
def test_legal_move(move: tuple[Event, State, State]) -> None:
    event, source, target = move
    machine = in_state(source)
    fire(machine, event)
    assert state_of(machine, type(source)) is target


ILLEGAL = [
    (event, state)
    for part, events in EVENTS_OF.items()
    for event in sorted(events, key=lambda e: e.value)
    for state in part
    if not any(move[:2] == (event, state) for move in EXPECTED)
]


@pytest.mark.parametrize(
    ("event", "state"), ILLEGAL, ids=[f"{e.value}@{s.value}" for e, s in ILLEGAL]
)
def test_illegal_event_is_rejected_and_changes_nothing(event: Event, state: State) -> None:
    machine = in_state(state)
    before = snapshot(machine)
    if isinstance(state, SeatState):
        message = f"container 'a' cannot take {event.value} for session 's1' while its seat is "
    else:
        message = f"container 'a' cannot take {event.value} while "
    with pytest.raises(IllegalEventError, match=re.escape(message + state.value)):
        fire(machine, event)
    assert snapshot(machine) == before


@pytest.mark.parametrize(
    ("machine", "now", "share", "reason"),
    [
        *(
            pytest.param(
                container(admission=a), NOW, 0.25, f"it is not admitted ({a.value})", id=a.value
            )
            for a in Admission
            if a is not A.READY
        ),
        pytest.param(
            container(), LATE, 0.25, "its heartbeats stopped (last at 0, now 3.5)", id="late"
        ),
        pytest.param(
            container(liveness=L.MISSED),
            NOW,
            0.25,
            "its heartbeats stopped (last at 0",
            id="missed",
        ),
        pytest.param(
            container(maintenance=M.LOCKED), NOW, 0.25, "it is under maintenance lock", id="lock"
        ),
        pytest.param(
            container(seats=(S.RESERVED,) * 4),
            NOW,
            0.25,
            "it is full (1 taken, 0.25 more does not fit)",
            id="full",
        ),
        pytest.param(
            container(seats=(S.IN_SESSION,) * 3),
            NOW,
            0.5,
            "it is full (0.75 taken, 0.5 more does not fit)",
            id="too-big",
        ),
    ],
)
def test_a_claim_on_a_container_that_is_not_a_candidate_names_why(
    machine: ContainerLifecycle, now: float, share: float, reason: str
) -> None:
    before = snapshot(machine)
    assert not machine.is_candidate(now, share)
    message = f"container 'a' cannot take claimed for session 'new': {reason}"
    with pytest.raises(IllegalEventError, match=re.escape(message)):
        machine.apply_seat(E.CLAIMED, "new", now, share)
    assert snapshot(machine) == before


@pytest.mark.parametrize(
    ("parts", "now", "shown"),
    [
        ((A.CONFIGURING, L.LIVE, M.OPEN, ()), NOW, SeedState.CONFIGURING),
        ((A.CONFIGURING, L.MISSED, M.OPEN, ()), NOW, SeedState.CONFIGURING),
        ((A.AWAITING_INSPECTION, L.LIVE, M.OPEN, ()), NOW, SeedState.AWAITING_INSPECTION),
        ((A.READY, L.LIVE, M.OPEN, ()), NOW, SeedState.CONNECTED_AND_HEALTHY),
        ((A.READY, L.LIVE, M.OPEN, (S.IN_SESSION,) * 4), NOW, SeedState.CONNECTED_AND_HEALTHY),
        ((A.READY, L.LIVE, M.OPEN, ()), LATE, SeedState.INSPECTED_AND_READY),
        ((A.READY, L.MISSED, M.OPEN, ()), NOW, SeedState.INSPECTED_AND_READY),
        ((A.NEEDS_REINSPECTION, L.LIVE, M.OPEN, ()), NOW, SeedState.NEEDS_REINSPECTION),
        ((A.QUALITY_CONTROL, L.LIVE, M.OPEN, ()), NOW, SeedState.QUALITY_CONTROL),
        ((A.SUSPENDED, L.LIVE, M.OPEN, ()), NOW, SeedState.QUALITY_CONTROL),
        ((A.READY, L.LIVE, M.LOCKED, (S.IN_SESSION,)), NOW, SeedState.MAINTENANCE_LOCK),
        ((A.READY, L.MISSED, M.LOCKED, ()), NOW, SeedState.MAINTENANCE_LOCK),
        ((A.QUALITY_CONTROL, L.LIVE, M.LOCKED, ()), NOW, SeedState.MAINTENANCE_LOCK),
        ((A.CONFIGURING, L.MISSED, M.LOCKED, ()), NOW, SeedState.MAINTENANCE_LOCK),
    ],
)
def test_the_seed_state_shown(
    parts: tuple[Admission, Liveness, Maintenance, tuple[SeatState, ...]],
    now: float,
    shown: SeedState,
) -> None:
    assert container(*parts).seed_state(now) is shown


def test_every_seed_state_is_reachable() -> None:
    reached = {
        container(admission=a, liveness=live, maintenance=m).seed_state(now)
        for a, live, m in itertools.product(Admission, Liveness, Maintenance)
        for now in (NOW, LATE)
    }
    assert reached == set(SeedState)


@pytest.mark.parametrize(
    ("admission", "liveness", "maintenance", "room"),
    list(itertools.product(Admission, ("live", "late", "missed"), Maintenance, (True, False))),
    ids=str,
)
def test_candidate_truth_table(
    admission: Admission, liveness: str, maintenance: Maintenance, room: bool
) -> None:
    machine = container(
        admission=admission,
        liveness=L.MISSED if liveness == "missed" else L.LIVE,
        maintenance=maintenance,
        seats=() if room else (S.RESERVED, S.IN_SESSION, S.RESERVED, S.IN_SESSION),
    )
    expected = admission is A.READY and liveness == "live" and maintenance is M.OPEN and room
    assert machine.is_candidate(LATE if liveness == "late" else NOW, 0.25) is expected


@pytest.mark.parametrize(
    ("period", "misses", "beats", "now", "live"),
    [
        (1.0, 3, (), 3.0, True),
        (1.0, 3, (), 3.1, False),
        (1.0, 3, (2.0,), 5.0, True),
        (1.0, 3, (2.0,), 5.1, False),
        (1.0, 3, (2.0, 4.5, 7.25), 10.25, True),
        (1.0, 3, (2.0, 4.5, 7.25), 10.5, False),
        (0.5, 2, (0.75,), 1.75, True),
        (0.5, 2, (0.75,), 1.875, False),
        (2.0, 1, (1.5, 3.0), 5.0, True),
        (2.0, 1, (1.5, 3.0), 5.01, False),
    ],
)
def test_heartbeats_expire_after_the_configured_misses(
    period: float, misses: int, beats: tuple[float, ...], now: float, live: bool
) -> None:
    machine = ContainerLifecycle("a", LivenessConfig(period, misses), now=0.0)
    for at in beats:
        assert machine.apply(E.HEARTBEAT, at) == ()
    assert machine.last_heartbeat == (beats[-1] if beats else 0.0)
    assert machine.is_live(now) is live
    machine.expire(now)
    assert machine.liveness is (L.LIVE if live else L.MISSED)


def test_a_ticking_clock_finds_the_silence_at_the_first_tick_past_the_deadline() -> None:
    machine = ContainerLifecycle("a", LivenessConfig(heartbeat_period=0.5, missed_heartbeats=4), 0)
    clock = 0.0
    while clock < 10.0:  # heartbeats every period, with the timer ticking in between
        clock += 0.25
        if clock % 0.5 == 0:
            machine.apply(E.HEARTBEAT, clock)
        assert machine.expire(clock) == ()
    while machine.liveness is L.LIVE:  # then silence
        clock += 0.25
        machine.expire(clock)
    assert clock == 12.25  # the first tick more than 4 x 0.5 s after the last beat at 10


def test_a_late_heartbeat_does_not_revive_a_container_only_registration_does() -> None:
    machine = container(seats=(S.IN_SESSION,))
    assert machine.expire(LATE) == ("s1",)
    for at in (LATE, 3.6, 10.0):
        with pytest.raises(IllegalEventError, match="cannot take heartbeat while missed"):
            machine.apply(E.HEARTBEAT, at)
        assert (machine.liveness, machine.last_heartbeat) == (L.MISSED, 0.0)
        assert not machine.is_candidate(at, 0.25)
    machine.apply(E.REGISTERED, 11.0)
    assert (machine.liveness, machine.last_heartbeat, machine.seats) == (L.LIVE, 11.0, {})
    assert machine.is_candidate(11.0, 1.0)  # still admitted: registration keeps the verdicts
    machine.apply(E.HEARTBEAT, 13.0)
    assert machine.is_live(16.0)
    assert not machine.is_live(16.1)


def test_a_heartbeat_past_the_deadline_is_refused_before_expire_runs() -> None:
    machine = container()
    message = "container 'a' cannot take heartbeat while live but overdue (last heartbeat at 0, "
    with pytest.raises(IllegalEventError, match=re.escape(message + "now 3.5); expire it first")):
        machine.apply(E.HEARTBEAT, LATE)
    assert (machine.liveness, machine.last_heartbeat) == (L.LIVE, 0.0)


@pytest.mark.parametrize("penalty", [A.QUALITY_CONTROL, A.NEEDS_REINSPECTION, A.SUSPENDED])
def test_reconnecting_does_not_wash_away_a_verdict(penalty: Admission) -> None:
    machine = container(admission=penalty, liveness=L.MISSED)
    machine.apply(E.REGISTERED, NOW)
    assert (machine.admission, machine.liveness) == (penalty, L.LIVE)
    assert not machine.is_candidate(NOW, 0.25)


def test_losing_liveness_frees_every_seat_and_names_the_sessions_to_end() -> None:
    machine = container(seats=(S.RESERVED, S.IN_SESSION, S.RESERVED))
    assert machine.expire(3.0) == ()  # not yet: nothing to end
    assert machine.seats == {"s1": S.RESERVED, "s2": S.IN_SESSION, "s3": S.RESERVED}
    assert machine.expire(LATE) == ("s1", "s2", "s3")
    assert (machine.liveness, machine.seats, machine.load) == (L.MISSED, {}, 0.0)
    assert machine.expire(LATE + 1) == ()  # once
    with pytest.raises(IllegalEventError, match="session 's1' while its seat is free"):
        machine.apply_seat(E.SESSION_STARTED, "s1", LATE)  # the container's late "playing"


def test_a_closed_connection_ends_the_sessions_at_once() -> None:
    machine = container(seats=(S.IN_SESSION, S.RESERVED))
    assert machine.apply(E.HEARTBEAT_MISSED, NOW) == ("s1", "s2")
    assert not machine.is_candidate(NOW, 0.25)


@pytest.mark.parametrize(
    "event",
    [E.HEARTBEAT, E.MAINTENANCE_ON, E.REINSPECTION_DUE, E.QC_FLAGGED, E.SUSPENDED],
    ids=str,
)
def test_only_losing_liveness_ends_sessions(event: Event) -> None:
    machine = container(seats=(S.IN_SESSION, S.RESERVED))
    assert machine.apply(event, NOW) == ()
    assert machine.seats == {"s1": S.IN_SESSION, "s2": S.RESERVED}


def test_seats_fill_a_container_by_their_shares_and_it_stays_standby_until_full() -> None:
    machine = container()
    for n, share in enumerate((0.5, 0.25, 0.25), start=1):
        assert machine.is_candidate(NOW, share)
        machine.apply_seat(E.CLAIMED, f"s{n}", NOW, share)
    assert machine.load == 1.0
    assert not machine.is_candidate(NOW, 0.25)
    machine.apply_seat(E.SESSION_ENDED, "s1", NOW)
    assert machine.is_candidate(NOW, 0.5)
    assert not machine.is_candidate(NOW, 1.0)


@pytest.mark.parametrize("n", [3, 9, 11])
def test_n_seats_of_one_nth_fill_a_container_despite_rounding(n: int) -> None:
    machine = container()
    for k in range(n):  # nine ninths add up to a hair over 1 in floating point
        machine.apply_seat(E.CLAIMED, f"s{k}", NOW, 1 / n)
    assert not machine.is_candidate(NOW, 1 / n)


def test_a_maintenance_lock_drains_the_seats_it_holds() -> None:
    machine = container(seats=(S.RESERVED, S.IN_SESSION))
    machine.apply(E.MAINTENANCE_ON, NOW)
    assert (machine.availability, machine.load) == (Availability.MAINTENANCE_LOCK, 0.5)
    with pytest.raises(IllegalEventError, match="'s3': it is under maintenance lock"):
        machine.apply_seat(E.CLAIMED, "s3", NOW, 0.25)
    machine.apply_seat(E.SESSION_STARTED, "s1", NOW)  # claimed before the lock: it may play
    for session in ("s1", "s2"):
        machine.apply_seat(E.SESSION_ENDED, session, NOW)
    assert (machine.seats, machine.availability) == ({}, Availability.MAINTENANCE_LOCK)
    machine.apply(E.MAINTENANCE_OFF, NOW)
    assert machine.availability is Availability.STANDBY
    machine.apply_seat(E.CLAIMED, "s3", NOW)
    assert machine.seats == {"s3": S.RESERVED}


@pytest.mark.parametrize(
    ("seats", "maintenance", "shown"),
    [
        ((), M.OPEN, Availability.STANDBY),
        ((S.RESERVED,), M.OPEN, Availability.RESERVED),
        ((S.RESERVED, S.IN_SESSION, S.RESERVED), M.OPEN, Availability.IN_SESSION),
        ((), M.LOCKED, Availability.MAINTENANCE_LOCK),
        ((S.IN_SESSION,), M.LOCKED, Availability.MAINTENANCE_LOCK),
    ],
    ids=str,
)
def test_availability_shown_is_the_lock_else_the_busiest_seat(
    seats: tuple[SeatState, ...], maintenance: Maintenance, shown: Availability
) -> None:
    assert container(seats=seats, maintenance=maintenance).availability is shown


def test_events_go_through_the_method_for_their_part() -> None:
    machine = container()
    with pytest.raises(ValueError, match="claimed moves a seat: use apply_seat"):
        machine.apply(E.CLAIMED, NOW)
    with pytest.raises(ValueError, match="heartbeat moves the container: use apply"):
        machine.apply_seat(E.HEARTBEAT, "s1", NOW)


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_a_seat_takes_a_share_of_its_container(share: float) -> None:
    machine = container()
    with pytest.raises(
        ValueError, match=re.escape(f"a share in (0, 1] of its container, not {share}")
    ):
        machine.apply_seat(E.CLAIMED, "s1", NOW, share)
    assert machine.seats == {}


@pytest.mark.parametrize(("period", "misses"), [(0.0, 3), (-1.0, 3), (1.0, 0)])
def test_liveness_needs_a_positive_period_and_threshold(period: float, misses: int) -> None:
    with pytest.raises(ValueError, match="a positive period and a miss threshold of at least 1"):
        LivenessConfig(period, misses)
