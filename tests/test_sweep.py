"""The indexer's periodic round as a pure tick: what each moment of a fake clock sends."""

from __future__ import annotations

import itertools

import numpy as np

from contracts import protocol as p
from indexer.lifecycle import LivenessConfig
from indexer.play_queue import PlayQueue, Relaxation
from indexer.registry import ContainerRegistry
from indexer.selection import Request
from indexer.store import MemoryStore
from judge.coordinator import Coordinator, VerificationConfig
from judge.desk import VerificationDesk
from judge.rotation import RotationConfig
from signaling.broker import START_TIMEOUT, Outgoing, SessionBroker
from signaling.sweep import Sweep

WALL = 1_000_000.0
PLAY = p.Play("reference", 1280, 720, 60)
REQUEST = Request("reference", 1280, 720, 60)


def register(container_id: str) -> p.Register:
    return p.Register(container_id, ["reference"], ["x264"], 1280, 720, 60)


class Indexers:
    """The other indexers as the bus would tell: who is alive, and who was asked."""

    indexer_id = "me"

    def __init__(self, alive: dict[str, bool]) -> None:
        self._alive = alive
        self.asked: list[str] = []

    def owner_of(self, session_id: str) -> str:
        return session_id.partition(".")[0]

    async def alive(self, indexer_id: str) -> bool:
        self.asked.append(indexer_id)
        return self._alive[indexer_id]


def new_sweep(
    *, admit: bool = True, indexers: Indexers | None = None
) -> tuple[Sweep, SessionBroker, VerificationDesk]:
    registry = ContainerRegistry(
        LivenessConfig(2.0, 3), np.random.default_rng(0), admit_on_register=admit
    )
    store = MemoryStore(registry)
    counter = itertools.count(1)
    broker = SessionBroker(store, PlayQueue(Relaxation()), lambda: f"me.s{next(counter)}")
    config = VerificationConfig(rotation=RotationConfig(duty_size=1, committee_size=1))
    desk = VerificationDesk(Coordinator(config, b"g", WALL - 1, np.random.default_rng(0)), store)
    return Sweep(broker, desk, indexers), broker, desk


async def test_a_quiet_moment_sends_nothing() -> None:
    sweep, broker, _ = new_sweep()
    await broker.register(register("c1"), 0.0)
    assert await sweep.tick(1.0, WALL + 1, ["c1"]) == []


async def test_a_tick_expires_a_silent_container_and_tells_its_player() -> None:
    sweep, broker, _ = new_sweep()
    await broker.register(register("c1"), 0.0)
    await broker.play("p1", PLAY, 0.0)
    assert await sweep.tick(5.0, WALL + 5, ["c1"]) == []
    assert await sweep.tick(6.5, WALL + 6.5, ["c1"]) == [
        Outgoing("player", "p1", p.Ended("me.s1", "the container stopped sending heartbeats"))
    ]
    assert broker.sessions == {}


async def test_a_tick_ends_a_session_that_never_started_and_seats_the_next_player() -> None:
    sweep, broker, _ = new_sweep()
    await broker.register(register("c1"), 0.0)
    await broker.play("p1", PLAY, 0.0)
    await broker.play("p2", PLAY, 0.0)  # queued: c1 has one seat
    for beat in range(5, int(START_TIMEOUT), 5):
        await broker.heartbeat("c1", float(beat))
        for sent in await sweep.tick(float(beat), WALL + beat, ["c1"]):  # p2's bound relaxes
            assert sent.peer_id == "p2" and isinstance(sent.message, p.Queued)
    reason = f"the session did not start within {START_TIMEOUT:g} s"
    ended, seated = await sweep.tick(START_TIMEOUT, WALL + START_TIMEOUT, ["c1"])
    assert ended == Outgoing("player", "p1", p.Ended("me.s1", reason))
    assert seated.peer_id == "p2" and isinstance(seated.message, p.Matched)
    assert seated.message.container == "c1"


async def test_a_tick_sends_due_checks_to_their_verifiers() -> None:
    sweep, broker, desk = new_sweep(admit=False)
    desk.enlist(p.Enlist("v0", 10))
    await broker.register(register("c1"), 0.0)
    ((kind, verifier_id, assignment),) = [
        (o.kind, o.peer_id, o.message) for o in await sweep.tick(1.0, WALL, ["c1"])
    ]
    assert (kind, verifier_id) == ("verifier", "v0")
    assert isinstance(assignment, p.Assignment)
    assert (assignment.container, assignment.kind) == ("c1", "registration")


async def test_a_dead_indexers_reservation_on_our_container_is_freed_and_no_other() -> None:
    indexers = Indexers({"dead": False, "live": True})
    sweep, broker, _ = new_sweep(indexers=indexers)
    store = broker.store
    for container_id in ("c1", "c2", "c3", "c4"):
        await broker.register(register(container_id), 0.0)
    await store.claim_on("c1", REQUEST, "dead.a", 0.0)
    await store.claim_on("c2", REQUEST, "live.b", 0.0)
    await store.claim_on("c4", REQUEST, "dead.c", 0.0)  # another indexer's container
    assert await broker.play("p1", PLAY, 0.0) == [
        Outgoing("player", "p1", p.Matched("me.s1", "c3"))
    ]
    assert await sweep.tick(1.0, WALL + 1, ["c1", "c2", "c3"]) == []
    assert sorted(store.reserved(["c1", "c2", "c3", "c4"])) == [
        ("c2", "live.b"),
        ("c3", "me.s1"),
        ("c4", "dead.c"),
    ]
    assert sorted(indexers.asked) == ["dead", "live"]  # each once, ours never


async def test_one_indexer_alone_leaves_reservations_to_its_start_timeout() -> None:
    sweep, broker, _ = new_sweep()
    await broker.register(register("c1"), 0.0)
    await broker.store.claim_on("c1", REQUEST, "gone.a", 0.0)
    assert await sweep.tick(1.0, WALL + 1, ["c1"]) == []
    assert broker.store.reserved(["c1"]) == [("c1", "gone.a")]
