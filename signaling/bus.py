"""Signaling between indexers that share a network: Redis pub/sub, one channel per peer.

A player and the container it was matched to may be connected to different indexers. Each
indexer subscribes to a channel for every peer connected to it and one for itself; a message
for a peer that is not ours is published on the peer's channel, and a container's message
about a session another indexer owns (the session id starts with the owner's id) is
forwarded to the owner, which handles it as if the container were its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

# (kind, peer id, the message's JSON): deliver to a local peer.
Deliver = Callable[[str, str, str], Awaitable[None]]
# (container id, the container's message as it sent it): handle as ours.
Forwarded = Callable[[str, str], Awaitable[None]]


class SignalBus:
    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        indexer_id: str,
        deliver: Deliver,
        forwarded: Forwarded,
    ) -> None:
        self.indexer_id = indexer_id
        self._client = client
        self._prefix = prefix
        self._deliver = deliver
        self._forwarded = forwarded
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)

    def owner_of(self, session_id: str) -> str:
        """The indexer that created a session: its id is the session id's prefix."""
        return session_id.partition(".")[0]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SignalBus]:
        await self._pubsub.subscribe(self._channel("indexer", self.indexer_id))
        task = asyncio.create_task(self._listen(), name="signal-bus")
        try:
            yield self
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self._pubsub.aclose()

    async def join(self, kind: str, peer_id: str) -> None:
        await self._pubsub.subscribe(self._channel(kind, peer_id))

    async def leave(self, kind: str, peer_id: str) -> None:
        await self._pubsub.unsubscribe(self._channel(kind, peer_id))

    async def send(self, kind: str, peer_id: str, text: str) -> bool:
        """Publish to a peer connected elsewhere; False when no indexer has it."""
        return bool(await self._client.publish(self._channel(kind, peer_id), text))

    async def alive(self, indexer_id: str) -> bool:
        """Whether that indexer still listens on the bus (a dead one's subscription is gone)."""
        ((_, listeners),) = await self._client.pubsub_numsub(self._channel("indexer", indexer_id))
        return bool(listeners)

    async def forward(self, owner: str, container_id: str, text: str) -> bool:
        body = json.dumps({"container": container_id, "text": text})
        return bool(await self._client.publish(self._channel("indexer", owner), body))

    def _channel(self, kind: str, peer_id: str) -> str:
        return f"{self._prefix}:bus:{kind}:{peer_id}"

    async def _listen(self) -> None:
        mine = self._channel("indexer", self.indexer_id)
        peers = f"{self._prefix}:bus:"
        while True:
            message = await self._pubsub.get_message(timeout=1.0)
            if message is None or message["type"] != "message":
                continue
            channel, data = message["channel"], message["data"]
            try:
                if channel == mine:
                    body = json.loads(data)
                    await self._forwarded(body["container"], body["text"])
                else:
                    kind, _, peer_id = channel.removeprefix(peers).partition(":")
                    await self._deliver(kind, peer_id, data)
            except Exception:  # one bad delivery must not stop the bus
                log.exception("signal bus: could not handle a message on %s", channel)
