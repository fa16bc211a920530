"""Scores and penalties: the documented formula's values, demotions, suspension, recovery."""

from __future__ import annotations

import re
from types import MappingProxyType

import pytest

from contracts.verdict import Check, Finding, Verdict
from indexer.lifecycle import (
    TRANSITIONS,
    Admission,
    ContainerLifecycle,
    Event,
    LivenessConfig,
)
from indexer.selection import UNPROVEN_QOS
from judge.consensus import Decision, Round
from judge.scores import (
    PENALTIES,
    Ramp,
    Scoreboard,
    ScoreConfig,
    ScoreError,
    quality_factors,
    verdict_quality,
)

HOUR = 3600.0
H = 6 * HOUR  # the default half-life
HEALTHY = {
    "fps": 60.0, "interval_std_ms": 3.0, "freezes": 0.0, "g2g_p50_ms": 30.0, "g2g_p95_ms": 50.0,
    "i2p_p50_ms": 60.0, "i2p_p95_ms": 80.0, "decode_errors": 0.0, "reactions_expected": 10.0,
    "reactions_seen": 10.0,
}  # fmt: skip
THIRTY_FPS = {"fps": 30.0}
DELAYED = {"g2g_p95_ms": 150.0, "i2p_p95_ms": 180.0}  # +100 ms on the healthy figures
IGNORED_INPUT = {"reactions_seen": 0.0}


def verdict(
    verifier_id: str, at: float, passed: bool = True, check: Check = Check.BOT, **changes: float
) -> Verdict:
    metrics = {**HEALTHY, **changes}
    detail = "" if passed else f"{metrics['fps']:g} fps where 60 were claimed"
    finding = Finding("fps", passed, 60.0, metrics["fps"], detail)
    return Verdict("c1", verifier_id, check, at, (finding,), MappingProxyType(metrics))


def decision(
    at: float, passed: bool = True, check: Check = Check.BOT, **changes: float
) -> Decision:
    """A committee of three that agrees on the same verdict, decided at `at`."""
    committee = Round("c1", f"check-{at:g}", check, ("a", "b", "c"), deadline=at)
    for verifier_id in ("a", "b", "c"):
        committee.add(verdict(verifier_id, at, passed, check, **changes))
    decided = committee.decide(at)
    assert decided is not None
    return decided


def test_a_healthy_run_scores_high() -> None:
    config = ScoreConfig()
    healthy = verdict("a", 0.0)
    assert quality_factors(healthy, config) == dict.fromkeys(
        ("rate", "smoothness", "freezes", "g2g", "i2p", "reaction"), 1.0
    )
    judgement = Scoreboard().judge(decision(0.0), Admission.READY)
    assert (judgement.event, judgement.qos, judgement.penalty) == (None, 1.0, 0.0)
    assert (judgement.quality, judgement.shortfall, judgement.reason) == (1.0, False, "")
    # A little worse everywhere is still no shortfall: 0.95 x 0.9 x 0.9.
    worn = verdict("a", 0.0, fps=57.0, interval_std_ms=9.5, freezes=1.0)
    assert verdict_quality(worn, config) == pytest.approx(0.7695, abs=1e-12)


def test_factors_cover_only_what_was_measured() -> None:
    spot = Verdict("c1", "a", Check.SPOT, 0.0, (Finding("challenge", True),),
                   MappingProxyType({"fps": 30.0, "g2g_p95_ms": 175.0}))  # fmt: skip
    assert quality_factors(spot, ScoreConfig()) == {"g2g": 0.5}  # no claimed fps: no rate
    assert verdict_quality(verdict("a", 0.0, passed=False), ScoreConfig()) == 0.0


@pytest.mark.parametrize(
    ("fault", "quality", "reason"),
    [
        (THIRTY_FPS, 0.5, "quality 0.50 is below 0.7 (rate 0.50)"),
        (DELAYED, 2 / 3 * 0.8, "quality 0.53 is below 0.7 (g2g 0.67, i2p 0.80)"),
        (IGNORED_INPUT, 0.0, "quality 0.00 is below 0.7 (reaction 0.00)"),
    ],
    ids=["30-fps-of-60", "plus-100-ms", "ignored-input"],
)
def test_one_decision_demotes(fault: dict[str, float], quality: float, reason: str) -> None:
    """The committee passes the session, but its quality puts the container in quality
    control, adds a penalty and pulls its QoS down, all in one decision."""
    board = Scoreboard()
    board.judge(decision(0.0), Admission.READY)
    judgement = board.judge(decision(H, **fault), Admission.READY)
    assert judgement.event is Event.QC_FLAGGED
    assert judgement.quality == pytest.approx(quality, abs=1e-12)
    assert judgement.shortfall and judgement.reason == reason
    # Weights: the healthy decision is one half-life old (1/2), the faulty one fresh (1).
    assert judgement.qos == pytest.approx((0.5 * 1.0 + 1.0 * quality) / 1.5, abs=1e-12)
    assert judgement.penalty == 0.5


def test_a_failed_decision_scores_zero_and_names_why() -> None:
    board = Scoreboard()
    judgement = board.judge(decision(0.0, passed=False, fps=12.0), Admission.READY)
    assert (judgement.event, judgement.quality, judgement.qos) == (Event.QC_FLAGGED, 0.0, 0.0)
    assert judgement.reason == "12 fps where 60 were claimed"
    registration = decision(HOUR, passed=False, check=Check.REGISTRATION)
    assert board.judge(registration, Admission.READY).event is Event.REINSPECTION_DUE


