"""SessionBroker as a pure state machine: the exact messages out for each event in."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest

from contracts import protocol as p
from contracts.requirements import BuildNeeds, Requirements
from indexer.build_events import RECENT_BUILD_EVENTS
from indexer.errors import IndexerError, NoContainerError
from indexer.lifecycle import Admission, Availability, Liveness, LivenessConfig
from indexer.play_queue import PlayQueue, Relaxation
from indexer.registry import ContainerRegistry, ContainerSpec
from indexer.store import MemoryStore
from signaling.broker import START_TIMEOUT, Outgoing, SessionBroker, request_of
from signaling.session import SessionStatus

REGISTER = p.Register("c1", ["tetris"], ["h264"], 1920, 1080, 60)
PLAY = p.Play("tetris", 1280, 720, 60)
OFFER = p.Offer("offer-sdp")


def new_broker() -> SessionBroker:
    counter = itertools.count(1)
    registry = ContainerRegistry(
        LivenessConfig(2.0, 3), np.random.default_rng(0), admit_on_register=True
    )
    return SessionBroker(
        MemoryStore(registry), PlayQueue(Relaxation()), lambda: f"s{next(counter)}"
    )


def registry(broker: SessionBroker) -> ContainerRegistry:
    assert isinstance(broker.store, MemoryStore)
    return broker.store.registry


def seats(broker: SessionBroker, container_id: str = "c1") -> dict[str, object]:
    return dict(registry(broker).get(container_id).lifecycle.seats)


def availability(broker: SessionBroker, container_id: str = "c1") -> Availability:
    return registry(broker).get(container_id).lifecycle.availability


def status(broker: SessionBroker, session_id: str = "s1") -> SessionStatus:
    return broker.sessions[session_id].status


async def matched(broker: SessionBroker, player_id: str = "p1") -> SessionBroker:
    """A broker with c1 registered at t=0 and `player_id` matched to it."""
    await broker.register(REGISTER, now=0.0)
    await broker.play(player_id, PLAY, 0.0)
    return broker


async def connecting(broker: SessionBroker) -> SessionBroker:
    await (await matched(broker)).offer("p1", OFFER)
    return broker


@contextmanager
def refused(code: str, fragment: str) -> Iterator[None]:
    with pytest.raises(p.ProtocolError, match=re.escape(fragment)) as caught:
        yield
    assert caught.value.code == code


async def test_happy_path() -> None:
    broker = new_broker()
    assert await broker.register(REGISTER, now=0.0) == [
        Outgoing("container", "c1", p.Registered("c1", 2000))
    ]
    assert availability(broker) is Availability.STANDBY

    assert await broker.play("p1", PLAY, 0.0) == [Outgoing("player", "p1", p.Matched("s1", "c1"))]
    assert status(broker) is SessionStatus.MATCHED
    assert availability(broker) is Availability.RESERVED
    assert list(seats(broker)) == ["s1"]

    assert await broker.offer("p1", OFFER) == [
        Outgoing("container", "c1", p.SessionOffer("s1", "offer-sdp", 1280, 720, 60, "tetris"))
    ]
    assert status(broker) is SessionStatus.CONNECTING
    assert availability(broker) is Availability.RESERVED

    assert await broker.answer("c1", p.Answer("s1", "answer-sdp")) == [
        Outgoing("player", "p1", p.SessionAnswer("s1", "answer-sdp"))
    ]
    assert status(broker) is SessionStatus.CONNECTING

    assert await broker.playing("c1", p.Playing("s1"), 0.0) == [
        Outgoing("player", "p1", p.SessionState("s1", "playing"))
    ]
    assert status(broker) is SessionStatus.PLAYING
    assert availability(broker) is Availability.IN_SESSION

    assert await broker.player_end("p1", "bored", 0.0) == [
        Outgoing("player", "p1", p.Ended("s1", "bored")),
        Outgoing("container", "c1", p.End("s1", "bored")),
    ]
    assert broker.sessions == {}
    assert availability(broker) is Availability.STANDBY
    assert seats(broker) == {}


async def test_duplicate_register_is_a_conflict() -> None:
    broker = new_broker()
    await broker.register(REGISTER, now=0.0)
    with refused("conflict", "already registered"):
        await broker.register(REGISTER, now=1.0)


async def test_offer_before_play() -> None:
    broker = new_broker()
    await broker.register(REGISTER, now=0.0)
    with refused("unexpected", "send play first"):
        await broker.offer("p1", OFFER)


async def test_second_play_by_the_same_player() -> None:
    broker = await matched(new_broker())
    await broker.register(p.Register("c2", ["tetris"], ["h264"], 1920, 1080, 60), now=0.0)
    with refused("unexpected", "already has a session"):
        await broker.play("p1", PLAY, 0.0)
    assert availability(broker, "c2") is Availability.STANDBY


async def test_second_offer_is_unexpected() -> None:
    broker = await connecting(new_broker())
    with refused("unexpected", "cannot go from connecting to connecting"):
        await broker.offer("p1", OFFER)


@pytest.mark.parametrize(
    ("play", "fragment"),
    [(p.Play("doom"), "doom"), (p.Play("tetris", 3840, 2160, 60), "3840x2160")],
)
async def test_a_play_that_waiting_cannot_serve_is_refused_with_the_reason(
    play: p.Play, fragment: str
) -> None:
    broker = new_broker()
    await broker.register(REGISTER, now=0.0)
    with refused("unavailable", fragment):
        await broker.play("p1", play, 0.0)
    assert broker.sessions == {}
    assert len(broker.queue) == 0


def matched_to(out: list[Outgoing], player_id: str) -> str:
    """The container `player_id` was matched to (session ids are the broker's business)."""
    (container,) = [
        o.message.container
        for o in out
        if o.peer_id == player_id and isinstance(o.message, p.Matched)
    ]
    return container


def queued(out: list[Outgoing]) -> p.Queued:
    (item,) = out
    assert isinstance(item.message, p.Queued)
    return item.message


async def test_with_no_container_registered_the_player_waits_and_is_matched_when_one_comes() -> (
    None
):
    broker = new_broker()
    news = queued(await broker.play("p1", PLAY, 0.0))
    assert (news.position, news.filter, news.rtt_bound_ms) == (1, "standby", 80)
    assert "no container is registered" in news.reason
    out = await broker.register(REGISTER, now=1.0)
    assert matched_to(out, "p1") == "c1"
    assert len(broker.queue) == 0


async def test_players_queue_in_order_while_the_only_container_is_taken() -> None:
    broker = await matched(new_broker())
    assert queued(await broker.play("p2", PLAY, 0.0)).position == 1
    assert queued(await broker.play("p3", PLAY, 0.0)).position == 2
    with refused("unexpected", "a place in the queue"):
        await broker.play("p2", PLAY, 0.0)
    assert await broker.serve_queue(1.0) == []  # nothing changed: nobody is told again
    out = await broker.player_end("p1", "done", 2.0)
    assert matched_to(out, "p2") == "c1"
    busy = (
        "no container is on standby: all 1 registered are busy, silent or not admitted;"
        " try again shortly"
    )
    assert Outgoing("player", "p3", p.Queued(1, "standby", busy, 80)) in out
    # A waiting player who leaves gives up their place.
    assert await broker.player_gone("p3", 3.0) == [
        Outgoing("player", "p3", p.Ended("", "the player disconnected"))
    ]
    assert len(broker.queue) == 0


@pytest.mark.parametrize(
    ("container_id", "session_id", "fragment"),
    [
        ("c2", "s1", "session 's1' is not this container's"),
        ("c1", "s9", "session 's9' is not this container's"),
    ],
)
async def test_answer_from_the_wrong_container(
    container_id: str, session_id: str, fragment: str
) -> None:
    broker = await connecting(new_broker())
    await broker.register(p.Register("c2", ["tetris"], ["h264"], 1920, 1080, 60), now=0.0)
    with refused("unexpected", fragment):
        await broker.answer(container_id, p.Answer(session_id, "answer-sdp"))
    assert status(broker) is SessionStatus.CONNECTING


@pytest.mark.parametrize(
    ("method", "message"),
    [("answer", p.Answer("s1", "answer-sdp")), ("playing", p.Playing("s1"))],
)
async def test_container_must_wait_for_the_offer(method: str, message: p.Message) -> None:
    broker = await matched(new_broker())
    with refused("unexpected", "session s1 is matched, not connecting"):
        if method == "playing":
            await broker.playing("c1", message, 0.0)  # type: ignore[arg-type]
        else:
            await broker.answer("c1", message)  # type: ignore[arg-type]
    assert availability(broker) is Availability.RESERVED


async def test_container_gone_mid_session() -> None:
    broker = await connecting(new_broker())
    await broker.answer("c1", p.Answer("s1", "answer-sdp"))
    await broker.playing("c1", p.Playing("s1"), 0.0)
    assert await broker.container_gone("c1", "container crashed", 0.0) == [
        Outgoing("player", "p1", p.Ended("s1", "container crashed"))
    ]
    assert registry(broker).get("c1").lifecycle.liveness is Liveness.MISSED
    assert broker.sessions == {}
    assert await broker.player_gone("p1", 0.0) == []


async def test_container_gone_without_session_is_missed_until_it_registers_again() -> None:
    broker = new_broker()
    await broker.register(REGISTER, now=0.0)
    assert await broker.container_gone("c1", "closed", 0.0) == []
    assert registry(broker).get("c1").lifecycle.liveness is Liveness.MISSED
    assert await broker.container_gone("c1", "closed again", 0.0) == []
    assert await broker.register(REGISTER, now=1.0) == [
        Outgoing("container", "c1", p.Registered("c1", 2000))
    ]


async def test_container_end_releases_it() -> None:
    broker = await connecting(new_broker())
    assert await broker.container_end("c1", p.End("s1", "game over"), 0.0) == [
        Outgoing("player", "p1", p.Ended("s1", "game over"))
    ]
    assert availability(broker) is Availability.STANDBY


@pytest.mark.parametrize(
    ("heartbeat_at", "now", "ended"),
    [(None, 5.9, False), (None, 6.1, True), (4.0, 6.1, False), (4.0, 10.1, True)],
)
async def test_expire_after_missed_heartbeats(
    heartbeat_at: float | None, now: float, ended: bool
) -> None:
    broker = await matched(new_broker())
    if heartbeat_at is not None:
        await broker.heartbeat("c1", heartbeat_at)
    expected = [Outgoing("player", "p1", p.Ended("s1", "the container stopped sending heartbeats"))]
    assert await broker.expire(now) == (expected if ended else [])
    liveness = registry(broker).get("c1").lifecycle.liveness
    assert liveness is (Liveness.MISSED if ended else Liveness.LIVE)
    assert ("s1" in broker.sessions) is not ended


async def test_player_gone() -> None:
    broker = new_broker()
    assert await broker.player_gone("p1", 0.0) == []
    await matched(broker)
    assert await broker.player_gone("p1", 0.0) == [
        Outgoing("player", "p1", p.Ended("s1", "the player disconnected")),
        Outgoing("container", "c1", p.End("s1", "the player disconnected")),
    ]
    assert availability(broker) is Availability.STANDBY


async def test_container_is_claimable_after_a_session_ends() -> None:
    broker = await connecting(new_broker())
    await broker.player_end("p1", "done", 0.0)
    assert await broker.play("p2", PLAY, 0.0) == [Outgoing("player", "p2", p.Matched("s2", "c1"))]
    # p1 no longer has a session, so this is not "unexpected": p1 waits.
    assert queued(await broker.play("p1", PLAY, 0.0)).filter == "standby"


async def test_an_answer_is_relayed_once_and_playing_needs_one() -> None:
    broker = await connecting(new_broker())
    with refused("unexpected", "session s1 has no answer yet"):
        await broker.playing("c1", p.Playing("s1"), 0.0)
    assert await broker.answer("c1", p.Answer("s1", "answer-sdp")) == [
        Outgoing("player", "p1", p.SessionAnswer("s1", "answer-sdp"))
    ]
    with refused("unexpected", "session s1 was answered already"):
        await broker.answer("c1", p.Answer("s1", "another-sdp"))
    assert await broker.playing("c1", p.Playing("s1"), 0.0) == [
        Outgoing("player", "p1", p.SessionState("s1", "playing"))
    ]
    assert status(broker) is SessionStatus.PLAYING


async def test_heartbeat_from_an_expired_container_says_so() -> None:
    broker = await matched(new_broker())
    await broker.expire(10.0)
    with refused("expired", "missed its heartbeats; register again"):
        await broker.heartbeat("c1", 10.0)


async def test_a_container_with_capacity_for_two_serves_two_players_and_ends_both_when_gone() -> (
    None
):
    broker = new_broker()
    two = [p.StreamCapacity(1280, 720, 60, 2)]
    await broker.register(
        p.Register("c1", ["tetris"], ["h264"], 1280, 720, 60, capacity=two), now=0.0
    )
    assert await broker.play("p1", PLAY, 0.0) == [Outgoing("player", "p1", p.Matched("s1", "c1"))]
    assert await broker.play("p2", PLAY, 0.0) == [Outgoing("player", "p2", p.Matched("s2", "c1"))]
    assert queued(await broker.play("p3", PLAY, 0.0)).filter == "standby"
    for player in ("p1", "p2"):
        await broker.offer(player, OFFER)
    # Each session is the container's own: an answer for one does not touch the other.
    await broker.answer("c1", p.Answer("s2", "answer-sdp"))
    assert await broker.playing("c1", p.Playing("s2"), 0.0) == [
        Outgoing("player", "p2", p.SessionState("s2", "playing"))
    ]
    assert status(broker, "s1") is SessionStatus.CONNECTING
    assert await broker.container_gone("c1", "crashed", 0.0) == [
        Outgoing("player", "p1", p.Ended("s1", "crashed")),
        Outgoing("player", "p2", p.Ended("s2", "crashed")),
    ]
    assert broker.sessions == {}
    assert seats(broker) == {}


class AwaitingStore(MemoryStore):
    """The in-memory store with a claim that yields once, as a remote store's does."""

    async def claim(self, request, session_id, now):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)
        return await super().claim(request, session_id, now)


