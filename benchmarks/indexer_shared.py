"""Claims per second of several indexer processes sharing one Redis store (issue 5: "Redis
with three indexers >= 3,000 claims/s and zero double claims").

The parent starts Debian's redis-server on a unix socket (testbed/redis_server.py), registers
benchmarks/indexer.py's synthetic network into a `RedisStore` (register, SPECS_RECEIVED and
INSPECTION_PASSED for every container, MAINTENANCE_ON for its non-candidates; its silent
containers stay LIVE in the store, and the local indexes never pick them), then starts
`--indexers` OS processes (this module with `--worker N`). Each builds its local `Fleet` from
the same seeded network with the loads and states of `RedisStore.snapshot()`, and claims
through `SharedRegistry.claim` itself (a shortlist of 4 candidates per Lua script, up to 3
rounds, each after refreshing the local index from the refusal) from `--tasks` asyncio tasks.
The local indexes do not tail the change feed: each learns of the other indexers' seats only
from refusals (a stale view costs a retry, never a double claim).

Indexer N plays the requests whose index is N modulo `--indexers`; a session ends (released
through `SharedRegistry.release`, untimed) once its indexer reaches the request `duration`
after its own, as in benchmarks/indexer.py's `drive`. The untimed warm-up (1.5 `duration`
requests, as there) fills the network to about 70 % first; then all indexers start the timed
phase together (a barrier in Redis).

A claim, timed with `time.perf_counter_ns`, is one `SharedRegistry.claim` call: local
selection plus the Lua claim script's round trip, retries included, and the time the task
waits for the event loop behind its process's other tasks (the latency under load). A refusal
(no container passes the local filters, or 3 rounds all refused by the store) counts as a
claim too. claims/s is all indexers' timed claims over the timed phase's wall time (first
start to last end). All processes (the indexers, redis-server and this parent) share the one
machine, on this project's 2 cores.

At the end the parent checks the store: no container's seats add up to more than its whole
(shares <= 1 + 1e-9), no session holds seats in two containers, and `:sessions` agrees with
the seats; a double claim is any of those.

    python -m benchmarks.indexer_shared [--containers 40000] [--requests 200000] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import heapq
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from benchmarks.indexer import (
    COLUMNS as INDEXER_COLUMNS,
)
from benchmarks.indexer import (
    TICK,
    Network,
    Outcome,
    build_fleet,
    summary,
    synthetic_network,
    warm,
)
from benchmarks.report import limit, machine, print_end, print_limits
from indexer.errors import NoContainerError
from indexer.lifecycle import FULL, Event, LivenessConfig, offered
from indexer.redis_store import Claimed, RedisStore, Refused
from indexer.selection import Fleet, Profile
from indexer.shared_registry import CLAIM_ROUNDS, SHORTLIST, SharedRegistry
from node.console import Column, table
from testbed.redis_server import running_redis_server

CLAIMS_TARGET = 3_000.0  # per second, all indexers together
PREFIX = "gamecast"  # the store's own keys (RedisStore's default)
BENCH = "gamecast-bench"  # this benchmark's barriers and progress
LIVENESS = LivenessConfig(3600.0, 1)  # no deadline runs out during a run
REGISTER_TASKS = 64
PROGRESS_EVERY = 2_000  # timed claims between a worker's progress reports
BARRIER_LIMIT_S = 600.0

_TITLES = {"name": "indexer", "decisions": "claims", "per_s": "claims/s"}
COLUMNS: tuple[Column, ...] = (
    *((key, _TITLES.get(key, title), form) for key, title, form in INDEXER_COLUMNS),
    ("retries", "store refusals/claim", "{:.3f}"),
)


def _profile_json(profile: Profile) -> dict[str, Any]:
    return {
        "builds": sorted(profile.builds),
        "region": profile.region,
        "price_per_minute": profile.price_per_minute,
        "vram_mib": profile.vram_mib,
        "cpu_cores": profile.cpu_cores,
        "ram_mib": profile.ram_mib,
        "uplink_mbps": profile.uplink_mbps,
        "encoders": sorted(profile.encoders),
        "max": [profile.max_width, profile.max_height, profile.max_fps],
        "capacity": [[c.width, c.height, c.fps, c.sessions] for c in profile.capacity],
    }


def _client(socket_path: str) -> aioredis.Redis:
    return aioredis.Redis(unix_socket_path=socket_path, decode_responses=True)


# -- one indexer process ----------------------------------------------------------------------

_refusals_seen: contextvars.ContextVar[list[int]] = contextvars.ContextVar("refusals_seen")


class _CountingStore(RedisStore):
    """The store, counting the claim scripts that refused every candidate in the calling
    task's counter (each asyncio task has its own context)."""

    async def claim(
        self, session_id: str, candidates: Sequence[tuple[str, float]]
    ) -> Claimed | Refused:
        result = await super().claim(session_id, candidates)
        if isinstance(result, Refused):
            _refusals_seen.get()[0] += 1
        return result


