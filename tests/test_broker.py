"""SessionBroker as a pure state machine: the exact messages out for each event in."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from indexer.registry import Availability, ContainerRegistry
from signaling import protocol as p
from signaling.broker import Outgoing, SessionBroker
from signaling.session import SessionStatus

REGISTER = p.Register("c1", ["tetris"], ["h264"], 1920, 1080, 60)
PLAY = p.Play("tetris", 1280, 720, 60)
OFFER = p.Offer("offer-sdp")


def new_broker() -> SessionBroker:
    counter = itertools.count(1)
    registry = ContainerRegistry(2.0, 3, random.Random(0))
    return SessionBroker(registry, lambda: f"s{next(counter)}")


def availability(broker: SessionBroker, container_id: str = "c1") -> Availability:
    return broker.registry.get(container_id).availability


def status(broker: SessionBroker, session_id: str = "s1") -> SessionStatus:
    return broker.sessions[session_id].status


def matched(broker: SessionBroker, player_id: str = "p1") -> SessionBroker:
    """A broker with c1 registered at t=0 and `player_id` matched to it."""
    broker.register(REGISTER, now=0.0)
    broker.play(player_id, PLAY)
    return broker


def connecting(broker: SessionBroker) -> SessionBroker:
    matched(broker).offer("p1", OFFER)
    return broker


@contextmanager
def refused(code: str, fragment: str) -> Iterator[None]:
    with pytest.raises(p.ProtocolError, match=re.escape(fragment)) as caught:
        yield
    assert caught.value.code == code


def test_happy_path() -> None:
    broker = new_broker()
    assert broker.register(REGISTER, now=0.0) == [
        Outgoing("container", "c1", p.Registered("c1", 2000))
    ]
    assert availability(broker) is Availability.STANDBY

    assert broker.play("p1", PLAY) == [Outgoing("player", "p1", p.Matched("s1", "c1"))]
    assert status(broker) is SessionStatus.MATCHED
    assert availability(broker) is Availability.RESERVED
    assert list(broker.registry.get("c1").seats) == ["s1"]

    assert broker.offer("p1", OFFER) == [
        Outgoing("container", "c1", p.SessionOffer("s1", "offer-sdp", 1280, 720, 60))
    ]
    assert status(broker) is SessionStatus.CONNECTING
    assert availability(broker) is Availability.RESERVED

    assert broker.answer("c1", p.Answer("s1", "answer-sdp")) == [
        Outgoing("player", "p1", p.SessionAnswer("s1", "answer-sdp"))
    ]
    assert status(broker) is SessionStatus.CONNECTING

    assert broker.playing("c1", p.Playing("s1")) == [
        Outgoing("player", "p1", p.SessionState("s1", "playing"))
    ]
    assert status(broker) is SessionStatus.PLAYING
    assert availability(broker) is Availability.IN_SESSION

    assert broker.player_end("p1", "bored") == [
        Outgoing("player", "p1", p.Ended("s1", "bored")),
        Outgoing("container", "c1", p.End("s1", "bored")),
    ]
    assert broker.sessions == {}
    assert availability(broker) is Availability.STANDBY
    assert broker.registry.get("c1").seats == {}


def test_duplicate_register_is_a_conflict() -> None:
    broker = new_broker()
    broker.register(REGISTER, now=0.0)
    with refused("conflict", "already registered"):
        broker.register(REGISTER, now=1.0)


def test_offer_before_play() -> None:
    broker = new_broker()
    broker.register(REGISTER, now=0.0)
    with refused("unexpected", "send play first"):
        broker.offer("p1", OFFER)


def test_second_play_by_the_same_player() -> None:
    broker = matched(new_broker())
    broker.register(p.Register("c2", ["tetris"], ["h264"], 1920, 1080, 60), now=0.0)
    with refused("unexpected", "already has a session"):
        broker.play("p1", PLAY)
    assert availability(broker, "c2") is Availability.STANDBY


def test_second_offer_is_unexpected() -> None:
    broker = connecting(new_broker())
    with refused("unexpected", "cannot go from connecting to connecting"):
        broker.offer("p1", OFFER)


@pytest.mark.parametrize(
    ("registered", "play", "fragment"),
    [
        (False, PLAY, "no container is registered"),
        (True, p.Play("doom"), "no container is hosting 'doom'"),
        (True, p.Play("tetris", 3840, 2160, 60), "no container is able to stream 3840x2160@60"),
    ],
)
def test_play_with_no_container(registered: bool, play: p.Play, fragment: str) -> None:
    broker = new_broker()
    if registered:
        broker.register(REGISTER, now=0.0)
    with refused("unavailable", fragment):
        broker.play("p1", play)
    assert broker.sessions == {}


def test_play_when_the_only_container_is_taken() -> None:
    broker = matched(new_broker())
    with refused("unavailable", "no container is free for another"):
        broker.play("p2", PLAY)


@pytest.mark.parametrize(
    ("container_id", "session_id", "fragment"),
    [
        ("c2", "s1", "session 's1' is not this container's"),
        ("c1", "s9", "session 's9' is not this container's"),
    ],
)
def test_answer_from_the_wrong_container(container_id: str, session_id: str, fragment: str) -> None:
    broker = connecting(new_broker())
    broker.register(p.Register("c2", ["tetris"], ["h264"], 1920, 1080, 60), now=0.0)
    with refused("unexpected", fragment):
        broker.answer(container_id, p.Answer(session_id, "answer-sdp"))
    assert status(broker) is SessionStatus.CONNECTING


@pytest.mark.parametrize(
    ("method", "message"),
    [("answer", p.Answer("s1", "answer-sdp")), ("playing", p.Playing("s1"))],
)
def test_container_must_wait_for_the_offer(method: str, message: p.Message) -> None:
    broker = matched(new_broker())
    with refused("unexpected", "session s1 is matched, not connecting"):
        getattr(broker, method)("c1", message)
    assert availability(broker) is Availability.RESERVED


def test_container_gone_mid_session() -> None:
    broker = connecting(new_broker())
    broker.answer("c1", p.Answer("s1", "answer-sdp"))
    broker.playing("c1", p.Playing("s1"))
    assert broker.container_gone("c1", "container crashed") == [
        Outgoing("player", "p1", p.Ended("s1", "container crashed"))
    ]
    assert "c1" not in broker.registry
    assert broker.sessions == {}
    assert broker.player_gone("p1") == []


def test_container_gone_without_session_just_unregisters() -> None:
    broker = new_broker()
    broker.register(REGISTER, now=0.0)
    assert broker.container_gone("c1", "closed") == []
    assert "c1" not in broker.registry
    assert broker.container_gone("c1", "closed again") == []


def test_container_end_releases_it() -> None:
    broker = connecting(new_broker())
    assert broker.container_end("c1", p.End("s1", "game over")) == [
        Outgoing("player", "p1", p.Ended("s1", "game over"))
    ]
    assert availability(broker) is Availability.STANDBY


@pytest.mark.parametrize(
    ("heartbeat_at", "now", "ended"),
    [(None, 5.9, False), (None, 6.1, True), (4.0, 6.1, False), (4.0, 10.1, True)],
)
def test_expire_after_missed_heartbeats(
    heartbeat_at: float | None, now: float, ended: bool
) -> None:
    broker = matched(new_broker())
    if heartbeat_at is not None:
        broker.heartbeat("c1", heartbeat_at)
    expected = [Outgoing("player", "p1", p.Ended("s1", "the container stopped sending heartbeats"))]
    assert broker.expire(now) == (expected if ended else [])
    assert ("c1" in broker.registry) is not ended
    assert ("s1" in broker.sessions) is not ended


def test_player_gone() -> None:
    broker = new_broker()
    assert broker.player_gone("p1") == []
    matched(broker)
    assert broker.player_gone("p1") == [
        Outgoing("player", "p1", p.Ended("s1", "the player disconnected")),
        Outgoing("container", "c1", p.End("s1", "the player disconnected")),
    ]
    assert availability(broker) is Availability.STANDBY


def test_container_is_claimable_after_a_session_ends() -> None:
    broker = connecting(new_broker())
    broker.player_end("p1", "done")
    assert broker.play("p2", PLAY) == [Outgoing("player", "p2", p.Matched("s2", "c1"))]
    with refused("unavailable", "no container is free for another"):
        broker.play("p1", PLAY)  # p1 no longer has a session, so this is not "unexpected"


def test_an_answer_is_relayed_once_and_playing_needs_one() -> None:
    broker = connecting(new_broker())
    with refused("unexpected", "session s1 has no answer yet"):
        broker.playing("c1", p.Playing("s1"))
    assert broker.answer("c1", p.Answer("s1", "answer-sdp"))
    with refused("unexpected", "session s1 was answered already"):
        broker.answer("c1", p.Answer("s1", "another-sdp"))
    assert broker.playing("c1", p.Playing("s1"))
    assert status(broker) is SessionStatus.PLAYING


def test_heartbeat_from_an_expired_container_says_so() -> None:
    broker = matched(new_broker())
    broker.expire(10.0)
    with refused("expired", "missed its heartbeats; register again"):
        broker.heartbeat("c1", 10.0)


def test_a_container_with_capacity_for_two_serves_two_players_and_ends_both_when_gone() -> None:
    broker = new_broker()
    two = [p.StreamCapacity(1280, 720, 60, 2)]
    broker.register(p.Register("c1", ["tetris"], ["h264"], 1280, 720, 60, capacity=two), now=0.0)
    assert broker.play("p1", PLAY) == [Outgoing("player", "p1", p.Matched("s1", "c1"))]
    assert broker.play("p2", PLAY) == [Outgoing("player", "p2", p.Matched("s2", "c1"))]
    with refused("unavailable", "no container is free for another 1280x720@60 session"):
        broker.play("p3", PLAY)
    for player in ("p1", "p2"):
        broker.offer(player, OFFER)
    # Each session is the container's own: an answer for one does not touch the other.
    broker.answer("c1", p.Answer("s2", "answer-sdp"))
    assert broker.playing("c1", p.Playing("s2")) == [
        Outgoing("player", "p2", p.SessionState("s2", "playing"))
    ]
    assert status(broker, "s1") is SessionStatus.CONNECTING
    assert broker.container_gone("c1", "crashed") == [
        Outgoing("player", "p1", p.Ended("s1", "crashed")),
        Outgoing("player", "p2", p.Ended("s2", "crashed")),
    ]
    assert broker.sessions == {}
