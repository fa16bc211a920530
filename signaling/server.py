"""The aiohttp edge: WebSockets for players, containers and verifiers, and the app around them.

Everything that decides lives in SessionBroker; this module parses frames, applies per-
connection rate limits, delivers the broker's messages and turns errors into error replies.
A malformed or hostile message costs its sender an error reply, never the server a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable

import numpy as np
import redis.asyncio as aioredis
from aiohttp import WSCloseCode, WSMsgType, web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from builds.catalog import BuildCatalog
from builds.http import CATALOG, add_build_routes
from builds.studio_keys import STUDIO_KEYS_FILE, StudioKeys
from indexer import keys
from indexer.coordinates import VivaldiConfig
from indexer.errors import IndexerError
from indexer.keys import KeyStore
from indexer.placement import Placement
from indexer.play_queue import PlayQueue
from indexer.redis_store import RedisStore
from indexer.registry import ContainerRegistry
from indexer.selection import Requirements
from indexer.shared_registry import SharedRegistry
from indexer.store import MemoryStore, RegistryStore
from signaling import protocol as p
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
from signaling.probing import ProbeRounds
from signaling.rate_limit import TokenBucket
from signaling.rest import add_rest_routes
from signaling.verification import VerificationDesk
from verifier.coordinator import Coordinator

log = logging.getLogger(__name__)

MESSAGES_PER_SECOND = 20
MESSAGE_BURST = 40
# aiohttp closes a connection outright above this; below it, oversize messages get an error reply.
TRANSPORT_LIMIT = 16 * p.MAX_MESSAGE_BYTES


def create_app(config: ServerConfig | None = None) -> web.Application:
    config = config or ServerConfig()
    app = web.Application()
    app[CONFIG] = config
    app[STARTED] = time.time()
    if config.builds_dir is not None:  # before the broker, which reads builds' manifests
        catalog = BuildCatalog(config.builds_dir, config.build_limits)
        add_build_routes(app, catalog, StudioKeys(config.builds_dir / STUDIO_KEYS_FILE))
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
    app[KEY_OF] = {}
    if config.host_keys is not None:
        app[KEYS] = KeyStore.load(config.host_keys)
    else:
        log.warning("registrations are not authenticated: no host key store configured")
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/ws/player", player_socket)
    app.router.add_get("/ws/container", container_socket)
    app.router.add_get("/ws/verifier", verifier_socket)
    add_rest_routes(app)
    app.cleanup_ctx.append(_expire_heartbeats)
    return app


def _manifest_requirements(catalog: BuildCatalog) -> Callable[[str], Requirements | None]:
    """What a build's latest manifest asks of a host (the catalog keeps the latest in memory)."""

    def requirements(game: str) -> Requirements | None:
        record = catalog.latest(game)
        return None if record is None else record.manifest.requirements()

    return requirements


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
    requirements = None if catalog is None else _manifest_requirements(catalog)
    app[BROKER] = SessionBroker(
        store, queue, new_session_id, probes=probes, tickets=desk, requirements=requirements
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
        try:
            out = await _from_container(app, container_id, message)
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

    async def sweep() -> None:
        broker = app[BROKER]
        while True:
            await asyncio.sleep(period)
            try:
                now = time.monotonic()
                out = await broker.expire(now) + await broker.stalled(now)
                out += await broker.probes_overdue(now)
                await _free_orphaned_seats(app, now)
                desk = app[DESK]
                assignments, demoted = await desk.sweep(time.time(), now, broker.sampleable())
                out += broker.sessions_lost(demoted, "a verifier demoted the container")
                for verifier_id, assignment in assignments:
                    await _send(app[PEERS].get(("verifier", verifier_id)), assignment)
                await _deliver(app, out + await broker.serve_queue(now))
            except Exception:  # the sweep must outlive any one bad round
                log.exception("heartbeat sweep failed; trying again next period")

    task = asyncio.create_task(sweep())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _free_orphaned_seats(app: web.Application, now: float) -> None:
    """Free seats reserved on our containers by an indexer that died before its player
    offered: the player went with it, and the container never heard of the session. (A
    session that started ends through the container, whose End finds its indexer gone.)"""
    bus, store = app.get(BUS), app[BROKER].store
    if bus is None:  # one indexer: its own start timeout frees what it reserved
        return
    held = [peer_id for kind, peer_id in app[PEERS] if kind == "container"]
    owners_alive: dict[str, bool] = {}
    for container_id, session_id in store.reserved(held):
        owner = bus.owner_of(session_id)
        if owner == bus.indexer_id:
            continue  # ours: the start timeout frees it
        if owner not in owners_alive:
            owners_alive[owner] = await bus.alive(owner)
        if not owners_alive[owner]:
            log.info("freeing seat %s on %s: indexer %s is gone", session_id, container_id, owner)
            with contextlib.suppress(IndexerError):
                await store.release(container_id, session_id, now)


SHUTDOWN_REASON = "the indexer is shutting down"


async def _close_sockets(app: web.Application) -> None:
    """Tell every player and container why their sessions end, then every peer that we are
    going away; otherwise shutdown waits for them to hang up. The sockets close together: one
    peer slow to answer the close costs its own socket, not the others' turn."""
    if BROKER in app:  # absent when a shared registry never joined
        await _deliver(app, await app[BROKER].shutdown(SHUTDOWN_REASON, time.monotonic()))
    await asyncio.gather(
        *(
            ws.close(code=WSCloseCode.GOING_AWAY, message=SHUTDOWN_REASON.encode())
            for ws in list(app[SOCKETS])
        )
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


async def _deliver(app: web.Application, outgoing: list[Outgoing]) -> None:
    """To our own peers directly; to peers of other indexers over the bus."""
    bus = app.get(BUS)
    for item in outgoing:
        ws = app[PEERS].get((item.kind, item.peer_id))
        if ws is not None or bus is None:
            await _send(ws, item.message)
        elif not await bus.send(item.kind, item.peer_id, item.message.to_json()):
            log.info("no indexer has %s %s for its %s", item.kind, item.peer_id, item.message.type)


async def _reply_error(
    app: web.Application, ws: web.WebSocketResponse, code: str, reason: str, ref: str = ""
) -> None:
    app[COUNTERS]["errors"] += 1
    await _send(ws, p.Error(code, reason, ref))


async def _messages(
    app: web.Application, ws: web.WebSocketResponse, role: p.Role
) -> AsyncIterator[tuple[p.Message, str]]:
    """Yield valid messages, each with its text; answer everything else with an error and
    keep reading."""
    bucket = TokenBucket(MESSAGES_PER_SECOND, MESSAGE_BURST, time.monotonic())
    async for frame in ws:
        if frame.type is WSMsgType.ERROR:
            break
        if not bucket.allow(time.monotonic()):
            await _reply_error(
                app, ws, "rate_limited", f"more than {MESSAGES_PER_SECOND} messages per second"
            )
            continue
        if frame.type is not WSMsgType.TEXT:
            await _reply_error(app, ws, "malformed", "only text (JSON) messages are accepted")
            continue
        try:
            yield p.parse_message(frame.data, role), frame.data
        except p.ProtocolError as exc:
            await _reply_error(app, ws, exc.code, exc.reason)


async def player_socket(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    ws = await _open_socket(request)
    broker = app[BROKER]
    player_id = uuid.uuid4().hex[:12]
    app[PEERS][("player", player_id)] = ws
    bus = app.get(BUS)
    if bus is not None:
        await bus.join("player", player_id)
    try:
        async for message, _ in _messages(app, ws, "player"):
            try:
                if isinstance(message, p.Play):
                    out = await broker.play(player_id, message, time.monotonic())
                elif isinstance(message, p.Probed):
                    out = await broker.probed(player_id, message, time.monotonic())
                elif isinstance(message, p.Offer):
                    out = await broker.offer(player_id, message)
                elif isinstance(message, p.PlayerStatsReport):
                    broker.player_stats(player_id, message, time.monotonic())
                    out = []
                else:
                    assert isinstance(message, p.End)
                    out = await broker.player_end(player_id, message.reason, time.monotonic())
            except p.ProtocolError as exc:
                await _reply_error(app, ws, exc.code, exc.reason, message.type)
                continue
            except IndexerError as exc:  # the store failed us, not the player
                await _reply_error(app, ws, "unavailable", str(exc), message.type)
                continue
            await _deliver(app, out)
    finally:
        await _deliver(app, await broker.player_gone(player_id, time.monotonic()))
        del app[PEERS][("player", player_id)]
        if bus is not None:
            await bus.leave("player", player_id)
    return ws


async def container_socket(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    ws = await _open_socket(request)
    broker = app[BROKER]
    bus = app.get(BUS)
    container_id: str | None = None
    challenge = keys.new_challenge()
    await _send(ws, p.Challenge(challenge))
    try:
        async for message, text in _messages(app, ws, "container"):
            try:
                if container_id is None:
                    if not isinstance(message, p.Register):
                        raise p.ProtocolError("unexpected", "register first")
                    await _authenticate(app, message, text, challenge)
                    out = await broker.register(message, time.monotonic())
                    container_id = message.container
                    app[PEERS][("container", container_id)] = ws
                    if bus is not None:
                        await bus.join("container", container_id)
                    log.info("container %s registered (%s)", container_id, ", ".join(message.games))
                elif await _forward(app, container_id, message, text):
                    continue
                else:
                    out = await _from_container(app, container_id, message)
            except p.ProtocolError as exc:
                await _reply_error(app, ws, exc.code, exc.reason, message.type)
                if exc.code == "expired":  # its registration is gone: make it start over
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"expired")
                continue
            except IndexerError as exc:  # the store failed us, not the container
                await _reply_error(app, ws, "unavailable", str(exc), message.type)
                continue
            await _deliver(app, out)
    finally:
        # Only while this socket still speaks for the id: after an expiry the agent may have
        # registered again on a new socket, which this one's cleanup must not undo.
        if container_id is not None and app[PEERS].get(("container", container_id)) is ws:
            del app[PEERS][("container", container_id)]
            if bus is not None:
                await bus.leave("container", container_id)
            app[DESK].container_gone(container_id)
            try:
                gone = await broker.container_gone(
                    container_id, "the container disconnected", time.monotonic()
                )
            except IndexerError as exc:  # the sweep ends its sessions once the store is back
                log.warning("container %s disconnected; store says: %s", container_id, exc)
            else:
                await _deliver(app, gone)
    return ws


async def verifier_socket(request: web.Request) -> web.WebSocketResponse:
    """A verifier: enlists, receives assignments, reports verdicts (signaling/verification.py)."""
    app = request.app
    ws = await _open_socket(request)
    desk, broker = app[DESK], app[BROKER]
    verifier_id: str | None = None
    challenge = keys.new_challenge()
    await _send(ws, p.Challenge(challenge))
    try:
        async for message, text in _messages(app, ws, "verifier"):
            try:
                if isinstance(message, p.Enlist):
                    if verifier_id not in (None, message.verifier):
                        raise p.ProtocolError("unexpected", f"already enlisted as {verifier_id!r}")
                    holder = app[PEERS].get(("verifier", message.verifier))
                    if holder is not None and holder is not ws and not holder.closed:
                        raise p.ProtocolError(
                            "conflict", f"verifier {message.verifier!r} is connected already"
                        )
                    await _authenticate(app, message, text, challenge)
                    await _send(ws, desk.enlist(message))
                    verifier_id = message.verifier
                    app[PEERS][("verifier", verifier_id)] = ws
                    log.info("verifier %s enlisted (stake %d)", verifier_id, message.stake)
                elif verifier_id is None:
                    raise p.ProtocolError("unexpected", "enlist first")
                elif isinstance(message, p.InspectionChallenge | p.InspectionReveal):
                    route = (
                        desk.challenge_route
                        if isinstance(message, p.InspectionChallenge)
                        else desk.reveal_route
                    )
                    container_id = route(verifier_id, message.inspection)
                    await _deliver(app, [Outgoing("container", container_id, message)])
                else:
                    assert isinstance(message, p.VerdictReport)
                    now = time.monotonic()
                    ended = await desk.verdict(verifier_id, message, time.time(), now)
                    await _deliver(
                        app, broker.sessions_lost(ended, "a verifier demoted the container")
                    )
            except p.ProtocolError as exc:
                await _reply_error(app, ws, exc.code, exc.reason, message.type)
            except IndexerError as exc:
                await _reply_error(app, ws, "unavailable", str(exc), message.type)
    finally:
        if verifier_id is not None and app[PEERS].get(("verifier", verifier_id)) is ws:
            del app[PEERS][("verifier", verifier_id)]
    return ws


async def _from_container(
    app: web.Application, container_id: str, message: p.Message
) -> list[Outgoing]:
    """A registered container's message, from its socket or forwarded by its indexer."""
    broker = app[BROKER]
    if isinstance(message, p.Heartbeat):
        await broker.heartbeat(container_id, time.monotonic(), message.telemetry)
        return []
    if isinstance(message, p.Answer):
        return await broker.answer(container_id, message)
    if isinstance(message, p.Playing):
        return await broker.playing(container_id, message, time.monotonic())
    if isinstance(message, p.End):
        return await broker.container_end(container_id, message, time.monotonic())
    if isinstance(message, p.SessionTimings):
        broker.session_timings(container_id, message)
        return []
    if isinstance(message, p.Maintenance):
        log.info("container %s is leaving: %s", container_id, message.reason)
        return await broker.maintenance(container_id, time.monotonic())
    if isinstance(message, p.InspectionCommitment | p.InspectionRows):
        verifier_id = app[DESK].answer_route(container_id, message.inspection)
        await _send(app[PEERS].get(("verifier", verifier_id)), message)
        return []
    raise p.ProtocolError("unexpected", f"already registered as {container_id!r}")


async def _forward(app: web.Application, container_id: str, message: p.Message, text: str) -> bool:
    """Hand a message about another indexer's session to that indexer; True when sent."""
    bus = app.get(BUS)
    session_id = getattr(message, "session", "")
    if bus is None or not session_id or session_id in app[BROKER].sessions:
        return False
    owner = bus.owner_of(session_id)
    if owner == bus.indexer_id:
        return False
    if await bus.forward(owner, container_id, text):
        return True
    if isinstance(message, p.End):  # its indexer is gone: free the seat for it
        with contextlib.suppress(IndexerError):
            await app[BROKER].store.release(container_id, session_id, time.monotonic())
        return True
    return False


async def _authenticate(
    app: web.Application, message: p.Register | p.Enlist, text: str, challenge: str
) -> None:
    """Refuse a registration or an enlistment that is not signed over this connection's
    challenge by a live key, or that names a container (verifier) id another key used first."""
    store = app.get(KEYS)
    if store is None:
        return
    try:
        store.reload_if_changed()  # the CLI may have revoked a key since
        key = keys.verify_registration(
            store,
            message.key_id,
            message.signature,
            challenge,
            json.loads(text),
            answered=message.challenge,
        )
    except keys.HostKeyError as exc:
        raise p.ProtocolError(exc.code, exc.reason) from None
    except keys.KeyStoreError as exc:
        raise p.ProtocolError("unavailable", str(exc)) from None
    kind, name = (
        ("container", message.container)
        if isinstance(message, p.Register)
        else ("verifier", message.verifier)
    )
    owned = name if kind == "container" else f"verifier:{name}"  # ids of two kinds never clash
    if await _owner_of(app, owned, key.key_id) != key.key_id:
        raise p.ProtocolError(
            "conflict", f"{kind} id {name!r} belongs to another key; choose another id"
        )


async def _owner_of(app: web.Application, container_id: str, key_id: str) -> str:
    """The host key a container id belongs to: the first that registered it, network-wide
    when indexers share Redis (so no key takes over another's id through another indexer)."""
    client = app.get(REDIS)
    if client is None:
        return str(app[KEY_OF].setdefault(container_id, key_id))
    owners = f"{app[CONFIG].redis_prefix}:key_of"
    await client.hsetnx(owners, container_id, key_id)
    return str(await client.hget(owners, container_id))