async def _barrier(client: aioredis.Redis, name: str, worker: int) -> None:
    await client.rpush(f"{BENCH}:{name}:ready", worker)
    if await client.blpop([f"{BENCH}:{name}:go"], timeout=BARRIER_LIMIT_S) is None:
        raise SystemExit(f"indexer {worker}: no {name!r} signal within {BARRIER_LIMIT_S:.0f} s")


def _local_fleet(network: Network, states: Sequence[Any]) -> Fleet:
    """The network's fleet with the snapshot's loads and states."""
    fleet = build_fleet(network, 0.0)
    for state in states:
        fleet.set_load(state.container_id, state.load)
        if not offered(state.admission, state.liveness, state.maintenance):
            fleet.set_candidate(state.container_id, False)
    return fleet


async def _phase(
    registry: SharedRegistry,
    network: Network,
    indices: Sequence[int],
    *,
    ending: list[tuple[int, str, str]],
    tasks: int,
    worker: int,
    client: aioredis.Redis | None,
) -> dict[str, Any]:
    """Claim for `indices` from `tasks` tasks; `ending` is the heap (end, session, container)
    of the sessions held, released once a task reaches their end. `client`: report progress."""
    latencies: list[int] = []
    refusals: Counter[str] = Counter()
    counts = {"claimed": 0, "released": 0, "store_refusals": 0}
    queue = iter(indices)
    clock = time.perf_counter_ns
    unreported = [0]

    async def claimer() -> None:
        seen = [0]
        _refusals_seen.set(seen)
        for index in queue:
            now = index * TICK
            while ending and ending[0][0] <= index:
                _, session_gone, container = heapq.heappop(ending)
                await registry.release(container, session_gone, now)
                counts["released"] += 1
            play = network.plays[index]
            session = f"i{worker}-{index}"
            seen[0] = 0
            began = clock()
            try:
                choice = await registry.claim(play.request, session, now)
            except NoContainerError as refused:
                took = clock() - began
                refusals["raced" if seen[0] >= CLAIM_ROUNDS else refused.filter] += 1
            else:
                took = clock() - began
                counts["claimed"] += 1
                heapq.heappush(ending, (index + play.duration, session, choice.container_id))
            counts["store_refusals"] += seen[0]
            latencies.append(took)
            if client is not None:
                unreported[0] += 1
                if unreported[0] >= PROGRESS_EVERY:
                    done, unreported[0] = unreported[0], 0
                    await client.incrby(f"{BENCH}:done", done)

    started = time.perf_counter_ns()
    async with asyncio.TaskGroup() as group:
        for _ in range(tasks):
            group.create_task(claimer())
    ended = time.perf_counter_ns()
    if client is not None and unreported[0]:
        await client.incrby(f"{BENCH}:done", unreported[0])
    return {
        "latencies_ns": latencies,
        "refusals": dict(refusals),
        **counts,
        "started_ns": started,
        "ended_ns": ended,
    }


async def _nobody_to_tell(sessions: tuple[str, ...], why: str) -> None:
    """The benchmark's indexers have no players to tell that their sessions ended."""


