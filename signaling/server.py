"""The aiohttp edge: WebSockets for players, containers and verifiers, and the app around them.

Everything that decides lives elsewhere: each socket's rules in signaling/connections.py (over
the SessionBroker and the verification desk), the periodic round in signaling/sweep.py. This
module reads frames, feeds them in, and sends, delivers (here or over the bus) and closes as
they say.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterable

import numpy as np
import redis.asyncio as aioredis
from aiohttp import WSCloseCode, WSMessage, WSMsgType, web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from builds.catalog import BuildCatalog
from builds.http import CATALOG, add_build_routes
from builds.studio_keys import STUDIO_KEYS_FILE, StudioKeys
from contracts import protocol as p
from contracts import signing
from contracts.errors import GamecastError
from contracts.requirements import BuildNeeds
from indexer.coordinates import VivaldiConfig
from indexer.errors import IndexerError
from indexer.keys import KeyStore
from indexer.placement import Placement
from indexer.play_queue import PlayQueue
from indexer.redis_store import RedisStore, StoreUnavailableError
from indexer.registry import ContainerRegistry
from indexer.shared_registry import SharedRegistry
from indexer.store import MemoryStore, RegistryStore
from judge.coordinator import Coordinator
from judge.desk import VerificationDesk
from signaling.authentication import HostKeys, MemoryIdOwners, download_verifier
from signaling.broker import Outgoing, SessionBroker
from signaling.bus import SignalBus
from signaling.config import (
    BROKER,
    BUS,
    CONFIG,
    COUNTERS,
    DESK,
    KEY_OF,
    KEYS,
    PEERS,
    REDIS,
    SOCKETS,
    STARTED,
    ServerConfig,
)
from signaling.connections import (
    Connection,
    ContainerConnection,
    Frame,
    FrameType,
    PeerKey,
    PlayerConnection,
    Reaction,
    VerifierConnection,
    container_message,
)
from signaling.probing import ProbeRounds
from signaling.rest import add_rest_routes
from signaling.sweep import Sweep

log = logging.getLogger(__name__)

# aiohttp closes a connection outright above this; below it, oversize messages get an error reply.
TRANSPORT_LIMIT = 16 * p.MAX_MESSAGE_BYTES


def create_app(config: ServerConfig | None = None) -> web.Application:
    config = config or ServerConfig()
    app = web.Application()
    app[CONFIG] = config
    app[STARTED] = time.time()
    host_keys = None if config.host_keys is None else KeyStore.load(config.host_keys)
    if config.builds_dir is not None:  # before the broker, which reads builds' manifests
        catalog = BuildCatalog(config.builds_dir, config.build_limits)
        verifier = None if host_keys is None else download_verifier(host_keys)
        studios = StudioKeys(config.builds_dir / STUDIO_KEYS_FILE)
        add_build_routes(app, catalog, studios, host_keys=verifier)
    if config.redis_url is None:
        liveness = config.liveness
        registry = ContainerRegistry(
            liveness, np.random.default_rng(), admit_on_register=config.admit_on_register
        )
        _join(app, MemoryStore(registry))
    else:
        app.cleanup_ctx.append(_shared_network)
    app[PEERS] = {}
    app[COUNTERS] = {"errors": 0}
    app[SOCKETS] = weakref.WeakSet()
    app[KEY_OF] = MemoryIdOwners()
    if host_keys is not None:
        app[KEYS] = host_keys
    else:
        log.warning("registrations are not authenticated: no host key store configured")
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/ws/player", player_socket)
    app.router.add_get("/ws/container", container_socket)
    app.router.add_get("/ws/verifier", verifier_socket)
    add_rest_routes(app)
    app.cleanup_ctx.append(_expire_heartbeats)
    return app


def _manifest_needs(catalog: BuildCatalog) -> Callable[[str], BuildNeeds | None]:
    """What a build's latest manifest asks of a host and the shape it streams at (the catalog
    keeps the latest in memory)."""

    def needs(game: str) -> BuildNeeds | None:
        record = catalog.latest(game)
        return None if record is None else record.manifest.needs()

    return needs


def _join(app: web.Application, store: RegistryStore) -> None:
    """The broker and the verification desk over one registry store."""
    config = app[CONFIG]

    # Session ids start with this indexer's id: another indexer knows whom to forward to.
    def new_session_id() -> str:
        return f"{config.indexer_id}.{uuid.uuid4().hex[:12]}"

    rng = np.random.default_rng()
    coordinator = Coordinator(config.verification, config.genesis, app[STARTED], rng)
    desk = app[DESK] = VerificationDesk(coordinator, store)
    probes = ProbeRounds(Placement(VivaldiConfig(), rng))
    queue = PlayQueue(config.relaxation, config.queue_limit)
    catalog = app.get(CATALOG)
    needs = None if catalog is None else _manifest_needs(catalog)
    app[BROKER] = SessionBroker(
        store, queue, new_session_id, probes=probes, tickets=desk, build_needs=needs
    )


async def _shared_network(app: web.Application) -> AsyncIterator[None]:
    """Join the network's shared registry and signal bus in Redis for the app's lifetime."""
    config = app[CONFIG]
    liveness = config.liveness
    assert config.redis_url is not None
    client = aioredis.from_url(config.redis_url, decode_responses=True, retry=Retry(NoBackoff(), 0))

    async def on_sessions_lost(sessions: tuple[str, ...], reason: str) -> None:
        await _deliver(app, app[BROKER].sessions_lost(sessions, reason))

    store = RedisStore(client, liveness, config.redis_prefix)
    shared = SharedRegistry(
        store,
        liveness,
        np.random.default_rng(),
        on_sessions_lost,
        admit_on_register=config.admit_on_register,
    )
    _join(app, shared)
    app[REDIS] = client

    async def deliver_local(kind: str, peer_id: str, text: str) -> None:
        ws = app[PEERS].get((kind, peer_id))
        if ws is not None and not ws.closed:
            await ws.send_str(text)

    async def forwarded(container_id: str, text: str) -> None:
        message = p.parse_message(text, "container")
        now, wall = time.monotonic(), time.time()
        try:
            out = await container_message(
                app[BROKER], app[DESK], container_id, message, now, wall=wall
            )
        except p.ProtocolError as exc:
            log.info("forwarded %s from %s refused: %s", message.type, container_id, exc.reason)
            return
        await _deliver(app, out)

    bus = SignalBus(client, config.redis_prefix, config.indexer_id, deliver_local, forwarded)
    app[BUS] = bus
    async with shared.running(), bus.running():
        log.info("indexer %s shares the network at %s", config.indexer_id, config.redis_url)
        yield
    await client.aclose()


async def _expire_heartbeats(app: web.Application) -> AsyncIterator[None]:
    """Expire silent containers and try waiting players again (their bound relaxes with time)."""
    period = min(app[CONFIG].heartbeat_period, app[CONFIG].relaxation.step, 1.0)
    rounds = Sweep(app[BROKER], app[DESK], app.get(BUS))

    async def sweep() -> None:
        while True:
            await asyncio.sleep(period)
            try:
                ours = [peer_id for kind, peer_id in app[PEERS] if kind == "container"]
                await _deliver(app, await rounds.tick(time.monotonic(), time.time(), ours))
            except Exception:  # the sweep must outlive any one bad round
                log.exception("heartbeat sweep failed; trying again next period")

    task = asyncio.create_task(sweep())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


SHUTDOWN_REASON = "the indexer is shutting down"


async def _close_sockets(app: web.Application) -> None:
    """Tell every player and container why their sessions end, then every peer that we are
    going away; otherwise shutdown waits for them to hang up. The sockets close together: one
    peer slow to answer the close costs its own socket, not the others' turn."""
    if BROKER in app:  # absent when a shared registry never joined
        try:
            await _deliver(app, await app[BROKER].shutdown(SHUTDOWN_REASON, time.monotonic()))
        except (GamecastError, RedisError, OSError) as exc:  # the sockets close all the same
            log.warning("could not tell every peer why its session ends: %s", exc)
    open_sockets = app[SOCKETS]
    sockets = list(open_sockets)
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=SHUTDOWN_REASON.encode()) for ws in sockets)
    )