def test_a_lying_member_of_the_majority_cannot_lift_the_quality() -> None:
    committee = Round("c1", "k", Check.BOT, ("a", "b", "liar"), deadline=0.0)
    committee.add(verdict("a", 0.0, fps=30.0))
    committee.add(verdict("b", 0.0, fps=30.0))
    committee.add(verdict("liar", 0.0))  # claims a perfect 60 fps
    decided = committee.decide(0.0)
    assert decided is not None
    assert Scoreboard().judge(decided, Admission.READY).quality == 0.5


def test_passed_registrations_leave_qos_unproven() -> None:
    board = Scoreboard()
    judgement = board.judge(decision(0.0, check=Check.REGISTRATION), Admission.AWAITING_INSPECTION)
    assert judgement.event is Event.INSPECTION_PASSED
    assert (judgement.qos, judgement.penalty) == (UNPROVEN_QOS, 0.0)


def test_inconclusive_rounds_change_nothing() -> None:
    board = Scoreboard()
    board.judge(decision(0.0, **THIRTY_FPS), Admission.READY)
    split = Round("c1", "k", Check.BOT, ("a", "b", "c"), deadline=H)
    split.add(verdict("a", H))
    split.add(verdict("b", H, passed=False))
    decided = split.decide(H)
    assert decided is not None
    judgement = board.judge(decided, Admission.READY)
    assert (judgement.event, judgement.quality, judgement.shortfall) == (None, None, False)
    assert (judgement.qos, judgement.penalty) == (0.5, 0.25) == board.quality("c1", H)


def ready_container() -> ContainerLifecycle:
    container = ContainerLifecycle("c1", LivenessConfig(1.0, 3), now=0.0)
    container.apply(Event.SPECS_RECEIVED, 0.0)
    container.apply(Event.INSPECTION_PASSED, 0.0)
    return container


def test_repeated_shortfalls_suspend_and_reinstatement_starts_afresh() -> None:
    board, container = Scoreboard(), ready_container()

    def judge(at: float, passed: bool = True, check: Check = Check.BOT) -> Event | None:
        event = board.judge(decision(at, passed, check), container.admission).event
        if event is not None:
            container.apply(event, at)
        return event

    assert judge(0.0, passed=False) is Event.QC_FLAGGED
    assert judge(HOUR, passed=False) is Event.INSPECTION_FAILED  # QC is left by a bot session
    assert container.admission is Admission.CONFIGURING
    container.apply(Event.SPECS_RECEIVED, 2 * HOUR)
    assert judge(2 * HOUR, passed=False, check=Check.REGISTRATION) is Event.SUSPENDED
    assert judge(3 * HOUR, passed=False) is None  # suspended: governance's to lift
    assert container.admission is Admission.SUSPENDED
    container.apply(Event.REINSTATED, 4 * HOUR)
    container.apply(Event.SPECS_RECEIVED, 4 * HOUR)
    assert judge(5 * HOUR, passed=False, check=Check.REGISTRATION) is Event.INSPECTION_FAILED


def test_shortfalls_spread_beyond_the_window_do_not_suspend() -> None:
    board = Scoreboard()
    events = [board.judge(decision(at, **THIRTY_FPS), Admission.READY).event
              for at in (0.0, 13 * HOUR, 26 * HOUR)]  # fmt: skip
    assert events == [Event.QC_FLAGGED] * 3


def test_passing_again_recovers() -> None:
    board = Scoreboard()
    failed = board.judge(decision(0.0, passed=False), Admission.READY)
    assert (failed.qos, failed.penalty) == (0.0, 0.5)
    passed = board.judge(decision(H), Admission.QUALITY_CONTROL)
    assert passed.event is Event.INSPECTION_PASSED and not passed.shortfall
    assert passed.qos == pytest.approx(2 / 3, abs=1e-12) and passed.penalty == 0.25
    qos, penalty = board.quality("c1", 3 * H)  # the penalty fades; the ratio stands
    assert qos == pytest.approx(2 / 3, abs=1e-12) and penalty == 0.0625
    board.forget("c1")
    assert board.quality("c1", 3 * H) == (UNPROVEN_QOS, 0.0)


def test_every_penalty_is_a_legal_lifecycle_move() -> None:
    legal = {(t.event, t.source) for t in TRANSITIONS}
    for (admission, _check), moves in PENALTIES.items():
        for event in moves:
            assert event is None or (event, admission) in legal, (event, admission)
    for admission in Admission:
        if admission is not Admission.SUSPENDED:
            assert (Event.SUSPENDED, admission) in legal


def test_config_errors_name_the_setting() -> None:
    def refused(message: str) -> pytest.RaisesExc[ScoreError]:
        return pytest.raises(ScoreError, match=f"^{re.escape(message)}$")

    with refused("a ramp falls from good to bad: 5 < 5"):
        Ramp(5.0, 5.0)
    with refused("the half-life and the suspension window are positive durations"):
        ScoreConfig(half_life=0.0)
    with refused("shortfall_below is within (0, 1] and failure_penalty >= 0, not 1.5 and 0.5"):
        ScoreConfig(shortfall_below=1.5)
    with refused(
        "suspend_after (40) counts shortfalls the history (32 decisions) can hold, at least 1"
    ):
        ScoreConfig(suspend_after=40)


def test_decisions_are_judged_in_order() -> None:
    board = Scoreboard()
    board.judge(decision(H), Admission.READY)
    with pytest.raises(
        ScoreError,
        match=re.escape(
            "check 'check-3600' of container 'c1' was decided at 3600, before the last one "
            "judged (21600); judge decisions in the order they were decided"
        ),
    ):
        board.judge(decision(HOUR), Admission.READY)
