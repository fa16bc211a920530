"""The Redis store against a real redis-server: the lifecycle's table, claims, expiry, the change
feed, and no double claims from many tasks or from three indexer processes on one Redis."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from contracts.protocol import BUILD_EVENT_KINDS
from indexer.build_events import RECENT_BUILD_EVENTS, BuildEventRecord
from indexer.coordinates import Coordinate
from indexer.lifecycle import (
    TRANSITIONS,
    Admission,
    ContainerLifecycle,
    Event,
    IllegalEventError,
    Liveness,
    LivenessConfig,
    Maintenance,
    SeatState,
    State,
)
from indexer.redis_store import (
    Blocker,
    BlockReason,
    Change,
    ChangeKind,
    Claimed,
    ContainerState,
    FeedGapError,
    RedisStore,
    Refused,
    RegisterAgainError,
    StoreUnavailableError,
    UnknownContainerError,
    replay,
)
from testbed.redis_server import RedisServer
from tests.samples import SEAT_EVENTS

A, L, M, S, E, K, B = Admission, Liveness, Maintenance, SeatState, Event, ChangeKind, BlockReason
LIVENESS = LivenessConfig(heartbeat_period=60.0, missed_heartbeats=3)  # never overdue here
SHORT = LivenessConfig(heartbeat_period=0.2, missed_heartbeats=2)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[aioredis.Redis]]:
    """Three clients, as three indexers would hold, on the emptied test server."""
    made = [aioredis.from_url(redis_url, decode_responses=True) for _ in range(3)]
    yield made
    for client in made:
        await client.aclose()


@pytest.fixture
def store(clients: list[aioredis.Redis]) -> RedisStore:
    return RedisStore(clients[0], LIVENESS)


async def admitted(store: RedisStore, container_id: str, capacity: int = 1) -> None:
    await store.register(container_id, {"capacity": capacity})
    await store.apply(container_id, E.SPECS_RECEIVED)
    await store.apply(container_id, E.INSPECTION_PASSED)


async def state_of(store: RedisStore, container_id: str) -> ContainerState:
    _, states = await store.snapshot()
    return next(s for s in states if s.container_id == container_id)


async def until_overdue(store: RedisStore, container_id: str) -> None:
    """Wait on Redis state: the container's deadline passed by the server's clock."""
    async with asyncio.timeout(30):
        while (await state_of(store, container_id)).deadline_left >= 0:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # (no event to wait on: the state is the server's)


async def test_a_new_container_starts_configuring_live_open_with_no_seats(store):
    assert await store.register("c", {"games": ["g"], "capacity": 2}) == ()
    state = await state_of(store, "c")
    assert state == ContainerState("c", {"games": ["g"], "capacity": 2}, *_first_parts(), 0.0, {})
    assert 0 < state.deadline_left <= LIVENESS.timeout


def _first_parts() -> tuple[Admission, Liveness, Maintenance]:
    first = ContainerLifecycle("c", LIVENESS, 0.0)
    return first.admission, first.liveness, first.maintenance


async def test_every_move_and_refusal_matches_the_pure_lifecycle(store):
    """A seeded random walk over every event, against ContainerLifecycle: same legality,
    same messages, same parts, seats and freed sessions, until every row was taken."""
    rng = random.Random(11)
    model = ContainerLifecycle("c", LIVENESS, 0.0)
    await store.register("c", {})
    taken: set[tuple[Event, State]] = set()
    refused = 0
    for _ in range(3000):
        session, share = rng.choice(["s1", "s2", "s3"]), rng.choice([1 / 3, 1 / 2, 1.0])
        event = rng.choice(_legal(model, session, share) if rng.random() < 0.8 else list(Event))
        sources = _sources(model, event, session)
        expected: object
        try:
            if event in SEAT_EVENTS:
                model.apply_seat(event, session, 0.0, share)
                load = pytest.approx(model.load)  # a seat move returns the load it leaves
                expected = Claimed("c", load) if event is E.CLAIMED else load
            else:
                expected = set(model.apply(event, 0.0))
        except IllegalEventError as exc:
            expected = exc
        got = await _store_event(store, event, session, share)
        if isinstance(expected, IllegalEventError):
            refused += 1
            if event is E.CLAIMED and model.seat(session) is not S.FREE:
                assert got == Claimed("c", model.load, existing=True)  # a retried claim
            elif event is E.CLAIMED:
                assert isinstance(got, Refused)
            elif event is E.HEARTBEAT:
                assert isinstance(got, RegisterAgainError)
            else:
                assert isinstance(got, IllegalEventError) and str(got) == str(expected)
        else:
            assert not isinstance(got, Exception | Refused), got
            assert got == expected  # the same load, or the same sessions freed
            taken |= sources
        state = await state_of(store, "c")
        assert (state.admission, state.liveness, state.maintenance, state.seats) == (
            model.admission, model.liveness, model.maintenance, model.seats
        )  # fmt: skip
        assert state.load == pytest.approx(model.load)
        if taken == {(t.event, t.source) for t in TRANSITIONS}:
            break
    assert taken == {(t.event, t.source) for t in TRANSITIONS}
    assert refused > 0


def _legal(model: ContainerLifecycle, session: str, share: float) -> list[Event]:
    """The events the model takes now, seat moves thrice: most of the walk goes somewhere."""
    parts = {model.admission, model.liveness, model.maintenance, model.seat(session)}
    legal = {t.event for t in TRANSITIONS if t.source in parts}
    if not model.is_candidate(0.0, share):
        legal.discard(E.CLAIMED)
    return [e for e in Event if e in legal] + [e for e in SEAT_EVENTS if e in legal] * 2


def _sources(model: ContainerLifecycle, event: Event, session: str) -> set[tuple[Event, State]]:
    """The (event, source) rows a legal `event` takes from the model's state now."""
    parts: tuple[State, ...] = (model.admission, model.liveness, model.maintenance)
    rows = {(t.event, t.source) for t in TRANSITIONS if t.event is event}
    sources = {(event, p) for p in parts} | {(event, model.seat(session))}
    if event is E.HEARTBEAT_MISSED:
        sources |= {(event, seat) for seat in model.seats.values()}
    return sources & rows


