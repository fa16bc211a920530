"""The registry state several indexer processes share, in one Redis (DESIGN.md, "When one
machine is not enough"): every change is one server-side Lua script, so it is atomic however
many indexers race, and every script that changes a container appends to a change feed (a
Redis Stream) that each indexer tails to keep its local index in step.

Legal moves are lifecycle.TRANSITIONS' rows, passed to the scripts as arguments; the scripts
hold no table of their own. Time is the Redis server's (`TIME` inside the scripts; Redis 7
replicates script effects, so that is allowed): indexers on different machines never compare
their clocks. Heartbeats are not in the feed (they would flood it); a local index takes a
container as live until the feed says it missed, and the claim script checks the deadline
itself, so a stale local view costs at most a refused claim.

Keys, under `prefix`: `:ids` SET of container ids; `:c:<id>` HASH of profile (JSON),
admission, liveness, maintenance, deadline (server microseconds), load, qos, penalty,
coordinate (JSON), build_events (a JSON list of the latest RECENT_BUILD_EVENTS reports, each
JSON), build_count:<kind> (reports of that kind); `:seats:<id>` HASH session -> "<seat state>
<share>"; `:sessions` HASH session -> container; `:deadlines` ZSET of LIVE containers by
deadline; `:changes` STREAM.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import Enum
from string import Template
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from indexer.build_events import RECENT_BUILD_EVENTS, BuildEventRecord, BuildEvents
from indexer.coordinates import Coordinate
from indexer.errors import IndexerError
from indexer.lifecycle import (
    FULL,
    SEAT_EVENTS,
    TRANSITIONS,
    Admission,
    ContainerLifecycle,
    Event,
    IllegalEventError,
    Liveness,
    LivenessConfig,
    Maintenance,
    SeatState,
)

_T = TypeVar("_T")


class StoreError(IndexerError):
    """The Redis store failed a request (a resource problem, not our misuse)."""


class StoreUnavailableError(StoreError):
    """The Redis store cannot be reached; nothing is known to have changed."""


class UnknownContainerError(IndexerError):
    """The store holds no container by that id (never registered, or removed)."""


class RegisterAgainError(IllegalEventError):
    """A heartbeat from a container the store holds as MISSED, overdue or unknown: its seats
    are (or are about to be) void, and only a fresh registration makes it LIVE again."""


class FeedGapError(StoreError):
    """Changes after the given stream id were trimmed away: take a new snapshot."""


class ChangeKind(Enum):
    REGISTERED = "registered"  # profile and all three parts (new, or back from MISSED)
    LIFECYCLE = "lifecycle"  # one container-level event: its part, load, and freed sessions
    SEAT = "seat"  # one session's seat and the container's load
    QUALITY = "quality"
    COORDINATE = "coordinate"
    BUILD_EVENT = "build_event"  # one report of the container's about its builds, and its count
    REMOVED = "removed"


class BlockReason(Enum):
    """Why a claim passed a candidate over, in lifecycle's order of checks."""

    UNKNOWN = "unknown"
    NOT_ADMITTED = "not_admitted"
    MISSED = "missed"
    OVERDUE = "overdue"  # LIVE, but past its deadline by the server's clock
    LOCKED = "locked"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class Claimed:
    container_id: str
    load: float  # the container's load with this seat
    existing: bool = False  # the session held this seat already (a retried claim)


@dataclass(frozen=True, slots=True)
class Blocker:
    container_id: str
    reason: BlockReason
    load: float