def awaiting_broker() -> SessionBroker:
    broker = new_broker()
    broker.store = AwaitingStore(registry(broker))
    return broker


async def test_a_waiting_player_tried_by_two_calls_at_once_gets_one_seat() -> None:
    broker = awaiting_broker()
    two = [p.StreamCapacity(1280, 720, 60, 2)]
    await broker.play("p1", PLAY, 0.0)  # queued: nothing registered yet
    registry(broker).register(
        ContainerSpec.from_register(
            p.Register("c1", ["tetris"], ["h264"], 1280, 720, 60, capacity=two)
        ),
        0.0,
    )
    first, second = await asyncio.gather(broker.serve_queue(1.0), broker.serve_queue(1.0))
    assert matched_to(first + second, "p1") == "c1"
    assert list(seats(broker)) == [broker._by_player["p1"]]


async def test_a_waiting_player_who_leaves_while_their_claim_is_in_flight_frees_the_seat() -> None:
    broker = awaiting_broker()
    await broker.play("p1", PLAY, 0.0)
    registry(broker).register(ContainerSpec.from_register(REGISTER), 0.0)
    serving = asyncio.create_task(broker.serve_queue(1.0))
    await asyncio.sleep(0)  # the claim is in flight
    await broker.player_gone("p1", 1.0)
    assert await serving == []
    assert seats(broker) == {}
    assert broker.sessions == {}