async def _worker(args: argparse.Namespace) -> dict[str, Any]:
    worker, indexers = args.worker, args.indexers
    network = synthetic_network(args.containers, args.requests, np.random.default_rng(args.seed))
    rng = np.random.default_rng([args.seed, worker + 1])
    client = _client(args.socket)
    try:
        store = _CountingStore(client, LIVENESS, prefix=PREFIX)
        registry = SharedRegistry(store, LIVENESS, rng, _nobody_to_tell, admit_on_register=True)
        await _barrier(client, "snapshot", worker)
        _, states = await store.snapshot()
        registry.fleet = _local_fleet(network, states)
        warm(registry.fleet, network, 0.0, rng)
        warmup = network.warmup if args.warmup else 0
        ending: list[tuple[int, str, str]] = []
        await _barrier(client, "warmup", worker)
        mine = range(worker, len(network.plays), indexers)
        warmed = await _phase(
            registry, network, [i for i in mine if i < warmup],
            ending=ending, tasks=args.tasks, worker=worker, client=None,
        )  # fmt: skip
        await _barrier(client, "timed", worker)
        timed = await _phase(
            registry, network, [i for i in mine if i >= warmup],
            ending=ending, tasks=args.tasks, worker=worker, client=client,
        )  # fmt: skip
        warmed.pop("latencies_ns")
        return {"worker": worker, "warmup": warmed, "timed": timed, "held": len(ending)}
    finally:
        await client.aclose()


# -- the parent -------------------------------------------------------------------------------


async def _register(store: RedisStore, network: Network) -> None:
    """Every container registered and admitted, the non-candidates locked, concurrently."""
    work = iter(enumerate(network.profiles))

    async def registrar() -> None:
        for i, profile in work:
            cid = profile.container_id
            await store.register(cid, _profile_json(profile))
            await store.apply(cid, Event.SPECS_RECEIVED)
            await store.apply(cid, Event.INSPECTION_PASSED)
            if not network.candidate[i]:
                await store.apply(cid, Event.MAINTENANCE_ON)

    async with asyncio.TaskGroup() as group:
        for _ in range(REGISTER_TASKS):
            group.create_task(registrar())


async def _release_barrier(
    client: aioredis.Redis, name: str, workers: list[subprocess.Popen[bytes]]
) -> None:
    give_up = time.monotonic() + BARRIER_LIMIT_S
    while await client.llen(f"{BENCH}:{name}:ready") < len(workers):
        _check_alive(workers)
        if time.monotonic() > give_up:
            raise RuntimeError(f"the indexers did not reach {name!r} in {BARRIER_LIMIT_S:.0f} s")
        await asyncio.sleep(0.05)
    await client.rpush(f"{BENCH}:{name}:go", *["go"] * len(workers))


def _check_alive(workers: list[subprocess.Popen[bytes]]) -> None:
    for n, process in enumerate(workers):
        if process.poll() not in (None, 0):
            raise RuntimeError(f"indexer {n} exited with {process.returncode} (see its stderr)")


async def check_store(client: aioredis.Redis, prefix: str = PREFIX) -> dict[str, Any]:
    """The store's seats: overbooked containers, sessions seated twice or astray, loads."""
    members: Any = await client.smembers(f"{prefix}:ids")
    ids: list[str] = sorted(members)
    seats: dict[str, dict[str, str]] = {}
    for start in range(0, len(ids), 5_000):
        chunk = ids[start : start + 5_000]
        async with client.pipeline(transaction=False) as pipe:
            for cid in chunk:
                pipe.hgetall(f"{prefix}:seats:{cid}")
            replies = await pipe.execute()
        seats.update(zip(chunk, replies, strict=True))
    reply: Any = await client.hgetall(f"{prefix}:sessions")
    sessions: dict[str, str] = reply
    overbooked, seated_in, loads = [], Counter[str](), {}
    astray = 0
    for cid, held in seats.items():
        load = sum(float(value.split(" ")[1]) for value in held.values())
        loads[cid] = load
        if load > FULL:
            overbooked.append(cid)
        for session in held:
            seated_in[session] += 1
            astray += sessions.get(session) != cid
    twice = sum(1 for count in seated_in.values() if count > 1)
    astray += sum(1 for session in sessions if session not in seated_in)
    return {
        "containers": len(ids),
        "seats": sum(seated_in.values()),
        "overbooked_containers": len(overbooked),
        "max_load": max(loads.values(), default=0.0),
        "sessions_in_two_containers": twice,
        "sessions_astray": astray,
        "double_claims": len(overbooked) + twice + astray,
        "loads": loads,
    }