@dataclass(frozen=True, slots=True)
class Refused:
    """No candidate took the session; each one's state, to refresh the local index."""

    blockers: tuple[Blocker, ...]


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change feed; fields the change did not touch are None (or ())."""

    stream_id: str
    container_id: str
    kind: ChangeKind
    event: Event | None = None
    profile: dict[str, Any] | None = None
    admission: Admission | None = None
    liveness: Liveness | None = None
    maintenance: Maintenance | None = None
    load: float | None = None
    session_id: str | None = None
    seat: SeatState | None = None
    freed: tuple[str, ...] = ()
    qos: float | None = None
    penalty: float | None = None
    coordinate: Coordinate | None = None
    build_event: BuildEventRecord | None = None
    build_count: int | None = None  # of build_event's kind, the store's count


@dataclass(frozen=True, slots=True)
class ContainerState:
    container_id: str
    profile: dict[str, Any]
    admission: Admission
    liveness: Liveness
    maintenance: Maintenance
    load: float
    seats: dict[str, SeatState]
    qos: float | None = None
    penalty: float | None = None
    coordinate: Coordinate | None = None
    build_events: BuildEvents = field(default_factory=BuildEvents)
    # Seconds to the deadline by the server's clock when read (None when learnt from the feed)
    deadline_left: float | None = field(default=None, compare=False)


def replay(states: dict[str, ContainerState], change: Change) -> None:
    """Bring `snapshot()`'s states up to date with one change; apply the feed in order."""
    cid = change.container_id
    old = states.get(cid)
    if change.kind is ChangeKind.REMOVED:
        states.pop(cid, None)
        return
    if old is None:  # a first registration: the lifecycle's first state, filled in below
        old = ContainerState(cid, {}, _FIRST.admission, _FIRST.liveness, _FIRST.maintenance, 0, {})
    seats = {s: state for s, state in old.seats.items() if s not in change.freed}
    if change.session_id is not None and change.seat is not None:
        seats.pop(change.session_id, None)
        if change.seat is not SeatState.FREE:
            seats[change.session_id] = change.seat
    build_events = old.build_events
    if change.build_event is not None:
        build_events = build_events.add(change.build_event, change.build_count)
    states[cid] = replace(
        old,
        profile=_pick(change.profile, old.profile),
        admission=_pick(change.admission, old.admission),
        liveness=_pick(change.liveness, old.liveness),
        maintenance=_pick(change.maintenance, old.maintenance),
        load=_pick(change.load, old.load),
        seats=seats,
        qos=_pick(change.qos, old.qos),
        penalty=_pick(change.penalty, old.penalty),
        coordinate=_pick(change.coordinate, old.coordinate),
        build_events=build_events,
        deadline_left=None if change.kind is ChangeKind.REGISTERED else old.deadline_left,
    )


def _pick(new: _T | None, old: _T) -> _T:
    return old if new is None else new


# Shared by every script. KEYS start with the four shared keys; rows of the table come last
# in ARGV as (event, part, source, target); `move` is the table's one interpreter. `$NAME`s
# are filled in from the enums (string.Template; `$$` is a `$`). Numbers leave as strings:
# Redis would truncate a Lua number to an integer.
_PRELUDE = """
local SESSIONS, DEADLINES, CHANGES, IDS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local LIVE, FREE, READY, OPEN = '$LIVE', '$FREE', '$READY', '$OPEN'
local function moves(first)
  local t = {}
  for i = first, #ARGV, 4 do
    local e, p = ARGV[i], ARGV[i + 1]
    t[e] = t[e] or {}
    t[e][p] = t[e][p] or {}
    t[e][p][ARGV[i + 2]] = ARGV[i + 3]
  end
  return t
end
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function num(x) return string.format('%.17g', x) end
local function feed(cid, kind, ...)
  redis.call('XADD', CHANGES, 'MAXLEN', '~', '$MAXLEN', '*', 'container', cid, 'kind', kind, ...)
end
local function reload(c, seats)
  local load = 0
  for _, v in ipairs(redis.call('HVALS', seats)) do
    load = load + tonumber(string.match(v, ' (%S+)$$'))
  end
  redis.call('HSET', c, 'load', num(load))
  return num(load)
end
-- A container-level event through the table: nil and the part's state when no row fits it.
-- Else the move (LIVE restarts the deadline, leaving LIVE drops it) and every seat move the
-- event's seat rows make; returns the freed sessions, the part and its new state.
local function move(T, event, cid, c, seats, now, timeout)
  local part, rows
  for p, r in pairs(T[event]) do
    if p ~= 'seat' then part, rows = p, r end
  end
  local current = redis.call('HGET', c, part)
  local target = rows[current]
  if not target then return nil, current end
  redis.call('HSET', c, part, target)
  if part == 'liveness' and target == LIVE then
    redis.call('HSET', c, 'deadline', num(now + timeout))
    redis.call('ZADD', DEADLINES, num(now + timeout), cid)
  elseif part == 'liveness' then
    redis.call('ZREM', DEADLINES, cid)
  end
  local freed, seat_rows, held = {}, T[event]['seat'] or {}, redis.call('HGETALL', seats)
  for i = 1, #held, 2 do
    local state, share = string.match(held[i + 1], '^(%S+) (%S+)$$')
    local to = seat_rows[state]
    if to == FREE then
      redis.call('HDEL', seats, held[i])
      redis.call('HDEL', SESSIONS, held[i])
      table.insert(freed, held[i])
    elseif to then
      redis.call('HSET', seats, held[i], to .. ' ' .. share)
    end
  end
  return freed, part, target
end
local function feed_move(cid, event, c, seats, freed, part, target)
  feed(cid, 'lifecycle', 'event', event, part, target, 'freed', cjson.encode(freed),
    'load', reload(c, seats))
  return freed
end
"""

