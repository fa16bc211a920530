"""The signaling server's configuration, and the keys under which its app holds its parts.

Frozen once running; `gamecast` builds it from its options, tests from their fixtures. The
app keys live here so that the socket handlers (signaling/server.py) and the REST API
(signaling/rest.py) share them without importing each other.
"""

from __future__ import annotations

import secrets
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web

from builds.members import ArchiveLimits
from indexer.keys import KeyStore
from indexer.lifecycle import LivenessConfig
from indexer.play_queue import Relaxation
from judge.coordinator import VerificationConfig
from judge.desk import VerificationDesk
from signaling.authentication import MemoryIdOwners
from signaling.broker import SessionBroker
from signaling.bus import SignalBus

WEB_CLIENT_DIR = Path(__file__).resolve().parent.parent / "web-client"


@dataclass(frozen=True)
class ServerConfig:
    heartbeat_period: float = 2.0
    missed_heartbeats: int = 3
    web_client_dir: Path = WEB_CLIENT_DIR
    relaxation: Relaxation = field(default_factory=Relaxation)
    queue_limit: int = 1000
    # Announced specs taken as inspected (True), or containers wait for verifiers' registration
    # check (False: `gamecast up` with verifiers, `gamecast indexer --inspect`).
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
    # Verification (judge/coordinator.py): rotation, committees, scores. The genesis seeds
    # every epoch's draw and is published at /api/verifiers so anyone can recompute them.
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    # Studios' game builds (builds/): archives and metadata under this folder; None: no uploads.
    builds_dir: Path | None = None
    build_limits: ArchiveLimits = field(default_factory=ArchiveLimits)
    genesis: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def __post_init__(self) -> None:
        if self.redis_url is not None and not self.admit_on_register:
            raise ValueError(
                "inspection (admit_on_register=False) needs the in-memory registry in this "
                "release; verification across indexers sharing Redis is not done (README)"
            )

    @property
    def liveness(self) -> LivenessConfig:
        return LivenessConfig(self.heartbeat_period, self.missed_heartbeats)


BROKER = web.AppKey("broker", SessionBroker)
PEERS = web.AppKey("peers", dict)
CONFIG = web.AppKey("config", ServerConfig)
COUNTERS = web.AppKey("counters", dict)
SOCKETS = web.AppKey("sockets", weakref.WeakSet)
KEYS = web.AppKey("keys", KeyStore)
KEY_OF = web.AppKey("key_of", MemoryIdOwners)  # ids' owners when no Redis keeps them
REDIS = web.AppKey("redis", aioredis.Redis)
BUS = web.AppKey("bus", SignalBus)
DESK = web.AppKey("desk", VerificationDesk)
STARTED = web.AppKey("started", float)  # Unix seconds: the rotation's genesis time
