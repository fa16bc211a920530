"""The indexer's periodic round: what time alone decides.

Each `tick` expires silent containers, ends sessions that never started, claims for players
whose probes are overdue, frees seats an indexer that died had reserved on our containers,
runs the verification desk's due checks and tries waiting players again; it returns what to
send. The edge (signaling/server.py) only sleeps between ticks and delivers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Protocol

from indexer.errors import IndexerError
from judge.desk import VerificationDesk
from signaling.broker import DEMOTED, Outgoing, SessionBroker

log = logging.getLogger(__name__)


class Indexers(Protocol):
    """The indexers sharing the network (signaling/bus.py's SignalBus)."""

    @property
    def indexer_id(self) -> str:
        """This indexer's."""

    def owner_of(self, session_id: str) -> str:
        """The indexer that created a session."""

    async def alive(self, indexer_id: str) -> bool:
        """Whether that indexer still listens."""


class Sweep:
    def __init__(
        self, broker: SessionBroker, desk: VerificationDesk, indexers: Indexers | None = None
    ) -> None:
        """`indexers` None: this indexer holds the whole network."""
        self._broker = broker
        self._desk = desk
        self._indexers = indexers

    async def tick(self, now: float, wall: float, containers: Iterable[str]) -> list[Outgoing]:
        """One round at `now` (monotonic seconds) and `wall` (Unix seconds); `containers`:
        those connected to this indexer."""
        broker = self._broker
        out = await broker.expire(now) + await broker.stalled(now)
        out += await broker.probes_overdue(now)
        await self._free_orphaned_seats(containers, now)
        assignments, demoted = await self._desk.sweep(wall, now, broker.sampleable())
        out += broker.sessions_lost(demoted, DEMOTED)
        sent = [Outgoing("verifier", verifier_id, message) for verifier_id, message in assignments]
        try:
            served = await broker.serve_queue(now)
        except IndexerError as exc:  # the store failed: what the round decided still goes out
            log.warning("the queue waits for the next round: %s", exc)
            served = []
        return sent + out + served

    async def _free_orphaned_seats(self, containers: Iterable[str], now: float) -> None:
        """Free seats reserved on our containers by an indexer that died before its player
        offered: the player went with it, and the container never heard of the session. (A
        session that started ends through the container, whose End finds its indexer gone.)"""
        indexers, store = self._indexers, self._broker.store
        if indexers is None:  # one indexer: its own start timeout frees what it reserved
            return
        owners_alive: dict[str, bool] = {}
        for container_id, session_id in store.reserved(containers):
            owner = indexers.owner_of(session_id)
            if owner == indexers.indexer_id:
                continue  # ours: the start timeout frees it
            if owner not in owners_alive:
                owners_alive[owner] = await indexers.alive(owner)
            if not owners_alive[owner]:
                log.info(
                    "freeing seat %s on %s: indexer %s is gone", session_id, container_id, owner
                )
                with contextlib.suppress(IndexerError):
                    await store.release(container_id, session_id, now)