async def _store_event(store: RedisStore, event: Event, session: str, share: float) -> object:
    try:
        if event is E.CLAIMED:
            return await store.claim(session, [("c", share)])
        if event is E.SESSION_STARTED:
            return await store.start("c", session)
        if event is E.SESSION_ENDED:
            return await store.release("c", session)
        if event is E.HEARTBEAT:
            await store.heartbeat("c")
            return set()
        return set(await store.apply("c", event))
    except IllegalEventError as exc:
        return exc


async def test_an_illegal_event_is_refused_as_the_lifecycle_refuses_it(store):
    await store.register("c", {})
    with pytest.raises(IllegalEventError) as refusal:
        await store.apply("c", E.INSPECTION_PASSED)
    with pytest.raises(IllegalEventError) as pure:
        ContainerLifecycle("c", LIVENESS, 0.0).apply(E.INSPECTION_PASSED, 0.0)
    assert str(refusal.value) == str(pure.value)
    assert (await state_of(store, "c")).admission is A.CONFIGURING
    with pytest.raises(ValueError, match="moves a seat"):
        await store.apply("c", E.CLAIMED)
    with pytest.raises(UnknownContainerError, match="'nobody'"):
        await store.apply("nobody", E.MAINTENANCE_ON)


async def test_a_heartbeat_from_a_missed_unknown_or_overdue_container_says_register_again(
    store, clients
):
    await admitted(store, "c")
    await store.heartbeat("c")
    with pytest.raises(RegisterAgainError, match="does not know it; register again"):
        await store.heartbeat("nobody")
    await store.claim("s", [("c", 1.0)])
    hasty = RedisStore(clients[1], LivenessConfig(0.01, 1))
    await hasty.heartbeat("c")  # its deadline is now 10 ms away
    await until_overdue(store, "c")
    with pytest.raises(RegisterAgainError, match="past its deadline; register again"):
        await store.heartbeat("c")
    assert (await state_of(store, "c")).seats == {"s": S.RESERVED}  # left to expiry: once
    assert await store.register("c", {"capacity": 1}) == ("s",)  # ...which registering is
    assert await store.expire() == []
    await store.apply("c", E.HEARTBEAT_MISSED)
    with pytest.raises(RegisterAgainError, match="while missed: seats freed; register again"):
        await store.heartbeat("c")