async def _open_socket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=TRANSPORT_LIMIT, heartbeat=10)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    return ws


async def _send(ws: web.WebSocketResponse | None, message: p.Message) -> None:
    """Send if the socket is open; a peer whose socket is closing loses the message, nobody else."""
    if ws is None or ws.closed:
        return
    try:
        await ws.send_str(message.to_json())
    except ConnectionError as exc:  # aiohttp's ClientConnectionResetError included
        log.info("could not send %s: %s", message.type, exc)


async def _deliver(app: web.Application, outgoing: Iterable[Outgoing]) -> None:
    """To our own peers directly; to players and containers of other indexers over the bus."""
    bus = app.get(BUS)
    for item in outgoing:
        ws = app[PEERS].get((item.kind, item.peer_id))
        if ws is not None or bus is None or item.kind == "verifier":
            await _send(ws, item.message)
        elif not await bus.send(item.kind, item.peer_id, item.message.to_json()):
            log.info("no indexer has %s %s for its %s", item.kind, item.peer_id, item.message.type)


async def _act(app: web.Application, ws: web.WebSocketResponse, reaction: Reaction) -> None:
    """Do what a connection decided, in the order `Reaction` gives."""
    peers, bus = app[PEERS], app.get(BUS)
    if reaction.joined is not None:
        peers[reaction.joined] = ws
        if bus is not None and reaction.joined[0] != "verifier":
            await bus.join(*reaction.joined)
    for reply in reaction.replies:
        if isinstance(reply, p.Error):
            app[COUNTERS]["errors"] += 1
        await _send(ws, reply)
    await _deliver(app, reaction.outgoing)
    if reaction.close is not None:
        await ws.close(code=reaction.close.code, message=reaction.close.reason.encode())
    # The table may have moved on while the connection's goodbye awaited the store.
    if reaction.left is not None and peers.get(reaction.left) is ws:
        del peers[reaction.left]
        if bus is not None and reaction.left[0] != "verifier":
            await bus.leave(*reaction.left)