async def test_a_session_that_never_starts_frees_its_seat() -> None:
    broker = await connecting(new_broker())
    assert await broker.stalled(START_TIMEOUT - 0.1) == []
    reason = f"the session did not start within {START_TIMEOUT:g} s"
    assert await broker.stalled(START_TIMEOUT) == [
        Outgoing("player", "p1", p.Ended("s1", reason)),
        Outgoing("container", "c1", p.End("s1", reason)),
    ]
    assert seats(broker) == {}
    assert availability(broker) is Availability.STANDBY
    # A session that started is left alone however long it runs.
    await broker.container_gone("c1", "restarting", 99.0)
    await broker.register(REGISTER, 100.0)
    await broker.play("p2", PLAY, 100.0)
    await broker.offer("p2", OFFER)
    await broker.answer("c1", p.Answer("s2", "answer-sdp"))
    await broker.playing("c1", p.Playing("s2"), 101.0)
    assert await broker.stalled(1000.0) == []


async def test_a_build_is_booked_at_the_shape_it_streams_not_the_shape_asked_for() -> None:
    """One stream shape: a player asking 720p60 of a 1080p60 build gets (and pays a seat of)
    1080p60, which is what the container will stream; the reference game keeps the ask."""
    counter = itertools.count(1)
    registry = ContainerRegistry(
        LivenessConfig(2.0, 3), np.random.default_rng(0), admit_on_register=True
    )
    needs = {"tetris": BuildNeeds(Requirements(cpu_cores=0), (1920, 1080, 60))}
    broker = SessionBroker(
        MemoryStore(registry),
        PlayQueue(Relaxation()),
        lambda: f"s{next(counter)}",
        build_needs=needs.get,
    )
    capacity = [p.StreamCapacity(1280, 720, 60, 4), p.StreamCapacity(1920, 1080, 60, 2)]
    await broker.register(
        p.Register("c1", ["tetris", "reference"], ["h264"], 1920, 1080, 60, capacity=capacity),
        now=0.0,
    )

    await broker.play("p1", PLAY, 0.0)
    assert await broker.offer("p1", OFFER) == [
        Outgoing("container", "c1", p.SessionOffer("s1", "offer-sdp", 1920, 1080, 60, "tetris"))
    ]
    assert registry.get("c1").lifecycle.load == 0.5  # one of two 1080p60 seats, not 1/4 720p60

    await broker.play("p2", p.Play("reference", 1280, 720, 60), 0.0)
    assert await broker.offer("p2", OFFER) == [
        Outgoing("container", "c1", p.SessionOffer("s2", "offer-sdp", 1280, 720, 60, "reference"))
    ]
    assert registry.get("c1").lifecycle.load == 0.75