# apply: one container-level event, all or nothing: the table's row for its part's state, or
# a refusal that changed nothing; a heartbeat past the deadline (server clock) is refused too.
# ARGV: cid, event, timeout_us, rows. KEYS: shared, c, seats.
_APPLY = """
local cid, event, c, seats = ARGV[1], ARGV[2], KEYS[5], KEYS[6]
if redis.call('EXISTS', c) == 0 then return {'unknown'} end
local now = now_us()
local f = redis.call('HMGET', c, 'liveness', 'deadline')
if event == '$HEARTBEAT' and f[1] == LIVE and now > tonumber(f[2]) then
  return {'overdue', num((now - tonumber(f[2])) / 1e6)}
end
local freed, part, target = move(moves(4), event, cid, c, seats, now, tonumber(ARGV[3]))
if not freed then return {'illegal', part} end
if event ~= '$HEARTBEAT' then feed_move(cid, event, c, seats, freed, part, target) end
return {'ok', freed}
"""

# register: an announcement, atomically. New: the lifecycle's first state. Known: admission
# and lock survive; LIVE but overdue misses first (its freed seats are returned, once), then
# MISSED comes back by REGISTERED and LIVE (a failover to another indexer) takes it as a
# heartbeat. ARGV: cid, profile, timeout_us, first admission/liveness/maintenance, rows.
_REGISTER = """
local cid, c, seats, timeout = ARGV[1], KEYS[5], KEYS[6], tonumber(ARGV[3])
local T, now, freed = moves(7), now_us(), {}
if redis.call('EXISTS', c) == 0 then
  redis.call('HSET', c, 'profile', ARGV[2], 'admission', ARGV[4], 'liveness', ARGV[5],
    'maintenance', ARGV[6], 'deadline', num(now + timeout), 'load', num(0))
  redis.call('ZADD', DEADLINES, num(now + timeout), cid)
  redis.call('SADD', IDS, cid)
else
  redis.call('HSET', c, 'profile', ARGV[2])
  local f = redis.call('HMGET', c, 'liveness', 'deadline')
  if f[1] == LIVE and now > tonumber(f[2]) then
    local event = '$HEARTBEAT_MISSED'
    freed = feed_move(cid, event, c, seats, move(T, event, cid, c, seats, now, timeout))
  end
  local live = redis.call('HGET', c, 'liveness') == LIVE
  move(T, live and '$HEARTBEAT' or '$REGISTERED', cid, c, seats, now, timeout)
end
local f = redis.call('HMGET', c, 'admission', 'liveness', 'maintenance', 'load')
feed(cid, 'registered', 'profile', ARGV[2], 'admission', f[1], 'liveness', f[2],
  'maintenance', f[3], 'load', f[4])
return freed
"""