def _worker_command(args: argparse.Namespace, socket_path: str, worker: int) -> list[str]:
    return [
        sys.executable, "-m", "benchmarks.indexer_shared", "--worker", str(worker),
        "--socket", socket_path, "--containers", str(args.containers),
        "--requests", str(args.requests), "--indexers", str(args.indexers),
        "--tasks", str(args.tasks), "--seed", str(args.seed),
        *([] if args.warmup else ["--no-warmup"]),
    ]  # fmt: skip


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for process in workers:
        if process.poll() is None:
            process.terminate()
    for process in workers:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _row(name: str, timed: dict[str, Any], containers: int, occupancy: float) -> dict[str, Any]:
    outcome = Outcome(latencies_ns=timed["latencies_ns"], refusals=Counter(timed["refusals"]))
    row = summary(name, outcome, containers, occupancy)
    wall_s = (timed["ended_ns"] - timed["started_ns"]) / 1e9
    claims = row["decisions"]
    row["per_s"] = claims / wall_s if wall_s > 0 else math.nan  # over wall time, not latencies
    row["wall_s"] = wall_s
    row["claimed"] = timed["claimed"]
    row["released"] = timed["released"]
    row["retries"] = timed["store_refusals"] / claims if claims else math.nan
    return row


def _spawn(
    args: argparse.Namespace,
    socket_path: str,
    outputs: list[Path],
    workers: list[subprocess.Popen[bytes]],
) -> None:
    """Start the indexer processes, each writing its JSON report to its output file."""
    repo = Path(__file__).resolve().parent.parent
    for n, path in enumerate(outputs):
        with path.open("wb") as out:
            command = _worker_command(args, socket_path, n)
            workers.append(
                subprocess.Popen(command, cwd=repo, stdin=subprocess.DEVNULL, stdout=out)
            )


async def _parent(
    args: argparse.Namespace, socket_path: str, workdir: Path, say: Any
) -> dict[str, Any]:
    workers: list[subprocess.Popen[bytes]] = []
    outputs = [workdir / f"indexer-{n}.json" for n in range(args.indexers)]
    client = _client(socket_path)
    try:
        say(f"starting {args.indexers} indexer processes ({args.tasks} tasks each)")
        _spawn(args, socket_path, outputs, workers)
        say(f"generating {args.containers:,} containers and {args.requests:,} requests "
            f"(seed {args.seed})")  # fmt: skip
        network = synthetic_network(
            args.containers, args.requests, np.random.default_rng(args.seed)
        )
        store = RedisStore(client, LIVENESS, prefix=PREFIX)
        began = time.perf_counter()
        say("registering the containers in Redis")
        await _register(store, network)
        register_s = time.perf_counter() - began
        say(f"  registered and admitted in {register_s:.1f} s "
            f"({int((~network.candidate).sum()):,} locked for maintenance)")  # fmt: skip
        await _release_barrier(client, "snapshot", workers)
        await _release_barrier(client, "warmup", workers)
        warmup = network.warmup if args.warmup else 0
        say(f"warming up: {warmup:,} untimed requests across the indexers fill the network")
        began = time.perf_counter()
        await _release_barrier(client, "timed", workers)
        say(f"  warmed up in {time.perf_counter() - began:.1f} s")
        say(f"timing {args.requests:,} claims across {args.indexers} indexers")
        began = time.perf_counter()
        last = 0
        while any(process.poll() is None for process in workers):
            _check_alive(workers)
            await asyncio.sleep(0.25)
            if time.perf_counter() - began - last >= 10.0:
                last = int(time.perf_counter() - began)
                done = int(await client.get(f"{BENCH}:done") or 0)
                say(f"  {done:,}/{args.requests:,} claims, {done / max(last, 1):,.0f}/s, {last} s")
        _check_alive(workers)
        reports = [json.loads(path.read_text()) for path in outputs]
        say("checking the store for double claims")
        check = await check_store(client)
    finally:
        _stop(workers)
        await client.aclose()
    return _report(args, network, reports, check, register_s)


