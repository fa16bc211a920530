"""Consensus: a committee of 2N+1 verifiers judges one check, and the majority decides.

A `Round` collects the committee's verdicts on one check of one container (the committee
comes from rotation's `Duty.committee`). It is decided when every member has answered, or at
its deadline with whoever has:

* PASSED or FAILED when at least N+1 verdicts agree: a majority of the whole committee, not
  of those who answered. Two sides cannot both reach N+1 of 2N+1, so there is never a tie,
  even when some members are missing. Verifiers that answered the other way are dissenters.
* INCONCLUSIVE when neither side reaches N+1 because members never answered (with 2N+1
  members and everyone answering, one side always does). Nobody dissents, nothing is judged;
  the caller runs the check again with a fresh committee.

Members that never answered are absent, whatever the outcome: silence is not a vote, but the
ledger counts it, because a verifier that skips the checks it dislikes is hiding something too.

The `Ledger` keeps, per verifier, how many checks it sat on and how each ended for it, plus
its most recent dissents, for the dashboard and for whoever decides to act on a verifier.

Pure: `now` is an input; verdicts carry their own times.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from contracts.verdict import Check, Verdict
from judge.errors import JudgeError

RECENT_DISSENTS = 20  # per verifier, for the dashboard


class ConsensusError(JudgeError, ValueError):
    """A verdict this round cannot take, or a round that cannot be formed; nothing changed."""


class Outcome(Enum):
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class Decision:
    """What a committee decided about one check, with every verdict it was given."""

    container_id: str
    check_id: str
    check: Check
    at: float  # Unix seconds when the round was decided
    outcome: Outcome
    committee: tuple[str, ...]
    verdicts: tuple[Verdict, ...]  # in committee order; absent members have none

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED

    @property
    def majority(self) -> tuple[Verdict, ...]:
        """The verdicts on the winning side; () when inconclusive."""
        if self.outcome is Outcome.INCONCLUSIVE:
            return ()
        return tuple(v for v in self.verdicts if v.passed == self.passed)

    @property
    def dissent(self) -> tuple[Verdict, ...]:
        """The verdicts the majority overruled; () when inconclusive."""
        if self.outcome is Outcome.INCONCLUSIVE:
            return ()
        return tuple(v for v in self.verdicts if v.passed != self.passed)

    @property
    def absent(self) -> tuple[str, ...]:
        answered = {verdict.verifier_id for verdict in self.verdicts}
        return tuple(who for who in self.committee if who not in answered)

    @property
    def reason(self) -> str:
        """Why the majority failed the container, each distinct reason once; "" otherwise."""
        if self.outcome is not Outcome.FAILED:
            return ""
        return "; ".join(dict.fromkeys(verdict.reason for verdict in self.majority))

    def to_dict(self) -> dict[str, Any]:
        return {
            "container": self.container_id,
            "check_id": self.check_id,
            "check": self.check.value,
            "at": self.at,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "majority": [verdict.verifier_id for verdict in self.majority],
            "dissenters": [verdict.verifier_id for verdict in self.dissent],
            "absent": list(self.absent),
        }


class Round:
    """One check's committee and the verdicts it has sent so far."""

    def __init__(
        self,
        container_id: str,
        check_id: str,
        check: Check,
        committee: Iterable[str],
        deadline: float,
    ) -> None:
        self.container_id = container_id
        self.check_id = check_id
        self.check = check
        self.committee = tuple(committee)
        self.deadline = deadline
        if len(self.committee) % 2 == 0 or len(set(self.committee)) != len(self.committee):
            raise ConsensusError(
                f"check {check_id!r} needs an odd number (2N+1) of distinct verifiers, "
                f"not {list(self.committee)}"
            )
        self._verdicts: dict[str, Verdict] = {}
        self._decision: Decision | None = None

    def add(self, verdict: Verdict) -> None:
        """Take one member's verdict; refused (ConsensusError) once decided, from anyone off
        the committee, twice from one member, or about another container or kind of check."""
        who = verdict.verifier_id
        where = f"check {self.check_id!r} of container {self.container_id!r}"
        if self._decision is not None:
            raise ConsensusError(f"{where} is decided already; verifier {who!r} answered late")
        if who not in self.committee:
            raise ConsensusError(
                f"verifier {who!r} is not on the committee of {where}; only "
                f"{', '.join(self.committee)} may answer it"
            )
        if who in self._verdicts:
            raise ConsensusError(f"verifier {who!r} answered {where} already")
        if verdict.container_id != self.container_id or verdict.check is not self.check:
            raise ConsensusError(
                f"verifier {who!r} sent a {verdict.check.value} verdict on container "
                f"{verdict.container_id!r} to {where}, a {self.check.value} check"
            )
        self._verdicts[who] = verdict

    def decide(self, now: float) -> Decision | None:
        """The decision once every member answered or `now` reached the deadline, else None.
        Deciding closes the round; later calls return the same decision."""
        if self._decision is None and (
            len(self._verdicts) == len(self.committee) or now >= self.deadline
        ):
            self._decision = self._tally(now)
        return self._decision

    def _tally(self, now: float) -> Decision:
        needed = len(self.committee) // 2 + 1
        verdicts = tuple(self._verdicts[who] for who in self.committee if who in self._verdicts)
        passes = sum(verdict.passed for verdict in verdicts)
        outcome = Outcome.INCONCLUSIVE
        if passes >= needed:
            outcome = Outcome.PASSED
        elif len(verdicts) - passes >= needed:
            outcome = Outcome.FAILED
        return Decision(
            self.container_id, self.check_id, self.check, now, outcome, self.committee, verdicts
        )


