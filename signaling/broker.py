"""The session broker: matches players to containers, queues those nothing fits, relays their
negotiation.

Each method takes one event (a parsed message, a disconnect, the clock) and returns the
messages to deliver; the aiohttp edge (signaling/server.py) only moves bytes. Its methods are
async only because the registry store may be remote (Redis): with the in-memory store nothing
inside awaits, so each event is handled atomically on the event loop.

The broker owns the sessions its players started. With several indexers a container may be
connected to another indexer; the edge routes messages between them, and seats freed by
another indexer (a container that went silent) reach this broker through `sessions_lost`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from contracts import protocol as p
from contracts.requirements import BuildNeeds
from indexer.build_events import BuildEventRecord
from indexer.errors import IndexerError, NoContainerError
from indexer.lifecycle import Event, IllegalEventError
from indexer.play_queue import QUEUEABLE_FILTERS, PlayQueue, QueueFullError
from indexer.registry import ContainerSpec
from indexer.selection import Policy, Request
from indexer.store import RegistryStore
from judge.scores import build_fault_event
from signaling.errors import REFUSALS, error_reply
from signaling.probing import ProbeRounds
from signaling.session import IllegalTransitionError, Session, SessionStatus

log = logging.getLogger(__name__)

# Verifiers enlist with one indexer: only players' and containers' messages cross the bus.
PeerKind = Literal["player", "container", "verifier"]
# A claimed seat whose session has not started by then is freed: the page never sent its offer,
# or the container never answered it. WebRTC needs a few round trips, so 20 s is generous.
START_TIMEOUT = 20.0
DEMOTED = "a verifier demoted the container"  # why a demotion's sessions ended


class TicketDesk(Protocol):
    """Verifiers' bot-session tickets (judge/desk.py)."""

    def seat_for(self, ticket: str) -> str | None: ...

    def seated(self, ticket: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    kind: PeerKind
    peer_id: str
    message: p.Message


def request_of(message: p.Play) -> Request:
    budget = message.budget_per_minute
    return Request(
        build=message.game,
        width=message.width,
        height=message.height,
        fps=message.fps,
        budget_per_minute=math.inf if budget is None else budget,
        rtt_bound=message.rtt_bound_ms / 1000,
        policy=Policy(message.policy),
    )


class SessionBroker:
    def __init__(
        self,
        store: RegistryStore,
        queue: PlayQueue,
        new_session_id: Callable[[], str],
        *,
        probes: ProbeRounds | None = None,
        tickets: TicketDesk | None = None,
        build_needs: Callable[[str], BuildNeeds | None] | None = None,
    ) -> None:
        """`probes`: place players who can probe (indexer/placement.py) before their claim;
        None claims for every player without a coordinate (RTT unranked, every bound met).
        `tickets`: the container a verifier's bot-session ticket seats it on, if valid.
        `build_needs`: what a studio's build needs of a host and the shape it streams at (its
        manifest), None for a game without a manifest (the reference game), which streams at
        the shape the player asks for."""
        self.store = store
        self.queue = queue
        self.probes = probes
        self._tickets = tickets
        self._build_needs = build_needs
        self._marker: dict[str, bool] = {}  # player -> whether its picture carries the marker
        self._new_session_id = new_session_id
        self.sessions: dict[str, Session] = {}
        self._by_player: dict[str, str] = {}
        self._told_queued: dict[str, p.Queued] = {}  # the last place each waiting player heard
        self._trying: set[str] = set()  # waiting players whose claim is in flight

    # Containers --------------------------------------------------------------------------------

    async def register(self, message: p.Register, now: float) -> list[Outgoing]:
        try:
            await self.store.register(ContainerSpec.from_register(message), now)
        except IndexerError as exc:
            raise p.ProtocolError("conflict", str(exc)) from None
        # The lock it took as it left (`maintenance`) is lifted by its coming back: only a
        # leaving container locks itself, and registering again says it is here.
        with contextlib.suppress(IllegalEventError):  # not locked: nothing to lift
            await self.store.apply(message.container, Event.MAINTENANCE_OFF, now)
        if self.probes is not None:
            placement = self.probes.placement
            placement.join(message.container, message.region, message.probe_url)
            # The book is where coordinates are learned; a store that re-indexed the container
            # (its specs changed) would otherwise have forgotten where it is.
            coordinate = placement.placed(message.container)
            if coordinate is not None:
                await self.store.set_coordinate(message.container, coordinate)
        period = round(self.store.liveness.heartbeat_period * 1000)
        out = [Outgoing("container", message.container, p.Registered(message.container, period))]
        return out + await self.serve_queue(now)

    async def heartbeat(
        self, container_id: str, now: float, telemetry: p.Telemetry | None = None
    ) -> None:
        """Keep the container live. A heartbeat past its deadline is refused: the container
        must register again, and its seats go with its socket (`container_gone`) or the sweep."""
        try:
            await self.store.heartbeat(container_id, now, telemetry)
        except IllegalEventError:
            raise p.ProtocolError(
                "expired", f"container {container_id!r} missed its heartbeats; register again"
            ) from None

    async def container_gone(self, container_id: str, reason: str, now: float) -> list[Outgoing]:
        """The container's connection closed: no more heartbeats, so it is MISSED at once."""
        self._unprobeable(container_id)
        try:
            freed = await self.store.apply(container_id, Event.HEARTBEAT_MISSED, now)
        except IllegalEventError:  # already MISSED (expired before its socket closed)
            return []
        return self.sessions_lost(freed, reason)

    async def expire(self, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        for container_id, freed in await self.store.expire(now):
            self._unprobeable(container_id)
            out += self.sessions_lost(freed, "the container stopped sending heartbeats")
        return out

    async def stalled(self, now: float) -> list[Outgoing]:
        """End sessions claimed `START_TIMEOUT` ago that never started, freeing their seats;
        the sweep that calls this serves the queue once after (not once per session)."""
        out: list[Outgoing] = []
        late = [
            s
            for s in self.sessions.values()
            if s.status in (SessionStatus.MATCHED, SessionStatus.CONNECTING)
            and now - s.since >= START_TIMEOUT
        ]
        for session in late:
            reason = f"the session did not start within {START_TIMEOUT:g} s"
            notify = session.status is SessionStatus.CONNECTING  # the container has the offer
            out += await self._finish(session, reason, now, notify_container=notify)
        return out

    def _unprobeable(self, container_id: str) -> None:
        if self.probes is not None:
            self.probes.placement.pause(container_id)

    def sessions_lost(self, session_ids: Iterable[str], reason: str) -> list[Outgoing]:
        """Seats already freed by the store (their container went away): end the sessions
        this broker owns among them and tell their players."""
        out: list[Outgoing] = []
        for session_id in sorted(session_ids):
            session = self.sessions.get(session_id)
            if session is not None:
                out += self._forget(session, reason)
        return out

    async def answer(self, container_id: str, message: p.Answer) -> list[Outgoing]:
        session = self._container_session(container_id, message.session, SessionStatus.CONNECTING)
        if session.answered:
            raise p.ProtocolError(
                "unexpected", f"session {session.session_id} was answered already"
            )
        session.answered = True
        return [
            Outgoing("player", session.player_id, p.SessionAnswer(session.session_id, message.sdp))
        ]

    async def playing(self, container_id: str, message: p.Playing, now: float) -> list[Outgoing]:
        session = self._container_session(container_id, message.session, SessionStatus.CONNECTING)
        if not session.answered:
            raise p.ProtocolError("unexpected", f"session {session.session_id} has no answer yet")
        session.move(SessionStatus.PLAYING)
        await self.store.start(container_id, session.session_id, now)
        state = p.SessionState(session.session_id, session.status.value)
        return [Outgoing("player", session.player_id, state)]

    async def maintenance(self, container_id: str, now: float) -> list[Outgoing]:
        """The container is leaving (p.Maintenance): lock it, so nobody new is seated on it
        while it ends its sessions itself, each with the reason it gives (container_end)."""
        with contextlib.suppress(IllegalEventError):  # locked already: asking twice is no fault
            await self.store.apply(container_id, Event.MAINTENANCE_ON, now)
        return []

    async def build_event(
        self, container_id: str, message: p.BuildEvent, now: float, wall: float
    ) -> list[Outgoing]:
        """The container reports what happened to one of its builds: kept with it (bounded)
        for every indexer's dashboard, and, when its own disk was touched (a build altered or
        a folder planted), it goes to re-inspection (judge/scores.py BUILD_FAULT_EVENTS): not
        offered to new players until verifiers pass its registration check again. Sessions on
        it go on; a crash already ended its own with the container's End."""
        await self.store.record_build_event(container_id, BuildEventRecord.of(message, wall))
        view = self.store.view(container_id, now)
        event = None if view is None else build_fault_event(message.kind, view.admission)
        log.warning("container %s: build %s %s: %s%s", container_id, message.build or "?",
                    message.kind, message.detail, f" ({event.value})" if event else "")  # fmt: skip
        if event is not None:
            with contextlib.suppress(IllegalEventError):  # moved meanwhile (another indexer)
                await self.store.apply(container_id, event, now)
        return []

    async def shutdown(self, reason: str, now: float) -> list[Outgoing]:
        """This indexer is stopping: end every session it owns, telling player and container
        why, and free their seats (another indexer sharing the registry may reuse them)."""
        out: list[Outgoing] = []
        for session_id in sorted(self.sessions):
            session = self.sessions[session_id]
            out += await self._finish(session, reason, now, notify_container=True)
        return out

    async def container_end(self, container_id: str, message: p.End, now: float) -> list[Outgoing]:
        session = self._container_session(container_id, message.session, None)
        return await self._end(session, message.reason, now, notify_container=False)

    # Players -----------------------------------------------------------------------------------

    async def play(self, player_id: str, message: p.Play, now: float) -> list[Outgoing]:
        probes = self.probes
        if self._busy(player_id):
            raise p.ProtocolError(
                "unexpected", "this player already has a session or a place in the queue"
            )
        request = request_of(message)
        self._marker[player_id] = message.marker
        needs = None if self._build_needs is None else self._build_needs(message.game)
        if needs is not None:  # booked at the shape the container will stream, not the one asked
            width, height, fps = needs.shape
            request = replace(
                request, requirements=needs.requirements, width=width, height=height, fps=fps
            )
        if message.ticket:
            return await self._verification_session(player_id, message.ticket, request, now)
        if message.probe and probes is not None:
            probe = probes.start(player_id, request, now)
            if probe is not None:
                return [Outgoing("player", player_id, probe)]
        return await self._claim_or_queue(player_id, request, now)

    async def probed(self, player_id: str, message: p.Probed, now: float) -> list[Outgoing]:
        """A round of the page's probes: the next round, or the claim."""
        if self.probes is None:
            raise p.ProtocolError("unexpected", "this indexer asks no player to probe")
        outcome = self.probes.report(player_id, message)
        for container_id, coordinate in outcome.moved.items():
            with contextlib.suppress(IndexerError):  # it left meanwhile
                await self.store.set_coordinate(container_id, coordinate)
        if outcome.probe is not None:
            return [Outgoing("player", player_id, outcome.probe)]
        assert outcome.request is not None
        return await self._claim_or_queue(player_id, outcome.request, now)

    async def probes_overdue(self, now: float) -> list[Outgoing]:
        """Claim for players whose pages did not finish probing in time."""
        out: list[Outgoing] = []
        for player_id, request in self.probes.overdue(now) if self.probes else []:
            try:
                out += await self._claim_or_queue(player_id, request, now)
            except REFUSALS as exc:  # tell this one, go on with the rest
                out.append(Outgoing("player", player_id, error_reply(exc, "play")))
        return out

    async def _verification_session(
        self, player_id: str, ticket: str, request: Request, now: float
    ) -> list[Outgoing]:
        """A verifier's bot session, on the container its open check names; never queued."""
        tickets = self._tickets
        container_id = None if tickets is None else tickets.seat_for(ticket)
        if tickets is None or container_id is None:
            raise p.ProtocolError("forbidden", "this ticket opens no verification session")
        session = Session(self._new_session_id(), player_id, request, since=now)
        try:
            await self.store.claim_on(container_id, request, session.session_id, now)
        except IndexerError as exc:  # not live, full, locked, or cannot stream it
            raise p.ProtocolError("unavailable", str(exc)) from None
        tickets.seated(ticket)
        return self._seated(session, container_id)

    async def _claim_or_queue(self, player_id: str, request: Request, now: float) -> list[Outgoing]:
        try:
            return await self._match(player_id, request, now)
        except NoContainerError as exc:
            if exc.filter not in QUEUEABLE_FILTERS:
                raise p.ProtocolError("unavailable", str(exc)) from None
            try:
                self.queue.add(player_id, request, now)
            except QueueFullError as full:
                raise p.ProtocolError("unavailable", f"{exc}; {full}") from None
            return self._tell_queued(player_id, exc, request)

    async def serve_queue(self, now: float) -> list[Outgoing]:
        """Try every waiting player again, in order, with the bound their wait has earned.

        A remote store's claim awaits: a player another call is already trying is skipped,
        and one who left while their claim was in flight gets the seat freed again."""
        out: list[Outgoing] = []
        for waiting in self.queue:
            player_id = waiting.player_id
            if player_id in self._trying or player_id not in self.queue:
                continue  # another call is trying them, or matched them meanwhile
            request = self.queue.relaxed(waiting, now)
            self._trying.add(player_id)
            try:
                matched = await self._match(player_id, request, now)
            except NoContainerError as exc:
                if player_id in self.queue:
                    out += self._tell_queued(player_id, exc, request)
                continue
            finally:
                self._trying.discard(player_id)
            if player_id not in self.queue:  # gone while the claim was in flight
                session = self._player_session(player_id)
                self._forget(session, "")
                await self._release(session, now)
                continue
            self._leave_queue(player_id)
            out += matched
        return out

    async def offer(self, player_id: str, message: p.Offer) -> list[Outgoing]:
        session = self._player_session(player_id)
        self._move(session, SessionStatus.CONNECTING)
        request = session.request
        relay = p.SessionOffer(
            session.session_id, message.sdp, request.width, request.height, request.fps,
            request.build, self._marker.get(player_id, True),
        )  # fmt: skip
        assert session.container_id is not None  # set when matched
        return [Outgoing("container", session.container_id, relay)]

    async def player_end(self, player_id: str, reason: str, now: float) -> list[Outgoing]:
        if self.probes is not None and self.probes.drop(player_id):
            return [Outgoing("player", player_id, p.Ended("", reason))]
        if player_id in self.queue:
            self._leave_queue(player_id)
            return [Outgoing("player", player_id, p.Ended("", reason))]
        session = self._player_session(player_id)
        return await self._end(session, reason, now, notify_container=True)

    async def player_gone(self, player_id: str, now: float) -> list[Outgoing]:
        self._marker.pop(player_id, None)
        if not self._busy(player_id):
            return []
        return await self.player_end(player_id, "the player disconnected", now)

    # Live samples (a LIVE check, verifier/live_sample.py) ------------------------------------

    def player_stats(self, player_id: str, message: p.PlayerStatsReport, now: float) -> None:
        """Keep the page's summary with its playing session."""
        session = self._player_session(player_id)
        if session.status is not SessionStatus.PLAYING:
            raise p.ProtocolError(
                "unexpected", f"session {session.session_id} is {session.status.value}, not playing"
            )
        session.live.add_player(message.stats, now)

    def session_timings(self, container_id: str, message: p.SessionTimings) -> None:
        """Keep the container's frame timings with its session. A report that crossed the
        session's end on the way is dropped: the container could not know yet."""
        if message.session in self.sessions:
            session = self._container_session(container_id, message.session, None)
            session.live.add_timings(message)

    def sampleable(self) -> dict[str, list[str]]:
        """Container -> its playing sessions that a live check could sample now."""
        live: dict[str, list[str]] = {}
        for session in self.sessions.values():
            if session.status is SessionStatus.PLAYING and session.live.sampleable:
                assert session.container_id is not None  # set when matched
                live.setdefault(session.container_id, []).append(session.session_id)
        return live

    def sample(self, session_id: str) -> p.SessionSample | None:
        """What a live check of this session judges; None for a session this broker does
        not have (ended, or another indexer's)."""
        session = self.sessions.get(session_id)
        if session is None or session.container_id is None:
            return None
        return session.live.sample(session_id, session.container_id, session.request.fps)

    # Internals ---------------------------------------------------------------------------------

    async def _match(self, player_id: str, request: Request, now: float) -> list[Outgoing]:
        session = Session(self._new_session_id(), player_id, request, since=now)
        choice = await self.store.claim(request, session.session_id, now)
        return self._seated(session, choice.container_id)

    def _seated(self, session: Session, container_id: str) -> list[Outgoing]:
        session.container_id = container_id
        session.move(SessionStatus.MATCHED)
        self.sessions[session.session_id] = session
        self._by_player[session.player_id] = session.session_id
        matched = p.Matched(session.session_id, container_id)
        return [Outgoing("player", session.player_id, matched)]

    def _tell_queued(
        self, player_id: str, refusal: NoContainerError, request: Request
    ) -> list[Outgoing]:
        """The player's place and why, when it changed since they last heard."""
        bound = None if math.isinf(request.rtt_bound) else round(request.rtt_bound * 1000)
        news = p.Queued(self.queue.position(player_id), refusal.filter, str(refusal), bound)
        if self._told_queued.get(player_id) == news:
            return []
        self._told_queued[player_id] = news
        return [Outgoing("player", player_id, news)]

    def _busy(self, player_id: str) -> bool:
        """Whether the player has a session, a place in the queue, or probes under way."""
        probing = self.probes is not None and player_id in self.probes
        return player_id in self._by_player or player_id in self.queue or probing

    def _leave_queue(self, player_id: str) -> None:
        self.queue.remove(player_id)
        self._told_queued.pop(player_id, None)

    def _player_session(self, player_id: str) -> Session:
        session_id = self._by_player.get(player_id)
        if session_id is None:
            raise p.ProtocolError("unexpected", "no session: send play first")
        return self.sessions[session_id]

    def _container_session(
        self, container_id: str, session_id: str, status: SessionStatus | None
    ) -> Session:
        session = self.sessions.get(session_id)
        if session is None or session.container_id != container_id:
            raise p.ProtocolError("unexpected", f"session {session_id!r} is not this container's")
        if status is not None and session.status is not status:
            raise p.ProtocolError(
                "unexpected", f"session {session_id} is {session.status.value}, not {status.value}"
            )
        return session

    @staticmethod
    def _move(session: Session, target: SessionStatus) -> None:
        try:
            session.move(target)
        except IllegalTransitionError as exc:
            raise p.ProtocolError("unexpected", str(exc)) from None

    def _forget(self, session: Session, reason: str) -> list[Outgoing]:
        session.move(SessionStatus.ENDED)
        del self.sessions[session.session_id]
        del self._by_player[session.player_id]
        self._marker.pop(session.player_id, None)
        return [Outgoing("player", session.player_id, p.Ended(session.session_id, reason))]

    async def _end(
        self, session: Session, reason: str, now: float, *, notify_container: bool
    ) -> list[Outgoing]:
        """End the session and give its seat to whoever waits."""
        out = await self._finish(session, reason, now, notify_container=notify_container)
        return out + await self.serve_queue(now)

    async def _finish(
        self, session: Session, reason: str, now: float, *, notify_container: bool
    ) -> list[Outgoing]:
        out = self._forget(session, reason)
        container_id = await self._release(session, now)
        if notify_container:
            out.append(Outgoing("container", container_id, p.End(session.session_id, reason)))
        return out

    async def _release(self, session: Session, now: float) -> str:
        """Free the session's seat (unless its container's liveness freed it already)."""
        container_id = session.container_id
        assert container_id is not None  # sessions are stored once matched
        with contextlib.suppress(IndexerError):
            await self.store.release(container_id, session.session_id, now)
        return container_id