async def test_registering_again_keeps_admission_and_revives(store):
    await admitted(store, "c", capacity=2)
    await store.apply("c", E.QC_FLAGGED)
    await store.apply("c", E.MAINTENANCE_ON)
    assert await store.apply("c", E.HEARTBEAT_MISSED) == ()
    assert await store.register("c", {"capacity": 2, "new": True}) == ()
    state = await state_of(store, "c")
    assert (state.admission, state.liveness, state.maintenance) == (
        A.QUALITY_CONTROL, L.LIVE, M.LOCKED
    )  # fmt: skip
    assert state.profile == {"capacity": 2, "new": True}


async def test_a_live_container_registering_with_another_indexer_keeps_its_seats(clients):
    first, second = RedisStore(clients[0], LIVENESS), RedisStore(clients[1], LIVENESS)
    await admitted(first, "c", capacity=2)
    await first.claim("s", [("c", 0.5)])
    await first.start("c", "s")
    assert await second.register("c", {"capacity": 2}) == ()  # a failover: it is still LIVE
    state = await state_of(second, "c")
    assert (state.admission, state.liveness, state.seats) == (A.READY, L.LIVE, {"s": S.IN_SESSION})


async def test_a_claim_seats_the_first_candidate_that_fits_and_says_what_blocked_the_rest(
    store, clients
):
    await store.register("configuring", {})
    for cid in ("full", "missed", "locked", "late", "ok", "also_ok"):
        await admitted(store, cid)
    await store.claim("x", [("full", 1.0)])
    await store.apply("missed", E.HEARTBEAT_MISSED)
    await store.apply("locked", E.MAINTENANCE_ON)
    await RedisStore(clients[1], LivenessConfig(0.01, 1)).heartbeat("late")
    await until_overdue(store, "late")
    blocked = ["nobody", "configuring", "missed", "late", "locked", "full"]
    candidates = [(cid, 1.0) for cid in [*blocked, "ok", "also_ok"]]
    assert await store.claim("s", candidates) == Claimed("ok", 1.0)
    assert await store.claim("t", candidates[:6]) == Refused(
        (
            Blocker("nobody", B.UNKNOWN, 0.0),
            Blocker("configuring", B.NOT_ADMITTED, 0.0),
            Blocker("missed", B.MISSED, 0.0),
            Blocker("late", B.OVERDUE, 0.0),
            Blocker("locked", B.LOCKED, 0.0),
            Blocker("full", B.FULL, 1.0),
        )
    )
    assert await store.claim("t", []) == Refused(())
    with pytest.raises(ValueError, match=r"share in \(0, 1\]"):
        await store.claim("t", [("ok", 1.5)])


async def test_a_container_of_capacity_three_takes_exactly_three_seats(store):
    await admitted(store, "trio", capacity=3)
    results = [await store.claim(f"s{i}", [("trio", 1 / 3)]) for i in range(4)]
    loads = [r.load for r in results if isinstance(r, Claimed)]
    assert loads == pytest.approx([1 / 3, 2 / 3, 1])
    assert results[3] == Refused((Blocker("trio", B.FULL, loads[2]),))
    assert await store.release("trio", "s1") == pytest.approx(2 / 3)
    assert await store.claim("s3", [("trio", 1 / 3)]) == Claimed("trio", pytest.approx(1.0))
    assert set((await state_of(store, "trio")).seats) == {"s0", "s2", "s3"}