@dataclass(frozen=True, slots=True)
class Dissent:
    """A verdict the majority overruled, kept against the verifier that gave it."""

    check_id: str
    decided_at: float
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "container": self.verdict.container_id,
            "check_id": self.check_id,
            "decided_at": self.decided_at,
            "passed": self.verdict.passed,
            "reason": self.verdict.reason,
        }


@dataclass(slots=True)
class VerifierRecord:
    """How one verifier's checks ended: `checks` = agreed + dissented + absent + undecided."""

    agreed: int = 0
    dissented: int = 0
    absent: int = 0
    undecided: int = 0  # answered a round that ended inconclusive
    recent_dissents: deque[Dissent] = field(default_factory=lambda: deque(maxlen=RECENT_DISSENTS))

    @property
    def checks(self) -> int:
        return self.agreed + self.dissented + self.absent + self.undecided

    def to_dict(self) -> dict[str, Any]:
        return {
            "checks": self.checks,
            "agreed": self.agreed,
            "dissented": self.dissented,
            "absent": self.absent,
            "undecided": self.undecided,
            "recent_dissents": [dissent.to_dict() for dissent in self.recent_dissents],
        }


class Ledger:
    """Every verifier's record over the decisions it is given."""

    def __init__(self) -> None:
        self._records: dict[str, VerifierRecord] = {}

    def record(self, decision: Decision) -> None:
        """Count `decision` for each member of its committee."""
        majority = {verdict.verifier_id for verdict in decision.majority}
        dissent = {verdict.verifier_id: verdict for verdict in decision.dissent}
        absent = set(decision.absent)
        for verifier_id in decision.committee:
            entry = self._records.setdefault(verifier_id, VerifierRecord())
            if verifier_id in majority:
                entry.agreed += 1
            elif verifier_id in dissent:
                entry.dissented += 1
                entry.recent_dissents.append(
                    Dissent(decision.check_id, decision.at, dissent[verifier_id])
                )
            elif verifier_id in absent:
                entry.absent += 1
            else:
                entry.undecided += 1

    def of(self, verifier_id: str) -> VerifierRecord:
        """A verifier's record; an empty one for a verifier that never sat on a committee."""
        return self._records.get(verifier_id, VerifierRecord())

    def to_dict(self) -> dict[str, Any]:
        return {verifier: self._records[verifier].to_dict() for verifier in sorted(self._records)}
