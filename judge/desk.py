"""The indexer's verification desk: between the coordinator's decisions and the sockets.

It turns the registry's live containers into due checks (judge/coordinator.py), checks into
assignments for each committee member, verdict reports into verdicts, and decisions into what
the registry must do: a lifecycle event (admitted, re-inspection, quality control, suspended)
and the QoS and penalty selection ranks by. Sessions a demotion ends are returned for the
broker to close.

Two clocks: the registry counts in the server's monotonic seconds (`mono`), rotation and
verdicts in public Unix seconds (`now`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from contracts import protocol as p
from contracts.verdict import Check, verdict_of
from indexer.errors import IndexerError
from indexer.lifecycle import IllegalEventError
from indexer.registry import ContainerSpec
from indexer.store import RegistryStore
from judge.consensus import ConsensusError, Decision
from judge.coordinator import Coordinator, Task

log = logging.getLogger(__name__)

BOT_STREAM = (1280, 720, 60)  # what a bot session asks for, within what the container offers
FULL_LOAD = 1.0 - 1e-9  # a container this loaded has no seat for a bot session


def bot_shape(spec: ContainerSpec) -> tuple[int, int, int]:
    """The stream a bot session asks a container for: 720p60, or the most it advertises below
    that. The game is always the reference game, whose pictures the reaction check replays."""
    width, height, fps = BOT_STREAM
    return min(width, spec.max_width), min(height, spec.max_height), min(fps, spec.max_fps)


class VerificationDesk:
    def __init__(self, coordinator: Coordinator, store: RegistryStore) -> None:
        self.coordinator = coordinator
        self.store = store
        self._inspections: dict[str, tuple[str, str]] = {}  # id -> (container, verifier)

    def enlist(self, message: p.Enlist) -> p.Enlisted:
        try:
            self.coordinator.enlist(message.verifier, message.stake)
        except ValueError as exc:  # RotationError: a stake it cannot take
            raise p.ProtocolError("bad_field", str(exc)) from None
        return p.Enlisted(message.verifier, self.coordinator.config.rotation.epoch_seconds)

    async def sweep(
        self, now: float, mono: float, live: Mapping[str, Sequence[str]] | None = None
    ) -> tuple[list[tuple[str, p.Assignment]], list[str]]:
        """Start the checks now due; decide rounds past their deadline. `live`: each
        container's sessions a live sample could be taken of (the broker's `sampleable`).
        Returns the assignments to send (verifier id, message) and the sessions demotions
        ended."""
        ended: list[str] = []
        for decision in self.coordinator.overdue(now):
            ended += await self._apply(decision, mono)
        for inspection in [i for i in self._inspections if not self._open(i)]:
            del self._inspections[inspection]
        views = {v.spec.container_id: v for v in self.store.views(mono) if v.live}
        admissions = ((c, v.admission) for c, v in views.items())
        full = {c for c, v in views.items() if v.load >= FULL_LOAD}
        idle = {c for c, v in views.items() if not v.sessions}
        tasks = self.coordinator.due(admissions, now, live, full, idle)
        out = []
        for task in tasks:
            spec = views[task.container_id].spec
            out += [
                (member, self._assignment(task, member, spec, now)) for member in task.committee
            ]
        return out, ended

    async def verdict(
        self, verifier_id: str, message: p.VerdictReport, now: float, mono: float
    ) -> list[str]:
        """A member's verdict; returns the sessions a resulting demotion ended."""
        try:
            verdict = verdict_of(verifier_id, message, now)
            decision = self.coordinator.report(message.check, verdict, now)
        except ConsensusError as exc:
            raise p.ProtocolError("unexpected", str(exc)) from None
        return [] if decision is None else await self._apply(decision, mono)

    def seat_for(self, ticket: str) -> str | None:
        """The container a verifier's bot-session ticket seats it on, if its check is open
        and the ticket has not seated a bot yet."""
        task = self.coordinator.redeemable(ticket)
        return None if task is None else task.container_id

    def seated(self, ticket: str) -> None:
        """The ticket's bot was seated: it seats no other (a refused claim leaves it usable)."""
        self.coordinator.redeem(ticket)

    def summary(self, container_id: str, now: float, recent: int = 5) -> dict[str, Any]:
        """What the dashboard shows of a container's verification: QoS and penalty now, and
        its latest decisions, each with the findings (claimed against measured) of one
        verdict on the winning side."""
        coordinator = self.coordinator
        qos, penalty = coordinator.scoreboard.quality(container_id, now)
        decisions = [d for d in coordinator.decisions if d.container_id == container_id]
        rows = []
        for decision in reversed(decisions[-recent:]):
            row = decision.to_dict()
            shown = decision.majority[:1] or decision.verdicts[:1]
            row["findings"] = [f.to_dict() for v in shown for f in v.findings]
            rows.append(row)
        return {"qos": round(qos, 3), "penalty": round(penalty, 3), "decisions": rows}

    # The registration check's relay -----------------------------------------------------------

    def challenge_route(self, verifier_id: str, inspection: str) -> str:
        """The container a verifier's challenge goes to; refused unless the verifier sits on
        that container's open registration check and names itself in the inspection id."""
        check_id, _, named = inspection.partition(".")
        task = self.coordinator.task(check_id)
        if (
            task is None
            or task.check not in (Check.REGISTRATION, Check.SPOT)
            or named != verifier_id
            or verifier_id not in task.committee
        ):
            raise p.ProtocolError(
                "forbidden",
                f"inspection {inspection!r}: no open registration or spot check of yours by "
                f"that id (ids are '<check>.{verifier_id}')",
            )
        if inspection in self._inspections:  # one challenge per member and check: no flooding
            raise p.ProtocolError("unexpected", f"inspection {inspection!r} was sent already")
        self._inspections[inspection] = (task.container_id, verifier_id)
        return task.container_id

    def reveal_route(self, verifier_id: str, inspection: str) -> str:
        """The container a verifier's reveal request goes to."""
        container_id, owner = self._inspection(inspection)
        if owner != verifier_id:
            raise p.ProtocolError("forbidden", f"inspection {inspection!r} is not yours")
        return container_id

    def answer_route(self, container_id: str, inspection: str) -> str:
        """The verifier a container's commitment or row goes back to."""
        owner_container, verifier_id = self._inspection(inspection)
        if owner_container != container_id:
            raise p.ProtocolError(
                "forbidden", f"inspection {inspection!r} is not of this container"
            )
        return verifier_id

    def _open(self, inspection: str) -> bool:
        return self.coordinator.task(inspection.partition(".")[0]) is not None

    def _inspection(self, inspection: str) -> tuple[str, str]:
        route = self._inspections.get(inspection)
        if route is None or not self._open(inspection):
            self._inspections.pop(inspection, None)
            raise p.ProtocolError("unexpected", f"inspection {inspection!r} is not open")
        return route

    def container_gone(self, container_id: str) -> None:
        self.coordinator.forget(container_id)

    async def _apply(self, decision: Decision, mono: float) -> list[str]:
        cid = decision.container_id
        view = self.store.view(cid, mono)
        if view is None:
            return []
        judgement = self.coordinator.judge(decision, view.admission)
        ended: tuple[str, ...] = ()
        log.info(
            "container %s: %s check %s, quality %s, event %s%s",
            cid,
            decision.check.value,
            decision.outcome.value,
            judgement.quality,
            judgement.event and judgement.event.value,
            f" ({judgement.reason})" if judgement.reason else "",
        )
        with contextlib.suppress(IndexerError):  # it left, or its state moved meanwhile
            await self.store.set_quality(cid, judgement.qos, judgement.penalty)
            if judgement.event is not None:
                try:
                    ended = await self.store.apply(cid, judgement.event, mono)
                except IllegalEventError as exc:
                    log.warning("container %s: judgement not applied: %s", cid, exc)
        return list(ended)

    def _assignment(self, task: Task, member: str, spec: ContainerSpec, now: float) -> p.Assignment:
        width, height, fps = bot_shape(spec)
        deadline_ms = max(1, round((task.deadline - now) * 1000))
        return p.Assignment(
            task.check_id,
            task.container_id,
            task.check.value,
            deadline_ms,
            ticket=task.tickets.get(member, ""),
            game="reference",
            width=width,
            height=height,
            fps=fps,
            session=task.session_id,
        )
