"""The REST API and the web client's files: what the network shows of itself.

Read-only views of the registry, the sessions, the verifiers and the published indexers, the
claims and telemetry a verifier checks, the protocol as an ES module for the page, and the
page itself. Nothing here changes state.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, fields
from typing import Any

from aiohttp import web

from contracts import input_events
from contracts import protocol as p
from contracts.stream_shapes import SHAPES
from indexer.store import ContainerView, RegistryStore
from signaling.config import BROKER, CONFIG, COUNTERS, DESK, STARTED


def add_rest_routes(app: web.Application) -> None:
    app.router.add_get("/api/containers", list_containers)
    app.router.add_get("/api/containers/{container}/registration", container_registration)
    app.router.add_get("/api/containers/{container}/heartbeat", container_heartbeat)
    app.router.add_get("/api/sessions", list_sessions)
    app.router.add_get("/api/sessions/{session}/sample", session_sample)
    app.router.add_get("/api/indexers", list_indexers)
    app.router.add_get("/api/verifiers", list_verifiers)
    app.router.add_get("/protocol.js", protocol_module)
    app.router.add_get("/", index_page)
    app.router.add_static("/static/", app[CONFIG].web_client_dir)


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
    `build_events` is what the container reported about its builds: the latest reports, newest
    first, each with when the indexer heard it (Unix seconds), and a count of each kind.
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
        # The player's choices (contracts/stream_shapes.py) this container would be matched to.
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
        "build_events": view.build_events.to_dict(),
    }


async def list_indexers(request: web.Request) -> web.Response:
    """Where players may connect: the published indexers, or this one when none is set."""
    bases = request.app[CONFIG].indexers or (f"{request.scheme}://{request.host}",)
    urls = [base.replace("http", "ws", 1).rstrip("/") + "/ws/player" for base in bases]
    return web.json_response({"indexers": urls})


def _container_view(request: web.Request) -> ContainerView:
    container_id = request.match_info["container"]
    view = request.app[BROKER].store.view(container_id, time.monotonic())
    if view is None:
        raise web.HTTPNotFound(text=f"container {container_id!r} is not registered")
    return view


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
    """What a live check of a session judges (contracts/protocol.py SessionSample)."""
    session_id = request.match_info["session"]
    sample = request.app[BROKER].sample(session_id)
    if sample is None:
        raise web.HTTPNotFound(
            text=f"no session {session_id!r} here: it ended, or another indexer holds it"
        )
    return web.Response(text=sample.to_json(), content_type="application/json")


async def protocol_module(request: web.Request) -> web.Response:
    """The contract as an ES module, generated from contracts/protocol.py and the input schema."""
    contract = {
        "VERSION": p.VERSION,
        "MAX_MESSAGE_BYTES": p.MAX_MESSAGE_BYTES,
        "MIN_PROBE_MS": p.MIN_PROBE_MS,
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
