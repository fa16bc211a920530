"""Scores and penalties: what the committees' decisions mean for a container's ranking and state.

Quality of one verdict, q in [0, 1]: the product of one factor per figure the verdict
measured (a figure it did not measure leaves its factor at 1), ramp(x; good, bad) being 1 at
or below `good`, 0 at or above `bad`, and linear between:
    rate        min(1, fps / expected fps), the expected one being the claimed value of the
                verdict's "fps" finding (what the container advertised for the session)
    smoothness  ramp(interval_std_ms; 5, 50)      frame-time jitter
    freezes     ramp(freezes; 0, 10)              W3C freezes in the session
    g2g         ramp(g2g_p95_ms; 100, 250)        glass-to-glass p95
    i2p         ramp(i2p_p95_ms; 150, 300)        input-to-photon p95
    reaction    reactions_seen / reactions_expected (1 when none was expected)
A failed verdict has q = 0. A product, not a mean: a stream at half its rate is half as good
whatever else it does well, and a game that ignores its player is worth nothing.

Quality of a decision: 0 when the majority failed the container; when it passed, the lower
median of the majority's verdict qualities, so one lying member of the majority moves it no
further than an honest one could.

QoS at `now`, over the container's last `history` scored decisions d:
    QoS = sum(w_d * q_d) / sum(w_d),   w_d = 2 ** (-(now - at_d) / half_life)
and UNPROVEN_QOS (the indexer's 0.5) before the first. Scored: every failed decision, and the
passed ones of the checks that measure the player's experience (spot, live, bot); a passed
registration confirms claims, not experience.

A decision falls short when it failed or its quality is below `shortfall_below`. The
selection penalty is `failure_penalty` per shortfall, decayed the same way:
    penalty = failure_penalty * sum over shortfalls s of 2 ** (-(now - at_s) / half_life)
Lifecycle events, by the container's admission when the decision arrives (`PENALTIES`):
    admission            check              passes              falls short
    awaiting_inspection  registration       INSPECTION_PASSED   INSPECTION_FAILED
    needs_reinspection   registration       INSPECTION_PASSED   INSPECTION_FAILED
    needs_reinspection   spot, live, bot    -                   QC_FLAGGED
    ready                registration       -                   REINSPECTION_DUE
    ready                spot, live, bot    -                   QC_FLAGGED
    quality_control      bot                INSPECTION_PASSED   INSPECTION_FAILED
and nothing otherwise. Quality control is left by playing (a bot session), since playing is
what fell short. The `suspend_after`-th shortfall within `suspend_window` seconds (counting
from the last suspension this scoreboard ordered) suspends instead, from any state but
SUSPENDED; only REINSTATED (governance) lifts that. Inconclusive decisions change nothing.

A container's own reports about its builds (`BUILD_FAULT_EVENTS`, p.BuildEvent) move it too: a
build found altered on its disk, or a folder planted among its builds, means its own storage
was touched, so its registration claims stand unproven until verifiers inspect it again
(REINSPECTION_DUE, where the lifecycle has that move: from ready). A crash or a limit kill is
the build's doing, not the host's: it is kept and shown, and moves nothing.

Pure: the scoreboard returns `Judgement`s (the event to apply, the QoS and penalty to set)
and performs none of them; time is each decision's `at` or the caller's `now`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from contracts.verdict import Check, Verdict
from indexer.lifecycle import TRANSITIONS, Admission, Event
from indexer.selection import UNPROVEN_QOS
from judge.consensus import Decision, Outcome
from judge.errors import JudgeError

_EXPERIENCE = (Check.SPOT, Check.LIVE, Check.BOT)
PENALTIES: dict[tuple[Admission, Check], tuple[Event | None, Event]] = {
    (Admission.AWAITING_INSPECTION, Check.REGISTRATION): (
        Event.INSPECTION_PASSED,
        Event.INSPECTION_FAILED,
    ),
    (Admission.NEEDS_REINSPECTION, Check.REGISTRATION): (
        Event.INSPECTION_PASSED,
        Event.INSPECTION_FAILED,
    ),
    **{(Admission.NEEDS_REINSPECTION, check): (None, Event.QC_FLAGGED) for check in _EXPERIENCE},
    (Admission.READY, Check.REGISTRATION): (None, Event.REINSPECTION_DUE),
    **{(Admission.READY, check): (None, Event.QC_FLAGGED) for check in _EXPERIENCE},
    (Admission.QUALITY_CONTROL, Check.BOT): (Event.INSPECTION_PASSED, Event.INSPECTION_FAILED),
}
"""(admission, check) -> (event when the decision passes, event when it falls short)."""


def penalty_event(admission: Admission, check: Check, *, shortfall: bool) -> Event | None:
    """The lifecycle event (PENALTIES) a decision on `check` makes for a container in
    `admission`: the second of the pair when it fell short; None where the table has none."""
    moves = PENALTIES.get((admission, check))
    return None if moves is None else moves[1] if shortfall else moves[0]


BUILD_FAULT_EVENTS: dict[str, Event | None] = {
    "crashed": None,
    "limit_killed": None,
    "hash_refused": Event.REINSPECTION_DUE,
    "planted": Event.REINSPECTION_DUE,
}
"""A build event's kind (contracts/protocol.py BUILD_EVENT_KINDS) -> the lifecycle event it asks."""