class _SocketPeers:
    """One socket's view of the app's table of peers (connections.Peers)."""

    def __init__(self, app: web.Application, ws: web.WebSocketResponse) -> None:
        self._peers = app[PEERS]
        self._ws = ws

    def speaks_for(self, peer: PeerKey) -> bool:
        return self._peers.get(peer) is self._ws

    def taken(self, peer: PeerKey) -> bool:
        holder = self._peers.get(peer)
        return holder is not None and holder is not self._ws and not holder.closed


def _frame(message: WSMessage) -> Frame:
    if message.type is WSMsgType.TEXT:
        return Frame(FrameType.TEXT, message.data)
    if message.type is WSMsgType.ERROR:
        return Frame(FrameType.ERROR)
    return Frame(FrameType.BINARY, message.data if isinstance(message.data, bytes) else b"")


async def _converse(
    app: web.Application, ws: web.WebSocketResponse, connection: Connection
) -> None:
    """Feed the connection every frame until it or the peer closes, then say goodbye."""
    await _act(app, ws, connection.opened())
    try:
        async for message in ws:
            reaction = await connection.receive(_frame(message), time.monotonic(), time.time())
            await _act(app, ws, reaction)
            if reaction.close is not None:
                break
    finally:
        await _act(app, ws, await connection.closed(time.monotonic()))


async def player_socket(request: web.Request) -> web.WebSocketResponse:
    ws = await _open_socket(request)
    player_id = uuid.uuid4().hex[:12]
    await _converse(
        request.app, ws, PlayerConnection(player_id, request.app[BROKER], time.monotonic())
    )
    return ws


async def container_socket(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    ws = await _open_socket(request)
    bus = app.get(BUS)
    connection = ContainerConnection(
        app[BROKER],
        app[DESK],
        signing.new_challenge(),
        time.monotonic(),
        peers=_SocketPeers(app, ws),
        authenticator=_authenticator(app),
        relay=None if bus is None else _BusRelay(bus, app[BROKER]),
    )
    await _converse(app, ws, connection)
    return ws


async def verifier_socket(request: web.Request) -> web.WebSocketResponse:
    """A verifier: enlists, receives assignments, reports verdicts (judge/desk.py)."""
    app = request.app
    ws = await _open_socket(request)
    connection = VerifierConnection(
        app[BROKER],
        app[DESK],
        signing.new_challenge(),
        time.monotonic(),
        peers=_SocketPeers(app, ws),
        authenticator=_authenticator(app),
    )
    await _converse(app, ws, connection)
    return ws


class _BusRelay:
    """A container's message about another indexer's session goes to it (connections.Relay)."""

    def __init__(self, bus: SignalBus, broker: SessionBroker) -> None:
        self._bus = bus
        self._broker = broker

    async def forward(self, container_id: str, message: p.Message, text: str, now: float) -> bool:
        bus = self._bus
        session_id = getattr(message, "session", "")
        if not session_id or session_id in self._broker.sessions:
            return False
        owner = bus.owner_of(session_id)
        if owner == bus.indexer_id:
            return False
        if await bus.forward(owner, container_id, text):
            return True
        if isinstance(message, p.End):  # its indexer is gone: free the seat for it
            with contextlib.suppress(IndexerError):
                await self._broker.store.release(container_id, session_id, now)
            return True
        return False


def _authenticator(app: web.Application) -> HostKeys | None:
    """Registrations and enlistments are checked against the host keys, where there are any."""
    store = app.get(KEYS)
    if store is None:
        return None
    client = app.get(REDIS)
    owners = app[KEY_OF] if client is None else _RedisIdOwners(client, app[CONFIG].redis_prefix)
    return HostKeys(store, owners)


class _RedisIdOwners:
    """Ids' owners network-wide, when indexers share Redis (authentication.IdOwners)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._owners = f"{prefix}:key_of"

    async def claim(self, name: str, key_id: str) -> str:
        try:
            await self._client.hsetnx(self._owners, name, key_id)
            return str(await self._client.hget(self._owners, name))
        except RedisError as exc:  # translated at this edge, as the store's own are
            raise StoreUnavailableError(f"cannot reach the ids' owners in Redis: {exc}") from exc
