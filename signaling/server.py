"""The aiohttp edge: WebSockets for players and containers, a small REST API, the web client.

Everything that decides lives in SessionBroker; this module parses frames, applies per-
connection rate limits, delivers the broker's messages and turns errors into error replies.
A malformed or hostile message costs its sender an error reply, never the server a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import uuid
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from aiohttp import WSCloseCode, WSMsgType, web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from builds.catalog import BuildCatalog
from builds.http import CATALOG, add_build_routes
from builds.members import ArchiveLimits
from builds.studio_keys import STUDIO_KEYS_FILE, StudioKeys
from indexer import keys
from indexer.coordinates import VivaldiConfig
from indexer.errors import IndexerError
from indexer.keys import KeyStore
from indexer.lifecycle import LivenessConfig
from indexer.placement import Placement
from indexer.play_queue import PlayQueue, Relaxation
from indexer.redis_store import RedisStore
from indexer.registry import ContainerRegistry
from indexer.selection import Requirements
from indexer.shared_registry import SharedRegistry
from indexer.store import ContainerView, MemoryStore, RegistryStore
from signaling import protocol as p
from signaling.broker import Outgoing, SessionBroker
from signaling.bus import SignalBus
from signaling.probing import ProbeRounds
from signaling.rate_limit import TokenBucket
from signaling.verification import VerificationDesk
from streamer import input_events
from streamer.capacity import SHAPES
from verifier.coordinator import Coordinator, VerificationConfig

log = logging.getLogger(__name__)

WEB_CLIENT_DIR = Path(__file__).resolve().parent.parent / "web-client"
MESSAGES_PER_SECOND = 20
MESSAGE_BURST = 40
# aiohttp closes a connection outright above this; below it, oversize messages get an error reply.
TRANSPORT_LIMIT = 16 * p.MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class ServerConfig:
    heartbeat_period: float = 2.0
    missed_heartbeats: int = 3
    web_client_dir: Path = WEB_CLIENT_DIR
    relaxation: Relaxation = field(default_factory=Relaxation)
    queue_limit: int = 1000
    # Until verifiers exist (issue 6) the embedded network takes announced specs as inspected.
    admit_on_register: bool = True
    # The operators' public host keys (indexer/keys.py); None accepts unsigned registrations.
    host_keys: Path | None = None
    # The published list of indexers (http://host:port) that players choose from; empty: this one.
    indexers: tuple[str, ...] = ()
    # Several indexers share one network through Redis (redis://host:port or unix:///path);
    # None: this process holds the whole registry in memory.
    redis_url: str | None = None
    redis_prefix: str = "gamecast"
    indexer_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    # Verification (verifier/coordinator.py): rotation, committees, scores. The genesis seeds
    # every epoch's draw and is published at /api/verifiers so anyone can recompute them.
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    # Studios' game builds (builds/): archives and metadata under this folder; None: no uploads.
    builds_dir: Path | None = None
    build_limits: ArchiveLimits = field(default_factory=ArchiveLimits)
    genesis: bytes = field(default_factory=lambda: secrets.token_bytes(32))


BROKER = web.AppKey("broker", SessionBroker)
PEERS = web.AppKey("peers", dict)
CONFIG = web.AppKey("config", ServerConfig)
COUNTERS = web.AppKey("counters", dict)
SOCKETS = web.AppKey("sockets", weakref.WeakSet)
KEYS = web.AppKey("keys", KeyStore)
KEY_OF = web.AppKey("key_of", dict)  # container id -> the host key that first registered it
REDIS = web.AppKey("redis", aioredis.Redis)
BUS = web.AppKey("bus", SignalBus)
DESK = web.AppKey("desk", VerificationDesk)
STARTED = web.AppKey("started", float)  # Unix seconds: the rotation's genesis time


def create_app(config: ServerConfig | None = None) -> web.Application:
    config = config or ServerConfig()
    app = web.Application()
    app[CONFIG] = config
    app[STARTED] = time.time()
    if config.builds_dir is not None:  # before the broker, which reads builds' manifests
        catalog = BuildCatalog(config.builds_dir, config.build_limits)
        add_build_routes(app, catalog, StudioKeys(config.builds_dir / STUDIO_KEYS_FILE))
    if config.redis_url is None:
        liveness = LivenessConfig(config.heartbeat_period, config.missed_heartbeats)
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
    app.router.add_get("/api/verifiers", list_verifiers)
    app.router.add_get("/api/containers/{container}/registration", container_registration)
    app.router.add_get("/api/containers/{container}/heartbeat", container_heartbeat)
    app.router.add_get("/api/containers", list_containers)
    app.router.add_get("/api/sessions", list_sessions)
    app.router.add_get("/api/sessions/{session}/sample", session_sample)
    app.router.add_get("/api/indexers", list_indexers)
    app.router.add_get("/protocol.js", protocol_module)
    app.router.add_get("/", index_page)
    app.router.add_static("/static/", config.web_client_dir)
    app.cleanup_ctx.append(_expire_heartbeats)
    return app


def _manifest_requirements(
    catalog: BuildCatalog,
) -> Callable[[str], Awaitable[Requirements | None]]:
    """What a build's latest manifest asks of a host, read off the event loop (SQLite)."""

    async def requirements(game: str) -> Requirements | None:
        record = await asyncio.to_thread(catalog.latest, game)
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
    liveness = LivenessConfig(config.heartbeat_period, config.missed_heartbeats)
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
    if bus is None or not isinstance(store, SharedRegistry):
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


