"""The indexer's side of verification: which checks are due, who judges them, what decisions do.

One inspection cycle per container: a REGISTRATION check while it awaits inspection (or needs
re-inspection), then, as soon as it is admitted, a BOT session (the verifier plays it and reads
the markers), then bot sessions at random times (exponential gaps, mean `bot_interval`) for
as long as it is ready or in quality control, and, while it stands by with no session, SPOT
checks (its heartbeat's load and a small challenge: verifier/live_sample.py) at random times
(mean `spot_interval`): random so that a container cannot behave only when it expects to be
watched. Each check is judged by a committee drawn from the epoch's
on-duty verifiers (judge/rotation.py), decided by majority (judge/consensus.py) and
scored (judge/scores.py); the edge applies the judgement (a lifecycle event, the QoS and
penalty selection ranks by).

While such a container streams to players it is also sampled live: a LIVE check of one of its
sessions, drawn at random, at random times (exponential gaps, mean `live_interval`, the first
counted from when it first had a session to sample, so nobody can tell when sampling starts).
The committee judges the session's sample as the indexer holds it (verifier/live_sample.py),
which costs the container nothing. One check is open per container; when a live sample and a
bot session are both due, the one due first goes first.

A bot check gives each member its own `ticket`, a random secret it presents (once) when it
asks for its session: the only way to be seated on one chosen container, past the ranking.

Pure: `now` is Unix seconds (epochs are public wall-clock times). Gaps and sampled sessions
come from the injected generator; check ids and tickets from the OS (a ticket must not be
guessable).
"""

from __future__ import annotations

import math
import secrets
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from contracts.verdict import Check, Verdict
from indexer.lifecycle import Admission
from judge.consensus import ConsensusError, Decision, Ledger, Round
from judge.rotation import (
    Duty,
    Roster,
    RotationConfig,
    RotationError,
    epoch_at,
    epoch_seed,
    next_seed,
)
from judge.scores import Judgement, Scoreboard, ScoreConfig

_INSPECTED = (Admission.AWAITING_INSPECTION, Admission.NEEDS_REINSPECTION)
_WATCHED = (Admission.READY, Admission.QUALITY_CONTROL)


RECENT_DECISIONS = 50  # kept for the dashboard and /api/verifiers


@dataclass(frozen=True, slots=True)
class VerificationConfig:
    rotation: RotationConfig = field(default_factory=RotationConfig)
    scores: ScoreConfig = field(default_factory=ScoreConfig)
    round_seconds: float = 60.0  # a committee member that has not answered by then is absent
    spot_interval: float = 600.0  # mean seconds between spot checks of a standing-by container
    # Mean seconds between live samples of a container while it has sessions to sample.
    live_interval: float = 300.0
    bot_interval: float = 1800.0  # mean seconds between bot sessions on an admitted container


@dataclass(frozen=True, slots=True)
class Task:
    """One check to run: sent to each committee member."""

    check_id: str
    container_id: str
    check: Check
    committee: tuple[str, ...]
    deadline: float
    tickets: Mapping[str, str]  # member -> its own single-use ticket to be seated (bot checks)
    session_id: str = ""  # for live samples: the session sampled


