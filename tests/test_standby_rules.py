"""The warm pool's rules (streamer/standby_rules.py) on a fake clock: start, hand over,
replace with backoff, and never beside a session."""

from __future__ import annotations

import pytest

from streamer.standby_rules import (
    BACKOFF_MAX_S,
    SETTLE_S,
    STABLE_S,
    SlotState,
    StandbyRuleError,
    StandbyRules,
    backoff_s,
)


def waiting(rules: StandbyRules, name: str, now: float) -> None:
    assert name in rules.due(now)
    rules.started(name, now)


def test_every_build_is_started_once_at_first_and_then_waits() -> None:
    rules = StandbyRules(["arcade", "racer"])
    assert rules.due(0.0) == ["arcade", "racer"]
    assert rules.due(0.0) == []  # starting: not started twice
    rules.started("arcade", 0.5)
    assert rules.slots["arcade"].state is SlotState.WAITING
    assert rules.slots["racer"].state is SlotState.STARTING
    assert rules.next_due(1.0) == 0.5 + SETTLE_S  # when the waiting game is to be paused
    assert rules.to_pause(2.4) == [] and rules.to_pause(2.5) == ["arcade"]
    assert rules.to_pause(9.0) == []  # paused once
    assert rules.next_due(9.0) is None  # nothing empty or running: only an event brings one


def test_a_waiting_game_is_paused_once_it_settled_and_not_while_a_session_defers_it() -> None:
    rules = StandbyRules(["arcade"], settle_s=2.0)
    waiting(rules, "arcade", 10.0)
    rules.session_started("s1")  # a reference-game session: the waiting run stays, and settles
    assert rules.next_due(10.0) == 12.0
    assert rules.to_pause(12.0) == ["arcade"]
    assert rules.take("arcade")
    assert rules.slots["arcade"].state is SlotState.EMPTY
    rules.session_ended("s1")
    waiting(rules, "arcade", 20.0)
    assert rules.slots["arcade"].paused is False  # a fresh game runs until it settles


def test_the_waiting_instance_is_taken_once_and_the_next_starts_after_the_session() -> None:
    rules = StandbyRules(["arcade"])
    waiting(rules, "arcade", 0.0)
    rules.session_started("s1")
    assert rules.take("arcade") is True
    assert rules.take("arcade") is False  # the second player starts cold
    assert rules.due(5.0) == []  # the session plays: no second game beside it
    assert rules.next_due(5.0) is None
    rules.session_ended("s1")
    assert rules.next_due(6.0) == 6.0
    assert rules.due(6.0) == ["arcade"]


def test_a_starting_instance_is_not_taken_and_an_unknown_build_is_never_waiting() -> None:
    rules = StandbyRules(["arcade"])
    rules.due(0.0)
    assert rules.take("arcade") is False
    assert rules.take("reference") is False


def test_no_start_begins_while_any_session_plays_and_ending_twice_is_harmless() -> None:
    rules = StandbyRules(["arcade"])
    rules.session_started("s1")
    rules.session_started("s2")
    assert rules.due(0.0) == []
    rules.session_ended("s1")
    assert rules.due(1.0) == []
    rules.session_ended("s2")
    rules.session_ended("s2")  # refused at its start, then its end seen again
    assert rules.due(2.0) == ["arcade"]


def test_backoff_doubles_from_one_second_to_a_minute() -> None:
    assert [backoff_s(n) for n in range(9)] == [0, 1, 2, 4, 8, 16, 32, BACKOFF_MAX_S, 60]


def test_a_game_that_dies_at_once_backs_off_and_one_that_waited_long_is_replaced_in_a_second() -> (
    None
):
    rules = StandbyRules(["arcade"])
    now = 0.0
    retries = []
    for _ in range(4):  # crashes 0.1 s after each start
        waiting(rules, "arcade", now)
        retry = rules.exited("arcade", now + 0.1)
        retries.append(round(retry - (now + 0.1), 3))
        assert rules.due(retry - 0.01) == []  # not before its time
        now = retry
    assert retries == [1.0, 2.0, 4.0, 8.0]
    waiting(rules, "arcade", now)
    later = now + STABLE_S + 0.5
    assert rules.exited("arcade", later) == later + 1.0  # it had been stable: count from 1


def test_failed_starts_back_off_and_a_player_served_clears_the_count() -> None:
    rules = StandbyRules(["arcade"])
    rules.due(0.0)
    assert rules.start_failed("arcade", 0.0) == 1.0
    assert rules.next_due(0.5) == 1.0
    rules.due(1.0)
    assert rules.start_failed("arcade", 1.0) == 3.0
    waiting(rules, "arcade", 3.0)
    assert rules.take("arcade")
    waiting(rules, "arcade", 4.0)
    assert rules.exited("arcade", 4.1) == 5.1  # failures start again from the player served


def test_a_discarded_instance_is_replaced_at_once_and_a_cancelled_start_costs_nothing() -> None:
    rules = StandbyRules(["arcade"])
    waiting(rules, "arcade", 0.0)
    rules.discarded("arcade")
    assert rules.due(0.0) == ["arcade"]
    rules.cancelled("arcade")
    assert rules.slots["arcade"].failures == 0 and rules.due(0.0) == ["arcade"]


def test_an_event_in_the_wrong_state_raises_with_the_state() -> None:
    rules = StandbyRules(["arcade"])
    with pytest.raises(StandbyRuleError, match="the slot of 'arcade' is empty, not starting"):
        rules.started("arcade", 0.0)
    with pytest.raises(StandbyRuleError, match="exited: the slot of 'arcade' is empty, not wait"):
        rules.exited("arcade", 0.0)
    with pytest.raises(StandbyRuleError, match="no standby slot for a build named 'racer'"):
        rules.discarded("racer")