async def test_start_and_release_take_the_seat_moves_of_the_table(store):
    await admitted(store, "c")
    await store.claim("s", [("c", 1.0)])
    assert await store.start("c", "s") == 1.0
    with pytest.raises(IllegalEventError) as twice:
        await store.start("c", "s")
    assert str(twice.value) == (
        "container 'c' cannot take session_started for session 's' while its seat is in_session"
    )
    assert await store.release("c", "s") == 0.0
    with pytest.raises(IllegalEventError, match="ended for session 's' while its seat is free"):
        await store.release("c", "s")
    with pytest.raises(UnknownContainerError):
        await store.release("nobody", "s")


async def test_a_claim_is_idempotent_for_its_session(store):
    await admitted(store, "a", capacity=2)
    await admitted(store, "b", capacity=2)
    assert await store.claim("s", [("a", 0.5), ("b", 0.5)]) == Claimed("a", 0.5)
    assert await store.claim("s", [("a", 0.5), ("b", 0.5)]) == Claimed("a", 0.5, existing=True)
    with pytest.raises(IllegalEventError, match="holds a seat on container 'a'"):
        await store.claim("s", [("b", 0.5)])
    assert (await state_of(store, "a")).seats == {"s": S.RESERVED}


async def test_expiry_frees_seats_and_is_reported_once_across_three_sweepers(clients):
    setup = RedisStore(clients[0], LIVENESS)
    sweepers = [RedisStore(client, SHORT) for client in clients]
    expected = {f"c{i}": (f"s{i}a", f"s{i}b") for i in range(12)}
    for cid, sessions in [*expected.items(), ("steady", ("kept",))]:
        await admitted(setup, cid, capacity=2)
        for session in sessions:
            await setup.claim(session, [(cid, 0.5)])
    for cid in expected:
        await sweepers[0].heartbeat(cid)  # deadline 0.4 s from now; "steady" keeps 180 s
    reports: list[list[tuple[str, tuple[str, ...]]]] = [[], [], []]

    async def sweep(store: RedisStore, out: list[tuple[str, tuple[str, ...]]]) -> None:
        while {cid for report in reports for cid, _ in report} != set(expected):
            out.extend(await store.expire())
            await asyncio.sleep(0.005)

    async with asyncio.timeout(60), asyncio.TaskGroup() as group:
        for store, out in zip(sweepers, reports, strict=True):
            group.create_task(sweep(store, out))
    everything = sorted(entry for report in reports for entry in report)
    assert everything == sorted(expected.items())  # each container once, with its seats
    _, states = await setup.snapshot()
    for state in states:
        if state.container_id == "steady":
            assert (state.liveness, state.seats) == (L.LIVE, {"kept": S.RESERVED})
        else:
            assert (state.liveness, state.seats, state.load) == (L.MISSED, {}, 0.0)
    assert await clients[0].hgetall("gamecast:sessions") == {"kept": "steady"}