class Coordinator:
    def __init__(
        self,
        config: VerificationConfig,
        genesis: bytes,
        genesis_at: float,
        rng: np.random.Generator,
    ) -> None:
        self.config = config
        self.roster = Roster(config.rotation)
        self.ledger = Ledger()
        self.scoreboard = Scoreboard(config.scores)
        self.decisions: deque[Decision] = deque(maxlen=RECENT_DECISIONS)  # for the dashboard
        self._genesis, self._genesis_at = genesis, genesis_at
        self._rng = rng
        self._duty: Duty | None = None
        self._seed: bytes | None = None  # the seed of the last epoch drawn
        self._rounds: dict[str, tuple[Round, Task]] = {}
        self._open: dict[str, str] = {}  # container -> its open check's id
        self._next_bot: dict[str, float] = {}  # container -> when its next bot session is due
        self._redeemed: set[str] = set()  # tickets already used (pruned with their rounds)
        self._next_live: dict[str, float] = {}  # container -> when its next live sample is due
        self._next_spot: dict[str, float] = {}  # container -> when its next spot check is due

    # verifiers ------------------------------------------------------------------------------

    def enlist(self, verifier_id: str, stake: int) -> None:
        """A verifier offers itself; it can be drawn from the next epoch on."""
        if verifier_id in self.roster:
            self.roster.set_stake(verifier_id, stake)
        else:
            self.roster.register(verifier_id, stake)

    def duty(self, now: float) -> Duty | None:
        """This epoch's draw, or None while fewer verifiers are enlisted than a committee
        needs. Every epoch is drawn in turn, needed or not: each draw sets the staleness the
        next one weighs, and anyone recomputing the draws must be able to follow them all."""
        epoch = epoch_at(now, self._genesis_at, self.config.rotation.epoch_seconds)
        try:
            while self.roster.next_epoch <= epoch:
                number = self.roster.next_epoch
                previous = self._seed  # the seed of epoch number - 1, once one was drawn
                seed = (
                    epoch_seed(self._genesis, number)
                    if previous is None
                    else next_seed(previous, number)
                )
                self._duty = self.roster.draw(seed)  # raises before anything moved
                self._seed = seed
        except RotationError:
            return None
        return self._duty if self._duty is not None and self._duty.epoch == epoch else None

    # checks ---------------------------------------------------------------------------------

    def due(
        self,
        containers: Iterable[tuple[str, Admission]],
        now: float,
        live: Mapping[str, Sequence[str]] | None = None,
        full: Collection[str] = frozenset(),
        idle: Collection[str] = frozenset(),
    ) -> list[Task]:
        """Start the checks now due on these (live) containers, one open check each.
        `live`: each container's sessions a live sample could be taken of now. `full`:
        containers with no seat left, whose bot session waits (it could not be seated, and a
        container busy serving players is not failing them). `idle`: containers standing by
        with no session, which spot checks are for."""
        tasks = []
        for container_id, admission in containers:
            if container_id in self._open:
                continue
            sessions = (live or {}).get(container_id, ())
            live_at = self._live_due(container_id, admission, sessions, now)
            watched = admission in _WATCHED and container_id not in full
            bot_at = self._next_bot.get(container_id, now) if watched else math.inf
            spot_at = self._spot_due(container_id, admission, container_id in idle, now)
            session = ""
            if admission in _INSPECTED:
                check = Check.REGISTRATION
            elif min(live_at, bot_at, spot_at) > now:
                continue
            elif spot_at < min(live_at, bot_at):
                check = Check.SPOT
            elif live_at <= bot_at:
                check = Check.LIVE
                ordered = sorted(sessions)
                session = ordered[int(self._rng.integers(len(ordered)))]
            else:
                check = Check.BOT
            duty = self.duty(now)
            if duty is None:
                break
            tasks.append(self._start(duty, container_id, check, now, session))
        return tasks

    def report(self, check_id: str, verdict: Verdict, now: float) -> Decision | None:
        """A committee member's verdict on check `check_id`; the decision once the round is
        complete. Raises ConsensusError for a verdict nobody asked for (a check closed or
        unknown, a member not on it, another container or kind of check)."""
        entry = self._rounds.get(check_id)
        if entry is None:
            raise ConsensusError(
                f"check {check_id!r} is not open (decided, timed out or never assigned); "
                f"verdict from {verdict.verifier_id!r} on {verdict.container_id!r} dropped"
            )
        entry[0].add(verdict)
        return self._close(entry[0], now)

    def overdue(self, now: float) -> list[Decision]:
        """Rounds decided by their deadline (absent members count as such)."""
        decided = (self._close(round_, now) for round_, _ in list(self._rounds.values()))
        return [decision for decision in decided if decision is not None]

    def judge(self, decision: Decision, admission: Admission) -> Judgement:
        """What `decision` means for its container now in `admission`; also books the dissent
        and schedules the container's next bot session."""
        self.ledger.record(decision)
        self.decisions.append(decision)
        judgement = self.scoreboard.judge(decision, admission)
        container_id = decision.container_id
        if decision.check is Check.LIVE:
            self._next_live[container_id] = decision.at + self._gap(self.config.live_interval)
            return judgement
        if decision.check is Check.SPOT:
            self._next_spot[container_id] = decision.at + self._gap(self.config.spot_interval)
            return judgement
        gap = self._gap(self.config.bot_interval)
        registration = decision.check is Check.REGISTRATION
        # Admitted just now: its first bot session completes the inspection cycle at once.
        self._next_bot[container_id] = decision.at + (0.0 if registration else gap)
        return judgement

    def task(self, check_id: str) -> Task | None:
        """The open check with this id."""
        entry = self._rounds.get(check_id)
        return None if entry is None else entry[1]

    def redeemable(self, ticket: str) -> Task | None:
        """The open bot check an unused member's ticket belongs to."""
        for _, task in self._rounds.values():
            if ticket in task.tickets.values():
                return None if ticket in self._redeemed else task
        return None

    def redeem(self, ticket: str) -> None:
        """The ticket seated its bot: it seats no other, so a member cannot take the seats
        its fellow members need."""
        self._redeemed.add(ticket)

    def forget(self, container_id: str) -> None:
        """The container left: its open check is void, its schedule dropped."""
        check_id = self._open.pop(container_id, None)
        if check_id is not None:
            _, task = self._rounds.pop(check_id)
            self._redeemed.difference_update(task.tickets.values())
        self._next_bot.pop(container_id, None)
        self._next_live.pop(container_id, None)
        self._next_spot.pop(container_id, None)

    def _spot_due(self, container_id: str, admission: Admission, idle: bool, now: float) -> float:
        """When the container's next spot check is due (inf: not standing by). Its schedule
        starts, a random gap ahead, when it is first seen admitted."""
        if admission is not Admission.READY:
            self._next_spot.pop(container_id, None)
            return math.inf
        if container_id not in self._next_spot:
            self._next_spot[container_id] = now + self._gap(self.config.spot_interval)
        return self._next_spot[container_id] if idle else math.inf

    def _live_due(
        self, container_id: str, admission: Admission, sessions: Sequence[str], now: float
    ) -> float:
        """When the container's next live sample is due (inf: it has nothing to sample). Its
        schedule starts, a random gap ahead, when it first has a session to sample."""
        if admission not in _WATCHED or not sessions:
            self._next_live.pop(container_id, None)
            return math.inf
        if container_id not in self._next_live:
            self._next_live[container_id] = now + self._gap(self.config.live_interval)
        return self._next_live[container_id]

    def _gap(self, mean: float) -> float:
        return float(self._rng.exponential(mean))

    def _start(self, duty: Duty, container_id: str, check: Check, now: float, session: str) -> Task:
        check_id = secrets.token_hex(8)
        committee = duty.committee(container_id, check_id)
        deadline = now + self.config.round_seconds
        bot = check is Check.BOT  # only a bot session is seated: the others need no ticket
        tickets = {member: secrets.token_urlsafe(16) for member in committee} if bot else {}
        task = Task(check_id, container_id, check, committee, deadline, tickets, session)
        self._rounds[check_id] = (Round(container_id, check_id, check, committee, deadline), task)
        self._open[container_id] = check_id
        return task

    def _close(self, round_: Round, now: float) -> Decision | None:
        decision = round_.decide(now)
        if decision is not None:
            _, task = self._rounds.pop(round_.check_id)
            self._redeemed.difference_update(task.tickets.values())
            del self._open[round_.container_id]
        return decision