# claim: seats a session on the first ranked candidate that is READY, LIVE before its deadline
# (server clock), OPEN and has room for the share, in one step, so no two claims overbook a
# container. A session holds one seat in all: seated on a candidate already, the claim returns
# that seat (a retry); seated elsewhere, it is refused. Else each candidate's blocker and load.
# ARGV: session, n, (cid, share) x n, rows. KEYS: shared, (c, seats) x n.
_CLAIM = """
local session, n = ARGV[1], tonumber(ARGV[2])
local T, now, refused = moves(3 + 2 * n), now_us(), {}
local seated = redis.call('HGET', SESSIONS, session)
if seated then
  for i = 1, n do
    if ARGV[1 + 2 * i] == seated then
      return {'existing', seated, redis.call('HGET', KEYS[3 + 2 * i], 'load')}
    end
  end
  return {'elsewhere', seated}
end
for i = 1, n do
  local cid, share, c, seats = ARGV[1 + 2 * i], ARGV[2 + 2 * i], KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local f = redis.call('HMGET', c, 'admission', 'liveness', 'maintenance', 'deadline', 'load')
  local load, why = tonumber(f[5] or '0'), nil
  if not f[1] then why = 'unknown'
  elseif f[1] ~= READY then why = 'not_admitted'
  elseif f[2] ~= LIVE then why = 'missed'
  elseif now > tonumber(f[4]) then why = 'overdue'
  elseif f[3] ~= OPEN then why = 'locked'
  elseif load + tonumber(share) > $FULL then why = 'full'
  else
    local seat = T['$CLAIMED']['seat'][FREE]
    redis.call('HSET', seats, session, seat .. ' ' .. share)
    redis.call('HSET', SESSIONS, session, cid)
    load = reload(c, seats)
    feed(cid, 'seat', 'session', session, 'seat', seat, 'load', load)
    return {'claimed', cid, load}
  end
  table.insert(refused, cid)
  table.insert(refused, why)
  table.insert(refused, num(load))
end
return {'refused', refused}
"""

# seat: one seat event (SESSION_STARTED, SESSION_ENDED) through the table's seat rows, all or
# nothing. ARGV: cid, session, event, rows. KEYS: shared, c, seats.
_SEAT = """
local cid, session, c, seats = ARGV[1], ARGV[2], KEYS[5], KEYS[6]
if redis.call('EXISTS', c) == 0 then return {'unknown'} end
local held = redis.call('HGET', seats, session)
local state, share = FREE, nil
if held then state, share = string.match(held, '^(%S+) (%S+)$$') end
local target = (moves(4)[ARGV[3]]['seat'] or {})[state]
if not target then return {'illegal', state} end
if target == FREE then
  redis.call('HDEL', seats, session)
  redis.call('HDEL', SESSIONS, session)
else
  redis.call('HSET', seats, session, target .. ' ' .. share)
end
local load = reload(c, seats)
feed(cid, 'seat', 'session', session, 'seat', target, 'load', load)
return {'ok', load}
"""

# overdue: read-only; up to ARGV[1] LIVE containers past their deadline by the server clock.
_OVERDUE = """
return redis.call('ZRANGEBYSCORE', DEADLINES, '-inf', '(' .. num(now_us()), 'LIMIT', 0, ARGV[1])
"""

# expire: HEARTBEAT_MISSED for each given container still LIVE and past its deadline (server
# clock), atomically, so however many indexers sweep at once each expiry and the sessions it
# frees go to exactly one of them. ARGV: n, cid x n, rows. KEYS: shared, (c, seats) x n.
_EXPIRE = """
local n = tonumber(ARGV[1])
local T, now, out = moves(2 + n), now_us(), {}
for i = 1, n do
  local cid, c, seats = ARGV[1 + i], KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local f = redis.call('HMGET', c, 'liveness', 'deadline')
  if f[1] == LIVE and now > tonumber(f[2]) then
    table.insert(out, cid)
    local event = '$HEARTBEAT_MISSED'
    table.insert(out, feed_move(cid, event, c, seats, move(T, event, cid, c, seats, now, 0)))
  end
end
return out
"""

# remove: forgets a container and frees its seats in one step (a store's decision, not a move
# of the table). ARGV: cid. KEYS: shared, c, seats.
_REMOVE = """
local cid, c, seats = ARGV[1], KEYS[5], KEYS[6]
if redis.call('EXISTS', c) == 0 then return false end
local freed = redis.call('HKEYS', seats)
for _, session in ipairs(freed) do redis.call('HDEL', SESSIONS, session) end
redis.call('DEL', c, seats)
redis.call('ZREM', DEADLINES, cid)
redis.call('SREM', IDS, cid)
feed(cid, 'removed', 'freed', cjson.encode(freed))
return freed
"""

