"""The indexer's verification coordinator: checks due, committees, decisions, judgements."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from contracts.verdict import Check, Finding, Verdict
from indexer.lifecycle import Admission, Event
from judge.consensus import ConsensusError, Decision, Outcome
from judge.coordinator import Coordinator, Task, VerificationConfig
from judge.rotation import Roster, RotationConfig, epoch_seed, next_seed

GENESIS = b"test-network"
CONFIG = VerificationConfig(
    rotation=RotationConfig(duty_size=3, committee_size=3, epoch_seconds=60.0),
    round_seconds=30.0,
    spot_interval=100.0,
)


def coordinator(verifiers: int = 3) -> Coordinator:
    coord = Coordinator(CONFIG, GENESIS, genesis_at=1000.0, rng=np.random.default_rng(0))
    for i in range(verifiers):
        coord.enlist(f"v{i}", 10)
    return coord


def verdict(verifier: str, passed: bool, check: Check = Check.REGISTRATION) -> Verdict:
    finding = Finding(
        "gpu_model", passed, "H100", "H100" if passed else "none", "" if passed else "no GPU"
    )
    return Verdict("c1", verifier, check, 1001.0, (finding,))


def test_a_container_awaiting_inspection_gets_one_registration_check_from_a_committee() -> None:
    coord = coordinator()
    (task,) = coord.due(
        [("c1", Admission.AWAITING_INSPECTION), ("c2", Admission.SUSPENDED)], 1000.0
    )
    assert task.check is Check.REGISTRATION and task.container_id == "c1"
    assert sorted(task.committee) == ["v0", "v1", "v2"]
    assert task.deadline == 1030.0
    assert coord.due([("c1", Admission.AWAITING_INSPECTION)], 1000.5) == []  # one open check


def test_no_checks_until_a_committee_can_be_formed() -> None:
    coord = coordinator(verifiers=2)
    assert coord.due([("c1", Admission.AWAITING_INSPECTION)], 1000.0) == []
    coord.enlist("v2", 10)  # drawn from the next epoch on? no: epoch 0 was never drawn
    assert len(coord.due([("c1", Admission.AWAITING_INSPECTION)], 1000.0)) == 1


def test_a_lying_verifier_is_outvoted_and_recorded_then_the_bot_check_follows() -> None:
    coord = coordinator()
    (task,) = coord.due([("c1", Admission.AWAITING_INSPECTION)], 1000.0)
    liar, *honest = task.committee
    assert coord.report(task.check_id, verdict(honest[0], True), 1001.0) is None
    assert coord.report(task.check_id, verdict(liar, False), 1001.0) is None
    decision = coord.report(task.check_id, verdict(honest[1], True), 1002.0)
    assert decision is not None and decision.outcome is Outcome.PASSED
    assert [v.verifier_id for v in decision.dissent] == [liar]
    judgement = coord.judge(decision, Admission.AWAITING_INSPECTION)
    assert judgement.event is Event.INSPECTION_PASSED
    assert coord.ledger.of(liar).dissented == 1 and coord.ledger.of(honest[0]).agreed == 1
    with pytest.raises(ConsensusError, match="is not open"):
        coord.report(task.check_id, verdict(liar, True), 1003.0)
    # Admitted: its first bot session is due at once, with a ticket that seats the bot there.
    (bot,) = coord.due([("c1", Admission.READY)], 1002.0)
    assert bot.check is Check.BOT and set(bot.tickets) == set(bot.committee)
    first, second = list(bot.tickets.values())[:2]
    assert coord.redeemable(first) == bot
    assert coord.redeemable(first) == bot  # a refused claim leaves it usable
    coord.redeem(first)
    assert coord.redeemable(first) is None  # each member's ticket seats once
    assert coord.redeemable(second) == bot
    assert coord.redeemable("forged") is None


def test_a_round_past_its_deadline_is_decided_by_those_who_answered() -> None:
    coord = coordinator()
    (task,) = coord.due([("c1", Admission.AWAITING_INSPECTION)], 1000.0)
    coord.report(task.check_id, verdict(task.committee[0], False), 1001.0)
    coord.report(task.check_id, verdict(task.committee[1], False), 1001.0)
    assert coord.overdue(1029.0) == []
    (decision,) = coord.overdue(1030.0)
    assert decision.outcome is Outcome.FAILED and decision.absent == (task.committee[2],)
    assert coord.judge(decision, Admission.AWAITING_INSPECTION).event is Event.INSPECTION_FAILED


def test_draws_follow_every_epoch_so_anyone_can_recompute_them() -> None:
    coord = coordinator(verifiers=5)
    coord.enlist("v0", 50)
    later = coord.duty(1000.0 + 3 * 60.0 + 1)  # epoch 3, nobody asked for 0-2
    assert later is not None and later.epoch == 3
    replay = Roster(CONFIG.rotation)
    for i in range(5):
        replay.register(f"v{i}", 50 if i == 0 else 10)
    seed = epoch_seed(GENESIS, 0)
    duty = replay.draw(seed)
    for epoch in range(1, 4):
        seed = next_seed(seed, epoch)
        duty = replay.draw(seed)
    assert duty == later


def test_a_forgotten_container_has_no_open_check() -> None:
    coord = coordinator()
    (task,) = coord.due([("c1", Admission.AWAITING_INSPECTION)], 1000.0)
    coord.forget("c1")
    with pytest.raises(ConsensusError):
        coord.report(task.check_id, verdict(task.committee[0], True), 1001.0)
    assert len(coord.due([("c1", Admission.AWAITING_INSPECTION)], 1001.0)) == 1


# Live samples ---------------------------------------------------------------------------------

LIVE_CONFIG = dataclasses.replace(CONFIG, bot_interval=1e6, live_interval=10.0)
READY = Admission.READY


def decide(coord: Coordinator, task: Task, at: float, passed: bool = True) -> Decision:
    """Every member's verdict on `task`, and the decision judged."""
    decision = None
    for member in task.committee:
        decision = coord.report(task.check_id, verdict(member, passed, task.check), at)
    assert decision is not None
    coord.judge(decision, READY)
    return decision