def build_fault_event(kind: str, admission: Admission) -> Event | None:
    """The lifecycle event a container's build report makes in `admission`: its kind's
    (BUILD_FAULT_EVENTS) where the lifecycle's table has that move, else None (a container
    awaiting inspection will be inspected anyway; one in quality control or suspended keeps
    the verifiers' verdict)."""
    event = BUILD_FAULT_EVENTS[kind]
    legal = any(t.event is event and t.source is admission for t in TRANSITIONS)
    return event if legal else None


class ScoreError(JudgeError, ValueError):
    """A scoring configuration that cannot work; the message names the setting."""


@dataclass(frozen=True, slots=True)
class Ramp:
    """1 at or below `good`, 0 at or above `bad`, linear between."""

    good: float
    bad: float

    def __post_init__(self) -> None:
        if not self.good < self.bad:
            raise ScoreError(f"a ramp falls from good to bad: {self.good:g} < {self.bad:g}")

    def factor(self, value: float) -> float:
        return min(1.0, max(0.0, (self.bad - value) / (self.bad - self.good)))


@dataclass(frozen=True, slots=True)
class ScoreConfig:
    jitter_ms: Ramp = Ramp(5.0, 50.0)
    freezes: Ramp = Ramp(0.0, 10.0)
    g2g_p95_ms: Ramp = Ramp(100.0, 250.0)
    i2p_p95_ms: Ramp = Ramp(150.0, 300.0)
    half_life: float = 6 * 3600.0  # seconds
    history: int = 32  # decisions kept per container
    shortfall_below: float = 0.7
    failure_penalty: float = 0.5
    suspend_after: int = 3
    suspend_window: float = 24 * 3600.0  # seconds

    def __post_init__(self) -> None:
        if not (self.half_life > 0 and self.suspend_window > 0):
            raise ScoreError("the half-life and the suspension window are positive durations")
        if not (0.0 < self.shortfall_below <= 1.0 and self.failure_penalty >= 0.0):
            raise ScoreError(
                f"shortfall_below is within (0, 1] and failure_penalty >= 0, not "
                f"{self.shortfall_below:g} and {self.failure_penalty:g}"
            )
        if not 1 <= self.suspend_after <= self.history:
            raise ScoreError(
                f"suspend_after ({self.suspend_after}) counts shortfalls the history "
                f"({self.history} decisions) can hold, at least 1"
            )


def quality_factors(verdict: Verdict, config: ScoreConfig) -> dict[str, float]:
    """The factors of a verdict's quality, by name, for those figures it measured."""
    metrics = verdict.metrics
    factors: dict[str, float] = {}
    expected = next(
        (
            f.claimed
            for f in verdict.findings
            if f.name == "fps" and isinstance(f.claimed, float | int)
        ),
        None,
    )
    if "fps" in metrics and expected is not None and expected > 0:
        factors["rate"] = min(1.0, metrics["fps"] / expected)
    for name, key, ramp in (
        ("smoothness", "interval_std_ms", config.jitter_ms),
        ("freezes", "freezes", config.freezes),
        ("g2g", "g2g_p95_ms", config.g2g_p95_ms),
        ("i2p", "i2p_p95_ms", config.i2p_p95_ms),
    ):
        if key in metrics:
            factors[name] = ramp.factor(metrics[key])
    if metrics.get("reactions_expected", 0) > 0:
        factors["reaction"] = min(
            1.0, metrics.get("reactions_seen", 0) / metrics["reactions_expected"]
        )
    return factors