async def test_the_change_feed_carries_every_change_in_order(store):
    start, states = await store.snapshot()
    assert (start, states) == ("0-0", [])
    await store.register("c", {"capacity": 2})
    await store.heartbeat("c")  # heartbeats are not in the feed
    await store.apply("c", E.SPECS_RECEIVED)
    await store.apply("c", E.INSPECTION_PASSED)
    await store.claim("s", [("c", 0.5)])
    await store.start("c", "s")
    await store.set_quality("c", 0.9, 0.25)
    await store.set_coordinate("c", Coordinate((0.01, -0.02), 0.003, 0.5))
    await store.claim("t", [("c", 0.5)])
    await store.apply("c", E.HEARTBEAT_MISSED)
    await store.register("c", {"capacity": 2, "v": 2})
    await store.remove("c")
    last, changes = await store.changes(start)
    assert [replace(change, stream_id="") for change in changes] == [
        Change("", "c", K.REGISTERED, profile={"capacity": 2}, admission=A.CONFIGURING,
               liveness=L.LIVE, maintenance=M.OPEN, load=0.0),
        Change("", "c", K.LIFECYCLE, E.SPECS_RECEIVED, admission=A.AWAITING_INSPECTION, load=0.0),
        Change("", "c", K.LIFECYCLE, E.INSPECTION_PASSED, admission=A.READY, load=0.0),
        Change("", "c", K.SEAT, load=0.5, session_id="s", seat=S.RESERVED),
        Change("", "c", K.SEAT, load=0.5, session_id="s", seat=S.IN_SESSION),
        Change("", "c", K.QUALITY, qos=0.9, penalty=0.25),
        Change("", "c", K.COORDINATE, coordinate=Coordinate((0.01, -0.02), 0.003, 0.5)),
        Change("", "c", K.SEAT, load=1.0, session_id="t", seat=S.RESERVED),
        Change("", "c", K.LIFECYCLE, E.HEARTBEAT_MISSED, liveness=L.MISSED, load=0.0,
               freed=("s", "t")),
        Change("", "c", K.REGISTERED, profile={"capacity": 2, "v": 2}, admission=A.READY,
               liveness=L.LIVE, maintenance=M.OPEN, load=0.0),
        Change("", "c", K.REMOVED),
    ]  # fmt: skip
    assert last == changes[-1].stream_id
    assert await store.changes(last) == (last, [])
    assert await store.snapshot() == (last, [])


async def test_a_snapshot_and_the_changes_after_it_rebuild_the_state_while_others_write(clients):
    stores = [RedisStore(client, LIVENESS) for client in clients]
    for i in range(12):
        await admitted(stores[0], f"c{i}", capacity=1 + i % 4)
    halfway = asyncio.Event()

    async def churn(store: RedisStore, seed: int) -> None:
        rng = random.Random(seed)
        for n in range(300):
            if n == 150:
                halfway.set()
            await _random_change(store, rng, f"{seed}-{n}")

    async with asyncio.TaskGroup() as group:
        group.create_task(churn(stores[1], 1))
        group.create_task(churn(stores[2], 2))
        await halfway.wait()
        since, snapshot = await stores[0].snapshot()
    states = {state.container_id: state for state in snapshot}
    rebuilt: dict[str, ContainerState] = {}
    for first, into in ((since, states), ("0-0", rebuilt)):
        after = first
        while True:
            after, changes = await stores[0].changes(after, count=100)
            if not changes:
                break
            for change in changes:
                replay(into, change)
    _, now = await stores[0].snapshot()
    assert states == rebuilt == {state.container_id: state for state in now}


async def _random_change(store: RedisStore, rng: random.Random, session: str) -> None:
    cid = f"c{rng.randrange(14)}"  # c12 and c13 come and go
    action = rng.randrange(8)
    try:
        if action < 3:
            shares = [(f"c{rng.randrange(12)}", rng.choice([1 / 4, 1 / 2, 1.0])) for _ in range(3)]
            result = await store.claim(session, shares)
            if isinstance(result, Claimed) and rng.random() < 0.5:
                await store.start(result.container_id, session)
        elif action == 3:
            _, states = await store.snapshot()
            seated = [(s.container_id, seat) for s in states for seat in s.seats]
            if seated:
                await store.release(*rng.choice(seated))
        elif action == 4:
            events = [E.MAINTENANCE_ON, E.MAINTENANCE_OFF, E.QC_FLAGGED, E.INSPECTION_PASSED]
            await store.apply(cid, rng.choice([*events, E.HEARTBEAT_MISSED]))
        elif action == 5:
            await store.register(cid, {"capacity": 2, "seen": session})
        elif action == 6 and rng.random() < 0.5:
            await store.set_quality(cid, rng.random(), rng.random())
        elif action == 6:
            kind = rng.choice(BUILD_EVENT_KINDS)
            limit = "memory" if kind == "limit_killed" else ""
            await store.add_build_event(cid, BuildEventRecord(rng.random(), kind, limit=limit))
        else:
            await store.remove(f"c{rng.randrange(12, 14)}")
    except (IllegalEventError, UnknownContainerError):
        pass  # the other writer got there first: refused, and nothing changed