# fields: sets a known container's fields and tells the feed, in one step.
# ARGV: cid, kind, (field, value) pairs. KEYS: shared, c.
_FIELDS = """
if redis.call('EXISTS', KEYS[5]) == 0 then return 0 end
redis.call('HSET', KEYS[5], unpack(ARGV, 3))
feed(ARGV[1], ARGV[2], unpack(ARGV, 3))
return 1
"""

# build_event: keeps one report of a known container's about its builds, the latest ARGV[4]
# only, counts its kind and tells the feed, in one step. ARGV: cid, kind, report (JSON), keep.
# KEYS: shared, c.
_BUILD_EVENT = """
local cid, kind, report, c = ARGV[1], ARGV[2], ARGV[3], KEYS[5]
if redis.call('EXISTS', c) == 0 then return 0 end
local kept = cjson.decode(redis.call('HGET', c, 'build_events') or '[]')
table.insert(kept, report)
while #kept > tonumber(ARGV[4]) do table.remove(kept, 1) end
redis.call('HSET', c, 'build_events', cjson.encode(kept))
local n = redis.call('HINCRBY', c, 'build_count:' .. kind, 1)
feed(cid, 'build_event', 'build_event', report, 'build_count', n)
return 1
"""

_NAMES = {
    "LIVE": Liveness.LIVE.value,
    "FREE": SeatState.FREE.value,
    "READY": Admission.READY.value,
    "OPEN": Maintenance.OPEN.value,
    "HEARTBEAT": Event.HEARTBEAT.value,
    "HEARTBEAT_MISSED": Event.HEARTBEAT_MISSED.value,
    "REGISTERED": Event.REGISTERED.value,
    "CLAIMED": Event.CLAIMED.value,
    "FULL": repr(FULL),
}
_PART: dict[type[Enum], str] = {
    Admission: "admission",
    Liveness: "liveness",
    Maintenance: "maintenance",
    SeatState: "seat",
}
_FIRST = ContainerLifecycle("", LivenessConfig(1.0, 1), 0.0)  # a first registration's state


@functools.cache
def _rows(*events: Event) -> tuple[str, ...]:
    """The table's rows for `events`, flat, as the scripts read them (computed once each:
    every heartbeat and claim sends them)."""
    return tuple(
        value
        for t in TRANSITIONS
        if t.event in events
        for value in (t.event.value, _PART[type(t.source)], t.source.value, t.target.value)
    )


_REGISTER_ROWS = _rows(Event.REGISTERED, Event.HEARTBEAT, Event.HEARTBEAT_MISSED)


