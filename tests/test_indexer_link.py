"""The container's rules for its indexer connection, message in, actions out, no socket."""

from __future__ import annotations

import pytest

from contracts import protocol as p
from streamer.indexer_link import (
    RECONNECT_DELAYS,
    AnswerChallenge,
    Disconnect,
    EndSession,
    IndexerLink,
    Note,
    RefuseSession,
    Register,
    RevealRows,
    StartReporting,
    StartSession,
    next_server,
    reconnect_delay,
)

ARCADE_SHAPE = (1280, 720, 60)


def link() -> IndexerLink:
    return IndexerLink(("reference",), {"arcade": ARCADE_SHAPE})


def offer(game: str, width: int = 1280, height: int = 720, fps: int = 60) -> p.SessionOffer:
    return p.SessionOffer("s1", "sdp", width, height, fps, game)


def test_a_challenge_is_answered_with_a_registration_signed_over_it() -> None:
    assert link().receive(p.Challenge("c" * 43)) == [Register("c" * 43)]


def test_reporting_starts_once_at_the_interval_the_indexer_asks() -> None:
    container = link()
    assert not container.registered
    assert container.receive(p.Registered("c1", 2000)) == [StartReporting(2.0)]
    assert container.registered
    assert container.receive(p.Registered("c1", 500)) == []  # already reporting


def test_an_offer_for_the_reference_game_streams_at_any_booked_shape() -> None:
    wide = offer("reference", 1920, 1080, 120)
    assert link().receive(wide) == [StartSession(wide)]


def test_an_offer_for_a_build_streams_only_at_its_manifests_shape() -> None:
    booked = offer("arcade")
    assert link().receive(booked) == [StartSession(booked)]
    assert link().receive(offer("arcade", 1920, 1080, 60)) == [
        RefuseSession("s1", "arcade runs at 1280x720@60, not the 1920x1080@60 booked")
    ]


def test_an_offer_for_a_game_not_hosted_here_is_refused_with_the_reason() -> None:
    assert link().receive(offer("tetris")) == [
        RefuseSession("s1", "this container does not host 'tetris'")
    ]


def test_ends_challenges_and_reveals_become_their_actions() -> None:
    challenge = p.InspectionChallenge("i1", "00" * 32, 256, 2, 4, "2-core CPU", 3000)
    reveal = p.InspectionReveal("i1", [1, 2])
    container = link()
    assert container.receive(p.End("s1", "bored")) == [EndSession("s1", "bored")]
    assert container.receive(challenge) == [AnswerChallenge(challenge)]
    assert container.receive(reveal) == [RevealRows(reveal)]


def test_a_refused_registration_disconnects_and_other_errors_are_noted() -> None:
    refused = p.Error("conflict", "container id 'c1' belongs to another key", "register")
    assert link().receive(refused) == [
        Disconnect("registration refused: container id 'c1' belongs to another key")
    ]
    assert link().receive(p.Error("rate_limited", "slow down", "heartbeat")) == [
        Note("server says rate_limited: slow down")
    ]


@pytest.mark.parametrize(("attempt", "delay"), [(0, 0.2), (1, 0.5), (4, 5.0), (40, 5.0)])
def test_reconnects_back_off_to_a_ceiling(attempt: int, delay: float) -> None:
    assert reconnect_delay(attempt) == delay
    assert max(RECONNECT_DELAYS) == 5.0


def test_the_next_indexer_is_never_the_one_that_just_failed_while_another_is_left() -> None:
    servers = ("ws://a", "ws://b", "ws://c")
    seen = {next_server(servers, "ws://a") for _ in range(200)}
    assert seen == {"ws://b", "ws://c"}
    assert next_server(("ws://a",), "ws://a") == "ws://a"
    assert next_server(servers, "ws://b", choose=lambda options: options[-1]) == "ws://c"