async def _close_sockets(app: web.Application) -> None:
    """Tell every peer we are going away; otherwise shutdown waits for them to hang up."""
    for ws in list(app[SOCKETS]):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


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


async def list_containers(request: web.Request) -> web.Response:
    store, desk = request.app[BROKER].store, request.app[DESK]
    now = time.time()
    rows = [
        _container_row(view, store) | {"verification": desk.summary(view.spec.container_id, now)}
        for view in store.views(time.monotonic())
    ]
    return web.json_response({"containers": rows})


def _container_row(view: ContainerView, store: RegistryStore) -> dict[str, Any]:
    """One container for the API and the dashboard.

    `host` is what it announced at registration (null from an agent that predates host specs);
    `gpu` sums it up ("2x NVIDIA L4"), "cpu-only" without an NVIDIA driver, null when unknown.
    `gpus` holds each GPU's latest readings, or only its name and memory before the first
    heartbeat with telemetry; `host_load` is the host's latest CPU and RAM use; `load` is the
    share of the container its sessions' seats take; `state` is the seed's lifecycle name.
    """
    spec = view.spec
    host = None if spec.host is None else asdict(spec.host)
    gpus = host.pop("gpus") if host is not None else []
    gpu = None
    if spec.host is not None:
        models = Counter(g.name for g in spec.host.gpus)
        gpu = ", ".join(n if k == 1 else f"{k}x {n}" for n, k in models.items()) or "cpu-only"
    host_load = None
    if view.telemetry is not None and view.telemetry_age is not None:
        gpus = [asdict(g) for g in view.telemetry.gpus]
        host_load = {
            "cpu_percent": view.telemetry.cpu_percent,
            "ram_used_mib": view.telemetry.ram_used_mib,
            "age_s": round(view.telemetry_age, 3),
        }
    cid = spec.container_id
    return {
        "container": cid,
        "games": sorted(spec.games),
        "encoders": list(spec.encoders),
        "max_width": spec.max_width,
        "max_height": spec.max_height,
        "max_fps": spec.max_fps,
        "state": view.state,
        "availability": view.availability,
        # The player's choices (streamer/capacity.py SHAPES) this container would be matched to.
        "offers": [f"{w}x{h}@{fps}" for w, h, fps in SHAPES if store.can_stream(cid, w, h, fps)],
        "sessions": list(view.sessions),
        "load": round(view.load, 3),
        "capacity": [asdict(c) for c in spec.capacity],
        "encoder_reason": spec.encoder_reason,
        "frames_on": spec.frames_on,
        "region": spec.region,
        "price_per_minute": spec.price_per_minute,
        "heartbeat_age_s": None if view.heartbeat_age is None else round(view.heartbeat_age, 3),
        "host": host,
        "gpu": gpu,
        "gpus": gpus,
        "host_load": host_load,
    }