class RedisStore:
    """The registry state shared by several indexers; every change is one atomic script.

    `client` must decode responses (`redis.asyncio.Redis(..., decode_responses=True)`) and
    speak RESP2, redis-py's default. Deadlines are set from this indexer's `liveness`.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        liveness: LivenessConfig,
        prefix: str = "gamecast",
        feed_length: int = 100_000,
    ) -> None:
        options = client.connection_pool.connection_kwargs
        if not options.get("decode_responses") or options.get("protocol") not in (None, 2, "2"):
            raise ValueError("RedisStore needs a client with decode_responses=True over RESP2")
        self._client = client
        self._prefix = prefix
        self._timeout_us = str(round(liveness.timeout * 1e6))
        self._where = options.get("path") or f"{options.get('host')}:{options.get('port')}"
        self._shared = [f"{prefix}:{key}" for key in ("sessions", "deadlines", "changes", "ids")]

        def script(body: str) -> Any:
            lua = Template(_PRELUDE + body).substitute(_NAMES, MAXLEN=feed_length)
            return client.register_script(lua)

        self._apply, self._register, self._claim = script(_APPLY), script(_REGISTER), script(_CLAIM)
        self._seat, self._overdue, self._expire = script(_SEAT), script(_OVERDUE), script(_EXPIRE)
        self._remove, self._fields = script(_REMOVE), script(_FIELDS)
        self._build_event = script(_BUILD_EVENT)

    async def register(self, container_id: str, profile: Mapping[str, Any]) -> tuple[str, ...]:
        """Store a container's announced `profile` (JSON-able) and make it LIVE with a fresh
        deadline; a known container keeps its admission and lock, a new one starts as a new
        ContainerLifecycle does. Returns the sessions the caller must end: a container LIVE
        but past its deadline misses here first (that expiry is reported once, here)."""
        first = (_FIRST.admission.value, _FIRST.liveness.value, _FIRST.maintenance.value)
        args = [container_id, json.dumps(dict(profile)), self._timeout_us, *first, *_REGISTER_ROWS]
        return tuple(await self._run(self._register, self._keys(container_id), args))

    async def heartbeat(self, container_id: str) -> None:
        """Restart the container's deadline; RegisterAgainError if it is MISSED, overdue or
        unknown (an overdue one is left for `expire` or `register` to free, once)."""
        await self.apply(container_id, Event.HEARTBEAT)

    async def apply(self, container_id: str, event: Event) -> tuple[str, ...]:
        """Apply a container-level event by the table; returns the sessions whose seats it freed
        (HEARTBEAT_MISSED frees all). IllegalEventError, as lifecycle's, when no row fits."""
        if event in SEAT_EVENTS:
            raise ValueError(f"{event.value} moves a seat: use claim, start or release")
        args = [container_id, event.value, self._timeout_us, *_rows(event)]
        reply = await self._run(self._apply, self._keys(container_id), args)
        name = f"container {container_id!r} cannot take {event.value}"
        if reply[0] == "ok":
            return tuple(reply[1])
        if event is Event.HEARTBEAT:
            if reply[0] == "unknown":
                raise RegisterAgainError(f"{name}: the store does not know it; register again")
            if reply[0] == "illegal":
                raise RegisterAgainError(f"{name} while {reply[1]}: seats freed; register again")
            late = f"{float(reply[1]):.3f} s past its deadline"
            raise RegisterAgainError(f"{name} while live but {late}; register again")
        if reply[0] == "unknown":
            raise UnknownContainerError(f"{name}: it is not in the store; register it first")
        raise IllegalEventError(f"{name} while {reply[1]}")

    async def claim(
        self, session_id: str, candidates: Sequence[tuple[str, float]]
    ) -> Claimed | Refused:
        """Seat `session_id` on the first of the ranked (container id, share) candidates that
        can take it, atomically; else say what blocked each, to refresh the local index."""
        if any(not 0 < share <= 1 for _, share in candidates):
            raise ValueError(f"a seat takes a share in (0, 1] of its container: {candidates}")
        if not candidates:
            return Refused(())
        keys, args = list(self._shared), [session_id, str(len(candidates))]
        for container_id, share in candidates:
            keys += self._keys(container_id)[4:]
            args += [container_id, repr(float(share))]
        reply = await self._run(self._claim, keys, [*args, *_rows(Event.CLAIMED)])
        if reply[0] in ("claimed", "existing"):
            return Claimed(reply[1], float(reply[2]), existing=reply[0] == "existing")
        if reply[0] == "elsewhere":
            raise IllegalEventError(
                f"session {session_id!r} holds a seat on container {reply[1]!r}: release it first"
            )
        flat = reply[1]
        return Refused(
            tuple(
                Blocker(flat[i], BlockReason(flat[i + 1]), float(flat[i + 2]))
                for i in range(0, len(flat), 3)
            )
        )

    async def start(self, container_id: str, session_id: str) -> float:
        """The session started (RESERVED -> IN_SESSION); returns the container's load."""
        return await self._seat_event(container_id, session_id, Event.SESSION_STARTED)

    async def release(self, container_id: str, session_id: str) -> float:
        """The session ended or never started (-> FREE); returns the container's load."""
        return await self._seat_event(container_id, session_id, Event.SESSION_ENDED)

    async def set_quality(self, container_id: str, qos: float, penalty: float) -> None:
        fields = {"qos": repr(float(qos)), "penalty": repr(float(penalty))}
        await self._set(container_id, ChangeKind.QUALITY, fields)

    async def set_coordinate(self, container_id: str, coordinate: Coordinate) -> None:
        value = {
            "vec": list(coordinate.vec),
            "height": coordinate.height,
            "error": coordinate.error,
        }
        await self._set(container_id, ChangeKind.COORDINATE, {"coordinate": json.dumps(value)})

    async def add_build_event(self, container_id: str, record: BuildEventRecord) -> None:
        """Keep the container's report (its latest RECENT_BUILD_EVENTS) and count its kind."""
        report = json.dumps(record.to_dict(), separators=(",", ":"))
        args = [container_id, record.kind, report, RECENT_BUILD_EVENTS]
        if not await self._run(self._build_event, self._keys(container_id)[:5], args):
            raise UnknownContainerError(f"container {container_id!r} is not in the store")

    async def remove(self, container_id: str) -> tuple[str, ...]:
        """Forget the container; returns the sessions whose seats it held."""
        freed = await self._run(self._remove, self._keys(container_id), [container_id])
        if freed is None:
            raise UnknownContainerError(f"container {container_id!r} is not in the store")
        return tuple(freed)

    async def expire(self, limit: int = 1000) -> list[tuple[str, tuple[str, ...]]]:
        """Mark up to `limit` LIVE containers past their deadline MISSED, freeing their seats;
        returns (container, freed sessions) for each, and to no other caller."""
        overdue = await self._run(self._overdue, self._shared, [limit])
        if not overdue:
            return []
        keys = list(self._shared)
        for container_id in overdue:
            keys += self._keys(container_id)[4:]
        args = [len(overdue), *overdue, *_rows(Event.HEARTBEAT_MISSED)]
        out = await self._run(self._expire, keys, args)
        return [(out[i], tuple(out[i + 1])) for i in range(0, len(out), 2)]

    async def snapshot(self) -> tuple[str, list[ContainerState]]:
        """Every container, and the feed's last id at that same instant: `changes` after that
        id is what happened since, none missed and none twice."""
        ids_key, changes_key = self._shared[3], self._shared[2]
        reply: Any = None
        with self._translated():
            members: Any = await self._client.smembers(ids_key)
            ids: list[str] = sorted(members)
            for _ in range(10):  # until no registration or removal slips in between
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.time()
                    pipe.xrevrange(changes_key, count=1)
                    pipe.smembers(ids_key)
                    for container_id in ids:
                        pipe.hgetall(self._keys(container_id)[4])
                        pipe.hgetall(self._keys(container_id)[5])
                    reply = await pipe.execute()
                if sorted(reply[2]) == ids:
                    break
                ids = sorted(reply[2])
            else:
                raise StoreError(f"containers at {self._where} kept changing; snapshot again")
        now_us = reply[0][0] * 1_000_000 + reply[0][1]
        last = reply[1][0][0] if reply[1] else "0-0"
        states = [_state(c, reply[3 + 2 * i], reply[4 + 2 * i], now_us) for i, c in enumerate(ids)]
        return last, states

    async def changes(
        self, after_id: str, block_ms: int = 0, count: int = 1000
    ) -> tuple[str, list[Change]]:
        """Up to `count` changes after `after_id`, in order, and the id to pass next; waits up
        to `block_ms` for one when there is none (0: does not wait). FeedGapError when some
        were trimmed away (the feed keeps about `feed_length`): snapshot again."""
        key = self._shared[2]
        with self._translated():
            reply: Any = await self._client.xread({key: after_id}, count, block_ms or None)
            entries: list[tuple[str, dict[str, str]]] = reply[0][1] if reply else []
            if entries or await self._client.exists(key):
                info: Any = await self._client.xinfo_stream(key)
                # Trimmed ids all precede the first kept one: at the boundary itself this
                # asks for a snapshot it did not need, and it never misses a gap.
                first = (info["first-entry"] or [info["last-generated-id"]])[0]
                trimmed = info["entries-added"] > info["length"]
                if trimmed and _stream_order(after_id) < _stream_order(first):
                    raise FeedGapError(
                        f"changes after {after_id} were trimmed from {key}: snapshot again"
                    )
        last = entries[-1][0] if entries else after_id
        return last, [_change(stream_id, fields) for stream_id, fields in entries]

    def _keys(self, container_id: str) -> list[str]:
        container = [f"{self._prefix}:c:{container_id}", f"{self._prefix}:seats:{container_id}"]
        return self._shared + container

    async def _seat_event(self, container_id: str, session_id: str, event: Event) -> float:
        args = [container_id, session_id, event.value, *_rows(event)]
        reply = await self._run(self._seat, self._keys(container_id), args)
        if reply[0] == "unknown":
            raise UnknownContainerError(f"container {container_id!r} is not in the store")
        if reply[0] == "illegal":
            raise IllegalEventError(
                f"container {container_id!r} cannot take {event.value} for session "
                f"{session_id!r} while its seat is {reply[1]}"
            )
        return float(reply[1])

    async def _set(self, container_id: str, kind: ChangeKind, fields: dict[str, str]) -> None:
        args = [container_id, kind.value, *(x for pair in fields.items() for x in pair)]
        if not await self._run(self._fields, self._keys(container_id)[:5], args):
            raise UnknownContainerError(f"container {container_id!r} is not in the store")

    async def _run(self, script: Any, keys: list[str], args: Sequence[object]) -> Any:
        with self._translated():
            return await script(keys=keys, args=args)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StoreUnavailableError(
                f"the Redis store at {self._where} is unreachable: {exc}; is redis-server running?"
            ) from exc
        except RedisError as exc:
            raise StoreError(f"the Redis store at {self._where} failed a request: {exc}") from exc


