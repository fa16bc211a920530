"""The registry store of an indexer that shares its network with others through Redis.

Each indexer keeps a local `Fleet` (indexer/selection.py) for fast selection and keeps it in
step by tailing the store's change feed; the store decides. A claim selects a shortlist
locally and seats the session with one script on the Redis server, which re-checks every
candidate: a local view that is a few milliseconds stale costs a refused candidate (its
state is refreshed from the refusal and the next is tried), never a double claim.

Sessions belong to the indexer their player is connected to. Seats freed elsewhere (a
container that went silent or whose socket closed on another indexer) arrive through the feed
and are handed to `on_sessions_lost`, so the owner can end them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import numpy as np

from contracts import protocol as p
from indexer.build_events import BuildEventRecord
from indexer.coordinates import Coordinate
from indexer.errors import IndexerError, NoContainerError
from indexer.lifecycle import (
    Event,
    IllegalEventError,
    Liveness,
    LivenessConfig,
    SeatState,
    admission_events,
    availability,
    offered,
    seed_state,
)
from indexer.redis_store import (
    BlockReason,
    ChangeKind,
    Claimed,
    ContainerState,
    FeedGapError,
    RedisStore,
    StoreError,
    replay,
)
from indexer.registry import ContainerSpec
from indexer.selection import Choice, Fleet, Request
from indexer.store import ContainerView

log = logging.getLogger(__name__)

SHORTLIST = 4  # candidates one claim script tries
CLAIM_ROUNDS = 3  # selections per claim, each after refreshing what the last refusal taught

SessionsLost = Callable[[tuple[str, ...], str], Awaitable[None]]


_UNSTORED = ("v", "type", "key_id", "challenge", "signature")


def profile_of(spec: ContainerSpec) -> dict[str, Any]:
    """The announced specs as stored: the registration's own fields, so any indexer rebuilds
    the same spec by parsing them."""
    wire = json.loads(spec.to_register().to_json())
    return {k: v for k, v in wire.items() if k not in _UNSTORED}


def spec_of_profile(profile: dict[str, Any]) -> ContainerSpec:
    message = p.parse_message(
        json.dumps({"v": p.VERSION, "type": "register", **profile}), "container"
    )
    assert isinstance(message, p.Register)
    return ContainerSpec.from_register(message)


class SharedRegistry:
    """`RegistryStore` over a `RedisStore`; `running()` tails the feed while the block runs."""

    def __init__(
        self,
        store: RedisStore,
        liveness: LivenessConfig,
        rng: np.random.Generator,
        on_sessions_lost: SessionsLost,
        *,
        admit_on_register: bool,
    ) -> None:
        self.store = store
        self.liveness = liveness
        self._rng = rng
        self._on_sessions_lost = on_sessions_lost
        self._admit_on_register = admit_on_register
        self.fleet = Fleet()
        self._states: dict[str, ContainerState] = {}
        self._specs: dict[str, ContainerSpec] = {}
        self._telemetry: dict[str, tuple[p.Telemetry, float]] = {}  # from our own containers
        self._heard: dict[str, float] = {}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SharedRegistry]:
        last = await self._load()
        task = asyncio.create_task(self._tail(last), name="registry-feed")
        try:
            yield self
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # RegistryStore -----------------------------------------------------------------------------

    async def register(self, spec: ContainerSpec, now: float) -> None:
        """As the in-memory registry registers, judged by this indexer's view of the store (the
        feed keeps it milliseconds behind). Sessions a late re-registration frees reach their
        owners through the feed."""
        cid = spec.container_id
        known = self._states.get(cid)
        await self.store.register(cid, profile_of(spec))
        self._heard[cid] = now
        admission = None if known is None else known.admission
        changed = self._specs.get(cid) != spec
        for event in admission_events(admission, changed, self._admit_on_register):
            # Another indexer may have moved the container already: a refused move is no error.
            with contextlib.suppress(IllegalEventError):
                await self.store.apply(cid, event)

    async def heartbeat(self, container_id: str, now: float, telemetry: p.Telemetry | None) -> None:
        await self.store.heartbeat(container_id)
        self._heard[container_id] = now
        if telemetry is not None:
            self._telemetry[container_id] = (telemetry, now)

    async def expire(self, now: float) -> list[tuple[str, tuple[str, ...]]]:
        return await self.store.expire()

    async def apply(self, container_id: str, event: Event, now: float) -> tuple[str, ...]:
        return await self.store.apply(container_id, event)

    async def claim(self, request: Request, session_id: str, now: float) -> Choice:
        for _ in range(CLAIM_ROUNDS):
            choices = self.fleet.select(request, now, self._rng, shortlist=SHORTLIST)
            result = await self.store.claim(
                session_id, [(c.container_id, c.share) for c in choices]
            )
            if isinstance(result, Claimed):
                self.fleet.set_load(result.container_id, result.load)
                return next(c for c in choices if c.container_id == result.container_id)
            for blocker in result.blockers:  # what the store knows better than our view
                if blocker.container_id not in self.fleet:
                    continue
                if blocker.reason is BlockReason.FULL:
                    self.fleet.set_load(blocker.container_id, blocker.load)
                else:
                    self.fleet.set_candidate(blocker.container_id, False)
        raise NoContainerError(
            f"every container chosen for {request.shape} was taken by another indexer first; "
            "try again",
            filter="standby",
        )

    async def start(self, container_id: str, session_id: str, now: float) -> None:
        self._set_load(container_id, await self.store.start(container_id, session_id))

    async def release(self, container_id: str, session_id: str, now: float) -> None:
        self._set_load(container_id, await self.store.release(container_id, session_id))

    async def claim_on(
        self, container_id: str, request: Request, session_id: str, now: float
    ) -> Choice:
        """Not yet: the claim script seats only candidates chosen by selection."""
        raise IndexerError(
            "verification sessions on a chosen container need the in-memory store in this "
            "release; run verifiers against an indexer without --redis"
        )

    async def set_quality(self, container_id: str, qos: float, penalty: float) -> None:
        """Shared through the store's feed, like every other change."""
        await self.store.set_quality(container_id, qos, penalty)

    async def record_build_event(self, container_id: str, record: BuildEventRecord) -> None:
        """Shared through the store's feed: every indexer's dashboard shows it."""
        await self.store.add_build_event(container_id, record)

    async def set_coordinate(self, container_id: str, coordinate: Coordinate) -> None:
        """Shared through the store's feed: every indexer's fleet learns it from there."""
        await self.store.set_coordinate(container_id, coordinate)

    def reserved(self, container_ids: Iterable[str]) -> list[tuple[str, str]]:
        """(container, session) for each RESERVED seat on these containers, as the feed says."""
        return [
            (cid, session)
            for cid in container_ids
            if (state := self._states.get(cid)) is not None
            for session, seat in state.seats.items()
            if seat is SeatState.RESERVED
        ]

    def can_stream(self, container_id: str, width: int, height: int, fps: int) -> bool:
        return self.fleet.seat_cost(container_id, width, height, fps) is not None

    def views(self, now: float) -> list[ContainerView]:
        views = (self.view(cid, now) for cid in sorted(self._states))
        return [view for view in views if view is not None]

    def view(self, container_id: str, now: float) -> ContainerView | None:
        state, spec = self._states.get(container_id), self._specs.get(container_id)
        if state is None or spec is None:
            return None
        telemetry, at = self._telemetry.get(container_id, (None, None))
        heard = self._heard.get(container_id)
        return ContainerView(
            spec=spec,
            state=seed_state(
                state.admission, state.liveness is Liveness.LIVE, state.maintenance
            ).value,
            admission=state.admission,
            live=state.liveness is Liveness.LIVE,
            availability=availability(state.maintenance, state.seats.values()).value,
            load=state.load,
            sessions=tuple(sorted(state.seats)),
            heartbeat_age=None if heard is None else now - heard,
            telemetry=telemetry,
            telemetry_age=None if at is None else now - at,
            build_events=state.build_events,
        )

    # The feed ----------------------------------------------------------------------------------

    async def _load(self) -> str:
        last, states = await self.store.snapshot()
        self._states = {}
        for state in states:
            self._states[state.container_id] = state
            self._show(state)
        return last

    async def _tail(self, last: str) -> None:
        while True:
            try:
                last, changes = await self.store.changes(last, block_ms=1000)
            except FeedGapError:
                last = await self._load()
                continue
            except StoreError as exc:
                log.warning("registry feed: %s; retrying", exc)
                await asyncio.sleep(1.0)
                continue
            for change in changes:
                replay(self._states, change)
                if change.kind is ChangeKind.REMOVED:
                    self._specs.pop(change.container_id, None)
                    if change.container_id in self.fleet:
                        self.fleet.remove(change.container_id)
                else:
                    state = self._states[change.container_id]
                    self._show(state, respecified=change.profile is not None)
                    if change.coordinate is not None and change.container_id in self.fleet:
                        self.fleet.set_coordinate(change.container_id, change.coordinate)
                if change.freed:
                    await self._on_sessions_lost(change.freed, "the container went away")

    def _show(self, state: ContainerState, *, respecified: bool = True) -> None:
        """Bring the local index in line with the store's state of one container; the spec
        is parsed again only when the change carried one (most changes are seats)."""
        cid = state.container_id
        if not state.profile:
            return
        if respecified or cid not in self.fleet:
            spec = spec_of_profile(state.profile)
            if self._specs.get(cid) != spec or cid not in self.fleet:
                self._specs[cid] = spec
                self.fleet.add(spec.profile(), state.coordinate)
        self.fleet.set_candidate(cid, offered(state.admission, state.liveness, state.maintenance))
        # The store holds deadlines in its own clock and its claim script checks them.
        self.fleet.set_deadline(cid, math.inf)
        self.fleet.set_load(cid, state.load)
        if state.qos is not None:
            self.fleet.set_quality(cid, state.qos, state.penalty or 0.0)

    def _set_load(self, container_id: str, load: float) -> None:
        if container_id in self.fleet:
            self.fleet.set_load(container_id, load)