def _report(
    args: argparse.Namespace,
    network: Network,
    reports: list[dict[str, Any]],
    check: dict[str, Any],
    register_s: float,
) -> dict[str, Any]:
    warmup = network.warmup if args.warmup else 0
    loads = check.pop("loads")
    live = [
        loads.get(p.container_id, 0.0)
        for p, candidate, silent in zip(
            network.profiles, network.candidate, network.silent, strict=True
        )
        if candidate and not silent
    ]
    occupancy = float(np.mean(live)) if live else math.nan
    rows = [_row(f"indexer {r['worker']}", r["timed"], args.containers, math.nan) for r in reports]
    merged = {
        "latencies_ns": [ns for r in reports for ns in r["timed"]["latencies_ns"]],
        "refusals": sum((Counter(r["timed"]["refusals"]) for r in reports), Counter()),
        "started_ns": min(r["timed"]["started_ns"] for r in reports),
        "ended_ns": max(r["timed"]["ended_ns"] for r in reports),
        **{
            key: sum(r["timed"][key] for r in reports)
            for key in ("claimed", "released", "store_refusals")
        },
    }
    total = _row("all", merged, args.containers, occupancy)
    rows.append(total)
    claimed = sum(r["timed"]["claimed"] + r["warmup"]["claimed"] for r in reports)
    released = sum(r["timed"]["released"] + r["warmup"]["released"] for r in reports)
    check["seats_expected"] = claimed - released
    return {
        "benchmark": "indexer_shared",
        "machine": machine(),
        "config": {
            "containers": args.containers,
            "requests": args.requests,
            "indexers": args.indexers,
            "tasks_per_indexer": args.tasks,
            "warmup_requests": warmup,
            "session_requests": network.duration,
            "shortlist": SHORTLIST,
            "claim_rounds": CLAIM_ROUNDS,
            "seed": args.seed,
            "redis": "Debian redis-server on a unix socket, on the same machine",
        },
        "register_seconds": register_s,
        "results": rows,
        "warmup": [r["warmup"] for r in reports],
        "store": check,
        "targets": {
            "claims_per_s": limit(total["per_s"], CLAIMS_TARGET, at_most=False),
            "double_claims": limit(check["double_claims"], 0, at_most=True),
        },
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.indexer_shared", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--containers", type=int, default=40_000)
    parser.add_argument("--requests", type=int, default=200_000,
                        help="timed claims, in all, across the indexers")  # fmt: skip
    parser.add_argument("--indexers", type=int, default=3, help="indexer processes")
    parser.add_argument("--tasks", type=int, default=32, help="claiming tasks per indexer")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the untimed warm-up that fills the network")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="also write the JSON report there")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--socket", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.indexers < 1 or args.tasks < 1 or args.containers < 1 or args.requests < 1:
        parser.error("--indexers, --tasks, --containers and --requests must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker is not None:
        print(json.dumps(asyncio.run(_worker(args))))
        return 0
    print(f"gamecast bench indexer_shared: {args.containers:,} containers, {args.requests:,} "
          f"claims, {args.indexers} indexer processes + redis-server on {os.cpu_count()} "
          "cores")  # fmt: skip
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"  note: load average {load:.2f} before the run; other work shares the CPU")
    with (
        running_redis_server() as server,
        tempfile.TemporaryDirectory(prefix="gamecast-bench-") as workdir,
    ):
        report = asyncio.run(
            _parent(args, str(server.socket_path), Path(workdir), lambda s: print(s, flush=True))
        )
    print()
    print(table(report["results"], COLUMNS))
    for row in report["results"]:
        refusals = ", ".join(f"{k} {v:,}" for k, v in sorted(row["refusals"].items()))
        print(f"refusals ({row['name']}): {refusals or 'none'}")
    store = report["store"]
    print(f"store: {store['seats']:,} seats held (indexers expect {store['seats_expected']:,}), "
          f"max container load {store['max_load']:.3f}, {store['overbooked_containers']} "
          f"overbooked, {store['sessions_in_two_containers']} sessions in two containers, "
          f"{store['sessions_astray']} astray")  # fmt: skip
    print_limits(5, report["targets"], "{:,.0f}")
    print_end(report, args.json, busy_load=2.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