async def test_a_leaving_container_is_locked_then_ends_its_session_with_its_reason() -> None:
    broker = await connecting(new_broker())
    assert await broker.maintenance("c1", 0.0) == []
    assert await broker.maintenance("c1", 0.0) == []  # asking twice is no fault
    assert availability(broker) is Availability.MAINTENANCE_LOCK
    leaving = p.End("s1", "the container is shutting down")
    assert await broker.container_end("c1", leaving, 0.0) == [
        Outgoing("player", "p1", p.Ended("s1", "the container is shutting down"))
    ]
    assert queued(await broker.play("p2", PLAY, 0.0)).filter  # nobody new is seated on it


async def test_an_indexer_shutting_down_ends_every_session_telling_player_and_container() -> None:
    broker = await connecting(new_broker())
    assert await broker.shutdown("the indexer is shutting down", 0.0) == [
        Outgoing("player", "p1", p.Ended("s1", "the indexer is shutting down")),
        Outgoing("container", "c1", p.End("s1", "the indexer is shutting down")),
    ]
    assert broker.sessions == {}
    assert availability(broker) is Availability.STANDBY


REFUSED = p.BuildEvent("hash_refused", "tetris", "1.0", "ab" * 32, detail="'game.py' was changed")
CRASHED = p.BuildEvent("crashed", "tetris", "1.0", "ab" * 32, "s1", detail="exited with code 1")


