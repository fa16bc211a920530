"""The aiohttp edge: WebSockets for players and containers, a small REST API, the web client.

Everything that decides lives in SessionBroker; this module parses frames, applies per-
connection rate limits, delivers the broker's messages and turns errors into error replies.
A malformed or hostile message costs its sender an error reply, never the server a session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
import weakref
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from indexer.registry import ContainerRecord, ContainerRegistry, can_stream
from signaling import protocol as p
from signaling.broker import Outgoing, SessionBroker
from signaling.rate_limit import TokenBucket
from streamer import input_events
from streamer.capacity import SHAPES

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


BROKER = web.AppKey("broker", SessionBroker)
PEERS = web.AppKey("peers", dict)
CONFIG = web.AppKey("config", ServerConfig)
COUNTERS = web.AppKey("counters", dict)
SOCKETS = web.AppKey("sockets", weakref.WeakSet)


def create_app(config: ServerConfig | None = None) -> web.Application:
    config = config or ServerConfig()
    app = web.Application()
    registry = ContainerRegistry(config.heartbeat_period, config.missed_heartbeats, random.Random())
    app[BROKER] = SessionBroker(registry, lambda: uuid.uuid4().hex[:12])
    app[PEERS] = {}
    app[CONFIG] = config
    app[COUNTERS] = {"errors": 0}
    app[SOCKETS] = weakref.WeakSet()
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/ws/player", player_socket)
    app.router.add_get("/ws/container", container_socket)
    app.router.add_get("/api/containers", list_containers)
    app.router.add_get("/api/sessions", list_sessions)
    app.router.add_get("/protocol.js", protocol_module)
    app.router.add_get("/", index_page)
    app.router.add_static("/static/", config.web_client_dir)
    app.cleanup_ctx.append(_expire_heartbeats)
    return app


async def _expire_heartbeats(app: web.Application) -> AsyncIterator[None]:
    async def sweep() -> None:
        while True:
            await asyncio.sleep(app[CONFIG].heartbeat_period)
            try:
                await _deliver(app, app[BROKER].expire(time.monotonic()))
            except Exception:  # the sweep must outlive any one bad round
                log.exception("heartbeat sweep failed; trying again next period")

    task = asyncio.create_task(sweep())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


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
    for item in outgoing:
        await _send(app[PEERS].get((item.kind, item.peer_id)), item.message)


async def _reply_error(
    app: web.Application, ws: web.WebSocketResponse, code: str, reason: str, ref: str = ""
) -> None:
    app[COUNTERS]["errors"] += 1
    await _send(ws, p.Error(code, reason, ref))


async def _messages(
    app: web.Application, ws: web.WebSocketResponse, role: p.Role
) -> AsyncIterator[p.Message]:
    """Yield valid messages; answer everything else with an error and keep reading."""
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
            yield p.parse_message(frame.data, role)
        except p.ProtocolError as exc:
            await _reply_error(app, ws, exc.code, exc.reason)


async def player_socket(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    ws = await _open_socket(request)
    broker = app[BROKER]
    player_id = uuid.uuid4().hex[:12]
    app[PEERS][("player", player_id)] = ws
    try:
        async for message in _messages(app, ws, "player"):
            try:
                if isinstance(message, p.Play):
                    out = broker.play(player_id, message)
                elif isinstance(message, p.Offer):
                    out = broker.offer(player_id, message)
                else:
                    assert isinstance(message, p.End)
                    out = broker.player_end(player_id, message.reason)
            except p.ProtocolError as exc:
                await _reply_error(app, ws, exc.code, exc.reason, message.type)
                continue
            await _deliver(app, out)
    finally:
        await _deliver(app, broker.player_gone(player_id))
        del app[PEERS][("player", player_id)]
    return ws


async def container_socket(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    ws = await _open_socket(request)
    broker = app[BROKER]
    container_id: str | None = None
    try:
        async for message in _messages(app, ws, "container"):
            try:
                if container_id is None:
                    if not isinstance(message, p.Register):
                        raise p.ProtocolError("unexpected", "register first")
                    out = broker.register(message, time.monotonic())
                    container_id = message.container
                    app[PEERS][("container", container_id)] = ws
                    log.info("container %s registered (%s)", container_id, ", ".join(message.games))
                elif isinstance(message, p.Heartbeat):
                    broker.heartbeat(container_id, time.monotonic(), message.telemetry)
                    continue
                elif isinstance(message, p.Answer):
                    out = broker.answer(container_id, message)
                elif isinstance(message, p.Playing):
                    out = broker.playing(container_id, message)
                elif isinstance(message, p.End):
                    out = broker.container_end(container_id, message)
                else:
                    raise p.ProtocolError("unexpected", f"already registered as {container_id!r}")
            except p.ProtocolError as exc:
                await _reply_error(app, ws, exc.code, exc.reason, message.type)
                if exc.code == "expired":  # its registration is gone: make it start over
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"expired")
                continue
            await _deliver(app, out)
    finally:
        # Only while this socket still speaks for the id: after an expiry the agent may have
        # registered again on a new socket, which this one's cleanup must not undo.
        if container_id is not None and app[PEERS].get(("container", container_id)) is ws:
            del app[PEERS][("container", container_id)]
            await _deliver(app, broker.container_gone(container_id, "the container disconnected"))
    return ws


async def list_containers(request: web.Request) -> web.Response:
    now = time.monotonic()
    rows = [_container_row(r, now) for r in request.app[BROKER].registry.records()]
    return web.json_response({"containers": rows})


def _container_row(record: ContainerRecord, now: float) -> dict[str, Any]:
    """One container for the API and the dashboard.

    `host` is what it announced at registration (null from an agent that predates host specs);
    `gpu` sums it up ("2x NVIDIA L4"), "cpu-only" without an NVIDIA driver, null when unknown.
    `gpus` holds each GPU's latest readings, or only its name and memory before the first
    heartbeat with telemetry; `host_load` is the host's latest CPU and RAM use; `load` is the
    share of the container its sessions' seats take (indexer/registry.py).
    """
    spec = record.spec
    host = None if spec.host is None else asdict(spec.host)
    gpus = host.pop("gpus") if host is not None else []
    gpu = None
    if spec.host is not None:
        models = Counter(g.name for g in spec.host.gpus)
        gpu = ", ".join(n if k == 1 else f"{k}x {n}" for n, k in models.items()) or "cpu-only"
    host_load = None
    if record.telemetry is not None and record.telemetry_at is not None:
        gpus = [asdict(g) for g in record.telemetry.gpus]
        host_load = {
            "cpu_percent": record.telemetry.cpu_percent,
            "ram_used_mib": record.telemetry.ram_used_mib,
            "age_s": round(now - record.telemetry_at, 3),
        }
    return {
        "container": spec.container_id,
        "games": sorted(spec.games),
        "encoders": list(spec.encoders),
        "max_width": spec.max_width,
        "max_height": spec.max_height,
        "max_fps": spec.max_fps,
        "availability": record.availability.value,
        # The player's choices (streamer/capacity.py SHAPES) this container would be matched to.
        "offers": [f"{w}x{h}@{fps}" for w, h, fps in SHAPES if can_stream(spec, w, h, fps)],
        "sessions": sorted(record.seats),
        "load": round(record.load, 3),
        "capacity": [asdict(c) for c in spec.capacity],
        "encoder_reason": spec.encoder_reason,
        "frames_on": spec.frames_on,
        "heartbeat_age_s": round(now - record.last_heartbeat, 3),
        "host": host,
        "gpu": gpu,
        "gpus": gpus,
        "host_load": host_load,
    }


async def list_sessions(request: web.Request) -> web.Response:
    rows = [
        {
            "session": s.session_id,
            "container": s.container_id,
            "state": s.status.value,
            "game": s.request.game,
        }
        for s in request.app[BROKER].sessions.values()
    ]
    return web.json_response({"sessions": rows, "errors": request.app[COUNTERS]["errors"]})


async def protocol_module(request: web.Request) -> web.Response:
    """The contract as an ES module, generated from signaling/protocol.py and the input schema."""
    contract = {
        "VERSION": p.VERSION,
        "MAX_MESSAGE_BYTES": p.MAX_MESSAGE_BYTES,
        "MESSAGE_TYPES": {
            t: [f for f in cls.__dataclass_fields__] for t, cls in p.MESSAGES.items()
        },
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