async def test_build_reports_are_kept_bounded_counted_and_fed_to_every_indexer(clients):
    store, other = RedisStore(clients[0], LIVENESS), RedisStore(clients[1], LIVENESS)
    start, _ = await store.snapshot()
    await admitted(store, "c")
    hostile = '</script>\\/"\u00e9' * 10  # survives Lua's cjson as it came
    reports = [
        BuildEventRecord(1700 + i / 3, "crashed", "arcade", "1.0", session=f"s{i}", detail=hostile)
        for i in range(RECENT_BUILD_EVENTS + 5)
    ]
    for report in reports:
        await store.add_build_event("c", report)
    planted = BuildEventRecord(1800.0, "planted", sha256="cd" * 32)
    await other.add_build_event("c", planted)
    state = await state_of(other, "c")
    assert state.build_events.recent == (*reports[6:], planted)  # the latest 20, oldest first
    assert state.build_events.counts == {"crashed": RECENT_BUILD_EVENTS + 5, "planted": 1}
    await store.apply("c", E.HEARTBEAT_MISSED)
    await store.register("c", {"capacity": 1})  # back after a lost connection: kept
    assert (await state_of(store, "c")).build_events == state.build_events
    _, changes = await store.changes(start)
    fed = [c for c in changes if c.kind is K.BUILD_EVENT]
    assert [(c.build_event, c.build_count) for c in fed[-2:]] == [
        (reports[-1], RECENT_BUILD_EVENTS + 5),
        (planted, 1),
    ]
    rebuilt: dict[str, ContainerState] = {}
    for change in changes:
        replay(rebuilt, change)
    assert rebuilt["c"].build_events == state.build_events
    with pytest.raises(UnknownContainerError, match="'nobody' is not in the store"):
        await store.add_build_event("nobody", planted)


async def test_changes_wait_for_the_next_change(clients):
    reader, writer = RedisStore(clients[0], LIVENESS), RedisStore(clients[1], LIVENESS)
    since, _ = await reader.snapshot()
    async with asyncio.TaskGroup() as group:
        waiting = group.create_task(reader.changes(since, block_ms=60_000))
        await writer.register("c", {})
    last, changes = waiting.result()
    assert [(c.container_id, c.kind) for c in changes] == [("c", K.REGISTERED)]
    assert last == changes[0].stream_id


async def test_a_reader_that_fell_behind_the_trimmed_feed_is_told_to_snapshot_again(clients):
    store = RedisStore(clients[0], LIVENESS, feed_length=10)
    await store.register("c", {})
    for i in range(300):
        await store.set_quality("c", i / 300, 0.0)
    with pytest.raises(FeedGapError, match="snapshot again"):
        await store.changes("0-0")
    since, _ = await store.snapshot()
    await store.set_quality("c", 1.0, 0.0)
    _, changes = await store.changes(since)
    assert [c.qos for c in changes] == [1.0]


async def test_an_unreachable_store_says_where_and_what_to_check(tmp_path):
    nowhere = str(tmp_path / "none.sock")
    once = Retry(NoBackoff(), 0)  # redis-py's default retries take seconds to give up
    client = aioredis.Redis(unix_socket_path=nowhere, decode_responses=True, retry=once)
    store = RedisStore(client, LIVENESS)
    try:
        with pytest.raises(StoreUnavailableError, match=r"at .*none\.sock is unreachable"):
            await store.claim("s", [("c", 1.0)])
        with pytest.raises(StoreUnavailableError, match="is redis-server running"):
            await store.snapshot()
    finally:
        await client.aclose()