async def test_a_hash_refusal_sends_the_container_to_reinspection_and_keeps_the_report() -> None:
    broker = await matched(new_broker())
    assert await broker.build_event("c1", REFUSED, 1.0, wall=1700.0) == []
    view = broker.store.view("c1", 1.0)
    assert view is not None
    assert (view.admission, view.state) == (Admission.NEEDS_REINSPECTION, "needs re-inspection")
    assert [r.kind for r in view.build_events.recent] == ["hash_refused"]
    assert view.build_events.recent[0].at == 1700.0
    assert list(seats(broker)) == ["s1"]  # the session it serves goes on
    with pytest.raises(NoContainerError):  # but nobody new is seated on it
        await broker.store.claim(request_of(PLAY), "s9", 1.0)


async def test_a_planted_folder_does_too_and_a_second_report_changes_no_more() -> None:
    broker = new_broker()
    await broker.register(REGISTER, now=0.0)
    planted = p.BuildEvent("planted", sha256="cd" * 32, detail="no blob proves it")
    assert await broker.build_event("c1", planted, 0.5, wall=1.0) == []
    assert await broker.build_event("c1", REFUSED, 0.6, wall=2.0) == []  # no move from here
    view = broker.store.view("c1", 1.0)
    assert view is not None and view.admission is Admission.NEEDS_REINSPECTION
    assert dict(view.build_events.counts) == {"planted": 1, "hash_refused": 1}