def watched(config: VerificationConfig = LIVE_CONFIG) -> tuple[Coordinator, np.random.Generator]:
    """A coordinator whose ready c1 had its first bot session at 1001 (the next one far off,
    by default), and a replica of the coordinator's generator past the gap it drew then."""
    coord = Coordinator(config, GENESIS, genesis_at=1000.0, rng=np.random.default_rng(0))
    for i in range(3):
        coord.enlist(f"v{i}", 10)
    (bot,) = coord.due([("c1", READY)], 1000.0)
    decide(coord, bot, 1001.0)
    replica = np.random.default_rng(0)
    replica.exponential(config.spot_interval)  # its spot schedule, started when first seen ready
    replica.exponential(config.bot_interval)  # the gap to its next bot session
    return coord, replica


def test_a_session_is_sampled_at_a_random_time_after_it_can_be_and_again_after() -> None:
    coord, replica = watched()
    sessions = {"c1": ["s2", "s1"]}
    assert coord.due([("c1", READY)], 1002.0, sessions) == []  # its schedule starts now
    due_at = 1002.0 + replica.exponential(LIVE_CONFIG.live_interval)
    assert coord.due([("c1", READY)], due_at - 0.001, sessions) == []
    (task,) = coord.due([("c1", READY)], due_at, sessions)
    assert task.check is Check.LIVE and task.container_id == "c1"
    assert task.session_id == ["s1", "s2"][replica.integers(2)]
    assert task.tickets == {}  # a live check seats no bot: it has no ticket to seat one
    decide(coord, task, due_at + 1)
    again = due_at + 1 + replica.exponential(LIVE_CONFIG.live_interval)
    assert coord.due([("c1", READY)], again - 0.001, sessions) == []
    assert [t.check for t in coord.due([("c1", READY)], again, sessions)] == [Check.LIVE]