async def test_the_store_needs_a_decoding_client(redis_url):
    client = aioredis.from_url(redis_url)
    try:
        with pytest.raises(ValueError, match="decode_responses=True"):
            RedisStore(client, LIVENESS)
    finally:
        await client.aclose()


async def test_two_hundred_tasks_on_three_clients_never_double_claim(clients):
    stores = [RedisStore(client, LIVENESS) for client in clients]
    rng = random.Random(7)
    capacity = {f"c{i}": rng.choice([1, 2, 3, 4]) for i in range(100)}
    for cid, seats in capacity.items():
        await admitted(stores[0], cid, seats)
    claimed: dict[str, str] = {}
    refused: list[Refused] = []
    go = asyncio.Event()

    async def claimer(task: int) -> None:
        picks = random.Random(task)
        await go.wait()
        for n in range(3):
            ranked = [(cid, 1 / capacity[cid]) for cid in picks.sample(sorted(capacity), 6)]
            result = await stores[task % 3].claim(f"t{task}-{n}", ranked)
            if isinstance(result, Claimed):
                assert not result.existing
                claimed[f"t{task}-{n}"] = result.container_id
            else:
                refused.append(result)

    async with asyncio.TaskGroup() as group:
        for task in range(200):
            group.create_task(claimer(task))
        go.set()
    assert len(claimed) + len(refused) == 600
    assert 0 < len(claimed) <= sum(capacity.values()) < 600  # so some claims were refused...
    for refusal in refused:  # ...and only because all six candidates were full
        assert [b.reason for b in refusal.blockers] == [B.FULL] * 6, refusal
    await assert_no_double_claims(clients[0], capacity, claimed)


async def test_three_indexer_processes_never_double_claim(clients, redis_server: RedisServer):
    store = RedisStore(clients[0], LIVENESS)
    rng = random.Random(3)
    capacity = {f"c{i}": rng.choice([1, 2, 3, 4]) for i in range(60)}
    for cid, seats in capacity.items():
        await admitted(store, cid, seats)
    command = [sys.executable, "-m", "tests.redis_claimer", str(redis_server.socket_path)]
    pipe = asyncio.subprocess.PIPE
    processes: list[asyncio.subprocess.Process] = []
    try:
        for k in range(3):
            args = [*command, "gamecast", f"p{k}", "500", str(k)]
            process = await asyncio.create_subprocess_exec(
                *args, cwd=ROOT, stdout=pipe, stderr=pipe
            )
            processes.append(process)
        for _ in processes:  # all of them waiting on the start signal: they start together
            assert await clients[0].blpop(["gamecast:ready"], timeout=60) is not None
        await clients[0].rpush("gamecast:go", *["go"] * len(processes))
        outputs = await asyncio.gather(*(p.communicate() for p in processes))
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err.decode()
    reports = [json.loads(out) for out, _ in outputs]
    held = {session: cid for report in reports for session, cid in report["held"]}
    assert len(held) == sum(r["claimed"] - r["released"] for r in reports)
    assert all(r["claimed"] > 0 and r["refused"] > 0 and r["released"] > 0 for r in reports)
    await assert_no_double_claims(clients[0], capacity, held)


async def assert_no_double_claims(
    client: aioredis.Redis, capacity: dict[str, int], claimed: dict[str, str]
) -> None:
    """From Redis itself: no container above its capacity or a load of 1, no session seated
    twice, and exactly the seats the claimers hold."""
    seated: dict[str, str] = {}
    for cid, seats in capacity.items():
        held = await client.hgetall(f"gamecast:seats:{cid}")
        assert len(held) <= seats
        load = sum(float(value.split(" ")[1]) for value in held.values())
        assert load <= 1 + 1e-9
        assert float(await client.hget(f"gamecast:c:{cid}", "load")) == pytest.approx(load)
        for session in held:
            assert session not in seated, f"{session} seated on {seated[session]} and {cid}"
            seated[session] = cid
    assert seated == claimed
    assert await client.hgetall("gamecast:sessions") == claimed
