"""Consensus: majorities of 2N+1, outvoted liars on the record, absent members, no ties."""

from __future__ import annotations

import itertools
import re

import pytest

from contracts.verdict import Check, Finding, Verdict
from judge.consensus import ConsensusError, Decision, Ledger, Outcome, Round
from judge.rotation import Roster, RotationConfig, genesis_seed

DEADLINE = 100.0


def verdict(
    verifier_id: str, passed: bool, container: str = "c1", check: Check = Check.BOT
) -> Verdict:
    detail = "" if passed else f"{verifier_id} saw 12 fps, 60 claimed"
    return Verdict(
        container, verifier_id, check, 10.0, (Finding("fps", passed, 60.0, 12.0, detail),)
    )


def committee_of(size: int) -> tuple[str, ...]:
    """A committee drawn by rotation, as the verifiers' edge would form one."""
    crew = Roster(RotationConfig(duty_size=size + 2, committee_size=size))
    for n in range(size + 4):
        crew.register(f"v{n}", 1 + n)
    return crew.draw(genesis_seed(b"net")).committee("c1", "check-1")


def decided(committee: tuple[str, ...], answers: dict[str, bool], now: float = 20.0) -> Decision:
    game = Round("c1", "check-1", Check.BOT, committee, DEADLINE)
    for who, passed in answers.items():
        game.add(verdict(who, passed))
    decision = game.decide(now)
    assert decision is not None
    return decision


def test_a_lying_verifier_is_outvoted_and_recorded() -> None:
    a, b, liar = committee_of(3)
    ledger = Ledger()
    # The container is fine; the liar fails it.
    decision = decided((a, b, liar), {a: True, liar: False, b: True})
    ledger.record(decision)
    assert decision.outcome is Outcome.PASSED and decision.passed
    assert [v.verifier_id for v in decision.majority] == [a, b]
    assert [v.verifier_id for v in decision.dissent] == [liar]
    assert decision.absent == () and decision.reason == ""
    # The container is broken; the liar passes it.
    decision = decided((a, b, liar), {a: False, b: False, liar: True}, now=30.0)
    ledger.record(decision)
    assert decision.outcome is Outcome.FAILED
    assert decision.reason == f"{a} saw 12 fps, 60 claimed; {b} saw 12 fps, 60 claimed"
    assert ledger.of(liar).to_dict() == {
        "checks": 2, "agreed": 0, "dissented": 2, "absent": 0, "undecided": 0,
        "recent_dissents": [
            {"container": "c1", "check_id": "check-1", "decided_at": 20.0, "passed": False,
             "reason": f"{liar} saw 12 fps, 60 claimed"},
            {"container": "c1", "check_id": "check-1", "decided_at": 30.0, "passed": True,
             "reason": ""},
        ],
    }  # fmt: skip
    assert ledger.of(a).agreed == ledger.of(b).agreed == 2
    assert ledger.of(a).dissented == 0
    assert ledger.of("never-served").to_dict()["checks"] == 0
    assert list(ledger.to_dict()) == sorted((a, b, liar))


def test_two_liars_of_five_are_outvoted() -> None:
    members = committee_of(5)
    answers = dict(zip(members, (False, True, False, True, True), strict=True))
    decision = decided(members, answers)
    assert decision.outcome is Outcome.PASSED
    assert sorted(v.verifier_id for v in decision.dissent) == sorted([members[0], members[2]])
    assert decision.to_dict() == {
        "container": "c1", "check_id": "check-1", "check": "bot", "at": 20.0,
        "outcome": "passed", "reason": "",
        "majority": [members[1], members[3], members[4]],
        "dissenters": [members[0], members[2]], "absent": [],
    }  # fmt: skip


@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_no_ties_with_2n_plus_1(size: int) -> None:
    """Every mix of pass, fail and silence: a side that wins holds N+1 of the whole committee,
    a full committee always decides, and nobody dissents from an inconclusive round."""
    members = tuple(f"v{n}" for n in range(size))
    for answers in itertools.product((True, False, None), repeat=size):
        given = {who: a for who, a in zip(members, answers, strict=True) if a is not None}
        decision = decided(members, given, now=DEADLINE)
        passes = sum(given.values())
        fails = len(given) - passes
        if decision.outcome is Outcome.INCONCLUSIVE:
            assert max(passes, fails) <= size // 2 and len(given) < size  # somebody was silent
            assert decision.majority == decision.dissent == ()
        else:
            assert len(decision.majority) >= size // 2 + 1
            assert len(decision.majority) + len(decision.dissent) == len(given)
        assert decision.absent == tuple(m for m in members if m not in given)


def test_missing_answers_wait_for_the_deadline_then_count_as_absent() -> None:
    a, b, c = committee_of(3)
    ledger = Ledger()
    game = Round("c1", "check-1", Check.BOT, (a, b, c), DEADLINE)
    game.add(verdict(a, True))
    game.add(verdict(b, True))
    assert game.decide(DEADLINE - 1) is None  # c may still answer
    decision = game.decide(DEADLINE)
    assert decision is not None and decision.outcome is Outcome.PASSED
    assert decision.absent == (c,) and decision.dissent == ()
    assert game.decide(DEADLINE + 50) is decision  # closed: the same decision
    ledger.record(decision)
    assert (ledger.of(c).checks, ledger.of(c).absent) == (1, 1)

    split = Round("c1", "check-2", Check.BOT, (a, b, c), DEADLINE)
    split.add(verdict(a, True))
    split.add(verdict(b, False))
    decision = split.decide(DEADLINE)
    assert decision is not None and decision.outcome is Outcome.INCONCLUSIVE
    assert decision.to_dict()["dissenters"] == [] and decision.absent == (c,)
    ledger.record(decision)
    assert ledger.of(a).to_dict()["undecided"] == 1 and ledger.of(c).absent == 2


def refused(message: str) -> pytest.RaisesExc[ConsensusError]:
    return pytest.raises(ConsensusError, match=f"^{re.escape(message)}$")


def test_verdicts_a_round_cannot_take() -> None:
    game = Round("c1", "check-1", Check.BOT, ("a", "b", "c"), DEADLINE)
    where = "check 'check-1' of container 'c1'"
    with refused(f"verifier 'x' is not on the committee of {where}; only a, b, c may answer it"):
        game.add(verdict("x", True))
    game.add(verdict("a", True))
    with refused(f"verifier 'a' answered {where} already"):
        game.add(verdict("a", False))
    with refused(f"verifier 'b' sent a bot verdict on container 'c2' to {where}, a bot check"):
        game.add(verdict("b", True, container="c2"))
    with refused(f"verifier 'b' sent a spot verdict on container 'c1' to {where}, a bot check"):
        game.add(verdict("b", True, check=Check.SPOT))
    assert game.decide(DEADLINE) is not None
    with refused(f"{where} is decided already; verifier 'b' answered late"):
        game.add(verdict("b", True))
    for members in (("a", "b"), ("a", "a", "b")):
        with refused(
            f"check 'k' needs an odd number (2N+1) of distinct verifiers, not {list(members)}"
        ):
            Round("c1", "k", Check.BOT, members, DEADLINE)