async def list_indexers(request: web.Request) -> web.Response:
    """Where players may connect: the published indexers, or this one when none is set."""
    bases = request.app[CONFIG].indexers or (f"{request.scheme}://{request.host}",)
    urls = [base.replace("http", "ws", 1).rstrip("/") + "/ws/player" for base in bases]
    return web.json_response({"indexers": urls})


def _container_view(request: web.Request) -> ContainerView:
    container_id = request.match_info["container"]
    for view in request.app[BROKER].store.views(time.monotonic()):
        if view.spec.container_id == container_id:
            return view
    raise web.HTTPNotFound(text=f"container {container_id!r} is not registered")


async def container_registration(request: web.Request) -> web.Response:
    """What a container announced, as its Register message: the claims a verifier checks."""
    body = _container_view(request).spec.to_register().to_json()
    return web.Response(text=body, content_type="application/json")


async def container_heartbeat(request: web.Request) -> web.Response:
    """The telemetry a container's last heartbeat carried, as that Heartbeat: what a spot
    check compares with its claims."""
    view = _container_view(request)
    if view.telemetry is None:
        raise web.HTTPNotFound(text=f"container {view.spec.container_id!r} sent no telemetry yet")
    return web.Response(text=p.Heartbeat(view.telemetry).to_json(), content_type="application/json")


async def list_verifiers(request: web.Request) -> web.Response:
    """Everything needed to recompute the rotation and audit the verifiers: the genesis and
    its time, the roster's stakes, each verifier's record, and the latest decisions."""
    app = request.app
    coordinator = app[DESK].coordinator
    duty = coordinator.duty(time.time())
    body = {
        "genesis": app[CONFIG].genesis.hex(),
        "genesis_at": app[STARTED],
        "epoch_seconds": coordinator.config.rotation.epoch_seconds,
        "epoch": None if duty is None else duty.epoch,
        "on_duty": [] if duty is None else list(duty.on_duty),
        "roster": [
            {"verifier": v.verifier_id, "stake": v.stake, "last_on_duty": v.last_on_duty}
            for v in coordinator.roster.verifiers
        ],
        "records": coordinator.ledger.to_dict(),
        "decisions": [d.to_dict() for d in reversed(coordinator.decisions)],
    }
    return web.json_response(body)


async def list_sessions(request: web.Request) -> web.Response:
    rows = [
        {
            "session": s.session_id,
            "container": s.container_id,
            "state": s.status.value,
            "game": s.request.build,
        }
        for s in request.app[BROKER].sessions.values()
    ]
    return web.json_response({"sessions": rows, "errors": request.app[COUNTERS]["errors"]})


async def session_sample(request: web.Request) -> web.Response:
    """What a live check of a session judges (signaling/protocol.py SessionSample)."""
    session_id = request.match_info["session"]
    sample = request.app[BROKER].sample(session_id)
    if sample is None:
        raise web.HTTPNotFound(
            text=f"no session {session_id!r} here: it ended, or another indexer holds it"
        )
    return web.Response(text=sample.to_json(), content_type="application/json")


async def protocol_module(request: web.Request) -> web.Response:
    """The contract as an ES module, generated from signaling/protocol.py and the input schema."""
    contract = {
        "VERSION": p.VERSION,
        "MAX_MESSAGE_BYTES": p.MAX_MESSAGE_BYTES,
        "MESSAGE_TYPES": {
            t: [f for f in cls.__dataclass_fields__] for t, cls in p.MESSAGES.items()
        },
        "PLAYER_STATS_FIELDS": [f.name for f in fields(p.PlayerStats)],
        "INPUT_EVENTS": input_events.EVENT_FIELDS,
        "INPUT_LIMITS": {
            "maxMessageBytes": input_events.MAX_MESSAGE_BYTES,
            "eventsPerSecond": input_events.EVENTS_PER_SECOND,
            "maxRelativeMove": input_events.MAX_RELATIVE_MOVE,
            "maxGamepadAxes": input_events.MAX_GAMEPAD_AXES,
            "maxGamepadButtons": input_events.MAX_GAMEPAD_BUTTONS,
        },
    }
    body = "".join(
        f"export const {name} = {json.dumps(value)};\n" for name, value in contract.items()
    )
    return web.Response(text=body, content_type="text/javascript")


async def index_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(request.app[CONFIG].web_client_dir / "index.html")