async def test_a_crash_is_kept_and_counted_but_moves_nothing() -> None:
    broker = await matched(new_broker())
    killed = p.BuildEvent("limit_killed", "tetris", "1.0", session="s1", limit="memory")
    assert await broker.build_event("c1", CRASHED, 1.0, wall=10.0) == []
    assert await broker.build_event("c1", killed, 1.0, wall=11.0) == []
    view = broker.store.view("c1", 1.0)
    assert view is not None
    assert (view.admission, view.state) == (Admission.READY, "connected and healthy")
    assert [(r.kind, r.limit) for r in view.build_events.recent] == [
        ("crashed", ""),
        ("limit_killed", "memory"),
    ]
    assert dict(view.build_events.counts) == {"crashed": 1, "limit_killed": 1}


async def test_a_flood_of_reports_keeps_only_the_latest_and_counts_them_all() -> None:
    broker = new_broker()
    await broker.register(REGISTER, now=0.0)
    for i in range(RECENT_BUILD_EVENTS + 5):
        await broker.build_event("c1", replace(CRASHED, session=f"s{i}"), 0.0, wall=float(i))
    view = broker.store.view("c1", 0.0)
    assert view is not None
    assert len(view.build_events.recent) == RECENT_BUILD_EVENTS
    assert view.build_events.recent[-1].session == f"s{RECENT_BUILD_EVENTS + 4}"
    assert view.build_events.counts["crashed"] == RECENT_BUILD_EVENTS + 5


async def test_a_report_from_an_unknown_container_is_refused() -> None:
    broker = new_broker()
    with pytest.raises(IndexerError, match="'c9' is not registered"):
        await broker.build_event("c9", CRASHED, 0.0, wall=0.0)


async def test_a_container_that_left_under_maintenance_is_offered_again_once_it_registers() -> None:
    broker = await connecting(new_broker())
    await broker.maintenance("c1", 0.0)
    await broker.container_gone("c1", "the container disconnected", 0.0)
    assert availability(broker) is Availability.MAINTENANCE_LOCK
    await broker.register(REGISTER, now=1.0)  # it came back
    assert availability(broker) is Availability.STANDBY
    assert await broker.play("p2", PLAY, 1.0) == [Outgoing("player", "p2", p.Matched("s2", "c1"))]