def test_a_container_without_sessions_to_sample_loses_its_schedule() -> None:
    coord, replica = watched()
    assert coord.due([("c1", READY)], 1002.0, {"c1": ["s1"]}) == []
    due_at = 1002.0 + replica.exponential(LIVE_CONFIG.live_interval)
    assert coord.due([("c1", READY)], 1003.0, {}) == []  # the session ended
    # A new session starts a new gap: it is not sampled at once when the old one was due.
    assert coord.due([("c1", READY)], due_at, {"c1": ["s3"]}) == []
    (task,) = coord.due(
        [("c1", READY)], due_at + replica.exponential(LIVE_CONFIG.live_interval), {"c1": ["s3"]}
    )
    assert (task.check, task.session_id) == (Check.LIVE, "s3")


def test_only_admitted_containers_are_sampled_and_a_forgotten_one_is_not() -> None:
    coord, _ = watched()
    live = {"c1": ["s1"], "c2": ["s2"]}
    later = 1300.0  # past the gap this generator draws (mean 10 s)
    (registration,) = coord.due([("c2", Admission.AWAITING_INSPECTION)], 1002.0, live)
    assert registration.check is Check.REGISTRATION and registration.session_id == ""
    assert coord.due([("c1", READY)], 1002.0, live) == []
    coord.forget("c1")
    (bot,) = coord.due([("c1", READY)], later, live)  # forgotten: a fresh start, bot first
    assert bot.check is Check.BOT


def test_when_a_bot_session_and_a_live_sample_are_both_due_the_earlier_goes_first() -> None:
    config = dataclasses.replace(LIVE_CONFIG, bot_interval=5.0)
    coord, replica = watched(config)
    draws = np.random.default_rng(0)
    draws.exponential(config.spot_interval)
    bot_at = 1001.0 + draws.exponential(config.bot_interval)
    sessions = {"c1": ["s1"]}
    assert coord.due([("c1", READY)], 1002.0, sessions) == []
    live_at = 1002.0 + replica.exponential(config.live_interval)
    earlier, later = (Check.LIVE, Check.BOT) if live_at <= bot_at else (Check.BOT, Check.LIVE)
    both = max(bot_at, live_at) + 1
    (first,) = coord.due([("c1", READY)], both, sessions)
    assert first.check is earlier
    decide(coord, first, both)
    (second,) = coord.due([("c1", READY)], both, sessions)
    assert second.check is later
    assert second.session_id == ("s1" if later is Check.LIVE else "")


def test_a_full_container_waits_for_its_bot_session() -> None:
    coord = coordinator()
    assert coord.due([("c1", Admission.READY)], 1000.0, full={"c1"}) == []
    (bot,) = coord.due([("c1", Admission.READY)], 1001.0)
    assert bot.check is Check.BOT


def test_spot_checks_are_for_admitted_containers_standing_by() -> None:
    coord = coordinator()
    far = 1000.0 + 10 * CONFIG.bot_interval  # every schedule is due by then
    coord.due([("c1", Admission.READY)], 1000.0, full={"c1"}, idle={"c1"})  # schedules start
    (busy,) = coord.due([("c1", Admission.READY)], far)  # not idle: never a spot check
    assert busy.check is Check.BOT
    coord.forget("c1")
    coord.due([("c1", Admission.READY)], 1000.0, full={"c1"}, idle={"c1"})
    (standing_by,) = coord.due([("c1", Admission.READY)], far, full={"c1"}, idle={"c1"})
    assert standing_by.check is Check.SPOT  # the bot waits for a seat; the spot check not
    coord.forget("c1")
    assert coord.due([("c1", Admission.QUALITY_CONTROL)], far, full={"c1"}, idle={"c1"}) == []