def verdict_quality(verdict: Verdict, config: ScoreConfig) -> float:
    """q of one verdict: 0 when failed, else the product of its factors."""
    return math.prod(quality_factors(verdict, config).values()) if verdict.passed else 0.0


@dataclass(frozen=True, slots=True)
class Judgement:
    """What one decision means for its container; the caller applies it."""

    container_id: str
    event: Event | None  # the lifecycle event to apply, None for none
    qos: float  # to set in the indexer (Fleet.set_quality), with the penalty
    penalty: float
    quality: float | None  # the decision's quality; None when inconclusive
    shortfall: bool
    reason: str  # why it fell short, for the operator; "" otherwise


@dataclass(frozen=True, slots=True)
class _Scored:
    at: float
    quality: float | None  # None: not part of QoS (a passed registration)
    shortfall: bool


class Scoreboard:
    """Each container's recent decisions, and what each new one means."""

    def __init__(self, config: ScoreConfig | None = None) -> None:
        self.config = config or ScoreConfig()
        self._history: dict[str, deque[_Scored]] = {}
        self._suspended_at: dict[str, float] = {}

    def judge(self, decision: Decision, admission: Admission) -> Judgement:
        """Score `decision` for a container now in `admission`. Decisions come in the order
        they were decided: each is judged at its own `at`."""
        cid, now = decision.container_id, decision.at
        history = self._history.setdefault(cid, deque(maxlen=self.config.history))
        if history and now < history[-1].at:
            raise ScoreError(
                f"check {decision.check_id!r} of container {cid!r} was decided at {now:g}, "
                f"before the last one judged ({history[-1].at:g}); judge decisions in the "
                "order they were decided"
            )
        if decision.outcome is Outcome.INCONCLUSIVE:
            qos, penalty = self.quality(cid, now)
            return Judgement(cid, None, qos, penalty, None, False, "")
        quality, reason = self._assess(decision)
        shortfall = bool(reason)
        scored = quality if decision.check in _EXPERIENCE or not decision.passed else None
        history.append(_Scored(now, scored, shortfall))
        event = penalty_event(admission, decision.check, shortfall=shortfall)
        if shortfall and admission is not Admission.SUSPENDED and self._repeated(cid, now):
            event = Event.SUSPENDED
            self._suspended_at[cid] = now
        qos, penalty = self.quality(cid, now)
        return Judgement(cid, event, qos, penalty, quality, shortfall, reason)

    def quality(self, container_id: str, now: float) -> tuple[float, float]:
        """(QoS, penalty) at `now`: penalties fade, so refresh the indexer now and then."""
        history = self._history.get(container_id, ())
        weights = [(2.0 ** (-(now - s.at) / self.config.half_life), s) for s in history]
        scored = [(w, s.quality) for w, s in weights if s.quality is not None]
        total = sum(w for w, _ in scored)
        qos = sum(w * q for w, q in scored) / total if scored else UNPROVEN_QOS
        penalty = self.config.failure_penalty * sum(w for w, s in weights if s.shortfall)
        return qos, penalty

    def forget(self, container_id: str) -> None:
        """Drop a container's record (it left the network for good)."""
        self._history.pop(container_id, None)
        self._suspended_at.pop(container_id, None)

    def _assess(self, decision: Decision) -> tuple[float, str]:
        """The decision's quality, and why it falls short ("" when it does not: a failed
        decision always has a reason, since every failed finding names itself)."""
        if not decision.passed:
            return 0.0, decision.reason
        config = self.config
        ranked = sorted(decision.majority, key=lambda verdict: verdict_quality(verdict, config))
        median = ranked[(len(ranked) - 1) // 2]
        quality = verdict_quality(median, config)
        if quality >= config.shortfall_below:
            return quality, ""
        factors = quality_factors(median, config)
        low = ", ".join(f"{name} {value:.2f}" for name, value in factors.items() if value < 1.0)
        return quality, f"quality {quality:.2f} is below {config.shortfall_below:g} ({low})"

    def _repeated(self, container_id: str, now: float) -> bool:
        """Whether the shortfall just recorded is the suspend_after-th in the window."""
        since = max(
            now - self.config.suspend_window, self._suspended_at.get(container_id, -math.inf)
        )
        recent = sum(1 for s in self._history[container_id] if s.shortfall and s.at > since)
        return recent >= self.config.suspend_after