def _stream_order(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _optional(kind: Any, value: str | None) -> Any:
    return None if value is None else kind(value)


def _coordinate(value: str | None) -> Coordinate | None:
    if value is None:
        return None
    fields = json.loads(value)
    return Coordinate(tuple(fields["vec"]), fields["height"], fields["error"])


def _state(cid: str, h: dict[str, str], seats: dict[str, str], now_us: int) -> ContainerState:
    return ContainerState(
        cid,
        json.loads(h["profile"]),
        Admission(h["admission"]),
        Liveness(h["liveness"]),
        Maintenance(h["maintenance"]),
        float(h["load"]),
        {session: SeatState(seat.split(" ")[0]) for session, seat in seats.items()},
        qos=_optional(float, h.get("qos")),
        penalty=_optional(float, h.get("penalty")),
        coordinate=_coordinate(h.get("coordinate")),
        build_events=_build_events(h),
        deadline_left=(float(h["deadline"]) - now_us) / 1e6,
    )


def _change(stream_id: str, f: dict[str, str]) -> Change:
    return Change(
        stream_id,
        f["container"],
        ChangeKind(f["kind"]),
        event=_optional(Event, f.get("event")),
        profile=_optional(json.loads, f.get("profile")),
        admission=_optional(Admission, f.get("admission")),
        liveness=_optional(Liveness, f.get("liveness")),
        maintenance=_optional(Maintenance, f.get("maintenance")),
        load=_optional(float, f.get("load")),
        session_id=f.get("session"),
        seat=_optional(SeatState, f.get("seat")),
        freed=tuple(json.loads(f.get("freed", "[]")) or ()),  # Lua's cjson writes [] as {}
        qos=_optional(float, f.get("qos")),
        penalty=_optional(float, f.get("penalty")),
        coordinate=_coordinate(f.get("coordinate")),
        build_event=_optional(_build_event, f.get("build_event")),
        build_count=_optional(int, f.get("build_count")),
    )


def _build_event(report: str) -> BuildEventRecord:
    return BuildEventRecord.from_dict(json.loads(report))


def _build_events(h: dict[str, str]) -> BuildEvents:
    """A container hash's reports (stored oldest first) and counts."""
    recent = tuple(_build_event(report) for report in json.loads(h.get("build_events", "[]")))
    counts = {k.partition(":")[2]: int(v) for k, v in h.items() if k.startswith("build_count:")}
    return BuildEvents(recent, counts)
