"""Selection decisions per second on a synthetic network of 40,000 containers (issue 5).

A decision is `Fleet.select(shortlist=1)` plus booking the seat in the fleet's load column,
timed one by one with `time.perf_counter_ns`. The baseline, in the same run, is the plain
Python scan `select_by_scan` over every container (testbed/selection_oracle.py, the reference
test_selection.py checks the fleet against) on the first `--baseline-requests` requests, from
the same state.

The synthetic network, all from one seeded generator:
- ten regions at real metros with shares of the containers (and of the players); a node is a
  point on the globe scattered 300 km (containers) or 700 km (players) around its region's
  centre, embedded so that the straight-line distance is the great-circle RTT (100 km per ms)
  times a 1.4 routing detour: about 10 ms between Frankfurt and London, 75 ms across the
  Atlantic, 60 ms across the US. The other five of the 8 Vivaldi dimensions carry 0.5 ms of
  noise; heights are access links, log-normal with a median of 0.5 ms for a container and
  4 ms for a player;
- five GPU tiers (CPU only, entry, mid, high, top) by share, with VRAM, cores, RAM, uplink
  and encoders, a price per minute that grows with the tier times log-normal noise (sigma
  0.25) and a per-region factor, and seats for 1280x720@60 (1 to 4, one fewer for 30 % of the
  containers) and, on GPU tiers, fewer at 1920x1080@60;
- 30 builds with Zipf(1.1) popularity and each a VRAM/cores/RAM/encoder requirement; every
  container hosts one to four of the builds its hardware meets, drawn by popularity;
- 97 % of the containers are candidates with live deadlines, 2 % are not candidates
  (maintenance, inspection), 1 % are silent (a deadline in the past);
- requests: a build by popularity, 70 % at 1280x720@60 and the rest at 1920x1080@60, policy
  best-overall 50 % / lowest-cost 25 % / best-experience 25 %, an RTT bound of 30 to 80 ms,
  a budget (30 % none, else 0.015 to 0.08 per minute), a player placed near a region by its
  share (1 % unknown: not yet placed). Each session ends a uniform 0.5 to 1.5 times
  `duration` requests later, `duration` set so that about 70 % of the seats are taken;
  1.5 `duration` untimed warm-up requests fill the network first.

Before the timed phase every object then alive is frozen out of the garbage collector's
sight (`gc.freeze`, as a server may do after start-up): the pre-generated requests alone are
about a million objects, which a server never holds, and full collections walking them cost
more than a decision. The collector keeps running on everything created afterwards.

`drive` is the hook for other claim paths (the Redis store): it takes a selector, the plays,
and `book` / `release` callables, and times select + book per decision.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from benchmarks.coordinates import EARTH_RADIUS_KM, RTT_S_PER_KM
from benchmarks.report import limit, machine, print_end, print_limits
from contracts.protocol import StreamCapacity
from contracts.requirements import Requirements
from indexer.coordinates import Coordinate
from indexer.errors import NoContainerError
from indexer.selection import (
    Choice,
    Fleet,
    Policy,
    Profile,
    Request,
)
from node.console import Column, table
from testbed.selection_oracle import ScanState, select_by_scan

DETOUR = 1.4
DIMENSIONS = 8
REGIONS = (  # name, latitude, longitude, share of the containers and of the players
    ("us-east", 38.9, -77.0, 0.16), ("us-central", 41.6, -93.6, 0.08),
    ("us-west", 37.4, -122.0, 0.10), ("sa-east", -23.5, -46.6, 0.07),
    ("eu-west", 51.5, -0.1, 0.14), ("eu-central", 50.1, 8.7, 0.14),
    ("eu-north", 59.3, 18.1, 0.05), ("asia-south", 19.1, 72.9, 0.08),
    ("asia-northeast", 35.7, 139.7, 0.12), ("asia-southeast", 1.35, 103.8, 0.06),
)  # fmt: skip
CONTAINER_SCATTER_KM, PLAYER_SCATTER_KM = 300.0, 700.0
NOISE_S = 0.0005
CONTAINER_HEIGHT_S, PLAYER_HEIGHT_S, HEIGHT_SIGMA = 0.0005, 0.004, 0.5


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    share: float
    vram_mib: int
    cpu_cores: int
    ram_mib: int
    price: float  # per minute, before noise
    seats_720: int
    seats_1080: int  # 0: cannot stream 1080p
    uplink_mbps: float
    encoders: frozenset[str]


TIERS = (
    Tier("cpu", 0.10, 0, 8, 16384, 0.010, 1, 0, 200.0, frozenset({"h264", "vp8"})),
    Tier("entry", 0.25, 4096, 8, 16384, 0.016, 2, 1, 300.0, frozenset({"h264", "vp8"})),
    Tier("mid", 0.35, 12288, 12, 32768, 0.024, 3, 1, 500.0, frozenset({"h264", "hevc"})),
    Tier("high", 0.20, 16384, 16, 65536, 0.036, 4, 2, 1000.0, frozenset({"h264", "av1"})),
    Tier("top", 0.10, 24576, 32, 131072, 0.050, 4, 3, 1000.0, frozenset({"h264", "av1"})),
)
PRICE_SIGMA = 0.25
REGION_PRICE = (0.85, 1.2)  # range of the per-region price factor
BUILDS, ZIPF_S, MAX_BUILDS_PER_CONTAINER = 30, 1.1, 4
BUILD_NEEDS = (  # (vram, cores, ram, encoders), with their shares among the builds
    (Requirements(0, 4, 8192, 10.0), 0.3),
    (Requirements(2048, 4, 8192, 20.0), 0.3),
    (Requirements(4096, 8, 16384, 20.0, frozenset({"h264", "hevc", "av1"})), 0.25),
    (Requirements(8192, 8, 16384, 30.0, frozenset({"h264"})), 0.15),
)
SHAPES = (((1280, 720, 60), 0.7), ((1920, 1080, 60), 0.3))
POLICIES = ((Policy.BEST_OVERALL, 0.5), (Policy.LOWEST_COST, 0.25), (Policy.BEST_EXPERIENCE, 0.25))
BOUNDS_S = (0.030, 0.040, 0.050, 0.060, 0.080)
NO_BUDGET, BUDGET = 0.3, (0.015, 0.08)
UNKNOWN_PLAYER = 0.01  # not yet placed: these scan every region of their build
NOT_CANDIDATE, SILENT = 0.02, 0.01
OCCUPANCY = 0.70  # the share of seats the session lengths aim at
MEAN_SHARE = 0.45  # a session's mean share of its container, measured on this network
TICK = 0.001  # seconds of simulated time between requests

DECISIONS_TARGET = 20_000.0  # per second, on one core
P99_TARGET_MS = 2.0


@dataclass(frozen=True, slots=True)
class Play:
    """A request, and after how many later requests its session ends."""

    request: Request
    duration: int


@dataclass(slots=True)
class Network:
    profiles: list[Profile]
    coordinates: list[Coordinate]
    candidate: NDArray[np.bool_]
    silent: NDArray[np.bool_]
    requirements: dict[str, Requirements]
    plays: list[Play]
    warmup: int  # the first `warmup` plays are not timed
    duration: int


def _globe(lat: NDArray[np.float64], lon: NDArray[np.float64]) -> NDArray[np.float64]:
    lat, lon = np.radians(lat), np.radians(lon)
    unit = np.column_stack((np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)))
    return unit * EARTH_RADIUS_KM * RTT_S_PER_KM * DETOUR


def _place(
    region: NDArray[np.intp], scatter_km: float, height_s: float, rng: np.random.Generator
) -> list[Coordinate]:
    """Coordinates of nodes scattered around their regions' centres (module docstring)."""
    count = len(region)
    centre = np.array([[lat, lon] for _, lat, lon, _ in REGIONS])[region]
    north, east = rng.normal(0.0, scatter_km / EARTH_RADIUS_KM, size=(2, count))
    lat = np.clip(centre[:, 0] + np.degrees(north), -89.0, 89.0)
    lon = centre[:, 1] + np.degrees(east) / np.maximum(np.cos(np.radians(centre[:, 0])), 0.1)
    vec = np.hstack((_globe(lat, lon), rng.normal(0.0, NOISE_S, (count, DIMENSIONS - 3))))
    height = rng.lognormal(np.log(height_s), HEIGHT_SIGMA, count)
    return [Coordinate(tuple(v), float(h), 0.1) for v, h in zip(vec.tolist(), height, strict=True)]


def _pick(rng: np.random.Generator, weighted: Sequence[tuple[Any, float]], count: int) -> Any:
    shares = np.array([share for _, share in weighted])
    return rng.choice(len(weighted), size=count, p=shares / shares.sum())


def synthetic_network(containers: int, requests: int, rng: np.random.Generator) -> Network:
    """The network of the module docstring: profiles, coordinates and plays."""
    region_shares = np.array([share for *_, share in REGIONS])
    region = rng.choice(len(REGIONS), size=containers, p=region_shares / region_shares.sum())
    coordinates = _place(region, CONTAINER_SCATTER_KM, CONTAINER_HEIGHT_S, rng)
    tier = _pick(rng, [(t, t.share) for t in TIERS], containers)
    region_price = rng.uniform(*REGION_PRICE, size=len(REGIONS))
    price = np.round(
        np.array([t.price for t in TIERS])[tier]
        * rng.lognormal(0.0, PRICE_SIGMA, containers)
        * region_price[region],
        4,
    )
    fewer = rng.random(containers) < 0.3
    uplink = rng.uniform(0.5, 1.5, containers)

    builds = [f"game-{k:02d}" for k in range(BUILDS)]
    popularity = 1.0 / np.arange(1, BUILDS + 1) ** ZIPF_S
    needs = [BUILD_NEEDS[k][0] for k in _pick(rng, BUILD_NEEDS, BUILDS)]
    requirements = dict(zip(builds, needs, strict=True))
    # Hosted builds: the top few by popularity plus Gumbel noise (sampling without
    # replacement by weight) among those the tier can run.
    meets = np.array(
        [
            [
                t.vram_mib >= n.vram_mib
                and t.cpu_cores >= n.cpu_cores
                and t.ram_mib >= n.ram_mib
                and (not n.encoders or bool(n.encoders & t.encoders))
                for n in needs
            ]
            for t in TIERS
        ]
    )[tier]
    keys = np.log(popularity) + rng.gumbel(size=(containers, BUILDS))
    keys[~meets] = -np.inf
    ranked = np.argsort(-keys, axis=1)
    hosted = rng.integers(1, MAX_BUILDS_PER_CONTAINER + 1, size=containers)

    profiles = []
    for i in range(containers):
        t = TIERS[tier[i]]
        seats = max(1, t.seats_720 - int(fewer[i]))
        capacity = [StreamCapacity(1280, 720, 60, seats)]
        if t.seats_1080:
            capacity.append(StreamCapacity(1920, 1080, 60, max(1, t.seats_1080 - int(fewer[i]))))
        hosts = [builds[b] for b in ranked[i, : hosted[i]] if meets[i, b]]
        profiles.append(
            Profile(
                container_id=f"c{i:06d}",
                builds=frozenset(hosts),
                region=REGIONS[region[i]][0],
                price_per_minute=float(price[i]),
                vram_mib=t.vram_mib,
                cpu_cores=t.cpu_cores,
                ram_mib=t.ram_mib,
                uplink_mbps=round(t.uplink_mbps * float(uplink[i]), 1),
                encoders=t.encoders,
                max_width=1920 if t.seats_1080 else 1280,
                max_height=1080 if t.seats_1080 else 720,
                max_fps=60,
                capacity=tuple(capacity),
            )
        )
    state = rng.random(containers)
    candidate = state >= NOT_CANDIDATE
    silent = (state >= NOT_CANDIDATE) & (state < NOT_CANDIDATE + SILENT)

    duration = max(1, round(OCCUPANCY * containers / MEAN_SHARE))
    warmup = round(1.5 * duration)
    total = warmup + requests
    wanted = rng.choice(BUILDS, size=total, p=popularity / popularity.sum())
    shape = _pick(rng, SHAPES, total)
    policy = _pick(rng, POLICIES, total)
    bound = rng.choice(BOUNDS_S, size=total)
    budget = np.where(rng.random(total) < NO_BUDGET, math.inf, rng.uniform(*BUDGET, total))
    player_region = rng.choice(len(REGIONS), size=total, p=region_shares / region_shares.sum())
    players = _place(player_region, PLAYER_SCATTER_KM, PLAYER_HEIGHT_S, rng)
    unknown = rng.random(total) < UNKNOWN_PLAYER
    lasts = rng.integers(duration // 2, duration + duration // 2 + 1, size=total)
    plays = [
        Play(
            Request(
                builds[wanted[i]],
                *SHAPES[shape[i]][0],
                requirements=requirements[builds[wanted[i]]],
                budget_per_minute=float(budget[i]),
                rtt_bound=float(bound[i]),
                policy=POLICIES[policy[i]][0],
                player=None if unknown[i] else players[i],
            ),
            int(lasts[i]),
        )
        for i in range(total)
    ]
    return Network(profiles, coordinates, candidate, silent, requirements, plays, warmup, duration)


def build_fleet(network: Network, now: float) -> Fleet:
    """A fleet of the network's containers: candidates live until well after the run."""
    fleet = Fleet(DIMENSIONS)
    alive_until = now + TICK * len(network.plays) + 60.0
    for i, (profile, coordinate) in enumerate(
        zip(network.profiles, network.coordinates, strict=True)
    ):
        fleet.add(profile, coordinate)
        fleet.set_candidate(profile.container_id, bool(network.candidate[i]))
        fleet.set_deadline(profile.container_id, now - 1.0 if network.silent[i] else alive_until)
    return fleet


def warm(fleet: Fleet, network: Network, now: float, rng: np.random.Generator) -> None:
    """Build every build's block and seat-cost columns (what the first requests would)."""
    for build, needs in network.requirements.items():
        for (width, height, fps), _ in SHAPES:
            with contextlib.suppress(NoContainerError):
                fleet.select(Request(build, width, height, fps, needs), now, rng)


class ScanFleet:
    """The naive baseline behind Fleet's interface: select scans every container."""

    def __init__(self, states: list[ScanState]) -> None:
        self.states = states
        self._by_id = {s.profile.container_id: s for s in states}

    @classmethod
    def copy_of(cls, fleet: Fleet, network: Network) -> ScanFleet:
        states = []
        for profile, coordinate in zip(network.profiles, network.coordinates, strict=True):
            cid = profile.container_id
            state = ScanState(profile, coordinate, load=fleet.load(cid))
            states.append(state)
        fleet_candidates = network.candidate
        for state, candidate, silent in zip(states, fleet_candidates, network.silent, strict=True):
            state.candidate = bool(candidate)
            state.deadline = -math.inf if silent else math.inf
        return cls(states)

    def select(
        self, request: Request, now: float, rng: np.random.Generator, shortlist: int = 1
    ) -> list[Choice]:
        return select_by_scan(self.states, request, now, rng, shortlist)

    def load(self, container_id: str) -> float:
        return self._by_id[container_id].load

    def set_load(self, container_id: str, load: float) -> None:
        self._by_id[container_id].load = load


# -- the timed loop ---------------------------------------------------------------------------


class Selector(Protocol):
    def select(
        self, request: Request, now: float, rng: np.random.Generator, shortlist: int = 1
    ) -> list[Choice]: ...


@dataclass(slots=True)
class Outcome:
    latencies_ns: list[int] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)
    ending: dict[int, list[Choice]] = field(default_factory=dict)  # play index -> sessions


def drive(
    selector: Selector,
    plays: Sequence[Play],
    book: Callable[[Choice], None],
    release: Callable[[Choice], None],
    *,
    start: int = 0,
    timed_from: int = 0,
    ending: dict[int, list[Choice]] | None = None,
    rng: np.random.Generator,
    progress: Callable[[int, Outcome], None] | None = None,
) -> Outcome:
    """The hook a claim path is measured with: play `plays[start:]` in order at one per TICK.

    A decision is `selector.select(...)[0]` then `book(choice)`, timed from `timed_from` on
    (a refusal is a decision too); sessions end, untimed, `play.duration` requests after
    theirs with `release(choice)`. `ending` carries sessions that earlier plays opened.
    """
    outcome = Outcome(ending=dict(ending or {}))
    clock = time.perf_counter_ns
    latencies, refusals, pending = outcome.latencies_ns, outcome.refusals, outcome.ending
    for index in range(start, len(plays)):
        for session in pending.pop(index, ()):
            release(session)
        play = plays[index]
        now = index * TICK
        began = clock()
        try:
            choice = selector.select(play.request, now, rng)[0]
            book(choice)
        except NoContainerError as refused:
            took = clock() - began
            refusals[refused.filter] += index >= timed_from
        else:
            took = clock() - began
            pending.setdefault(index + play.duration, []).append(choice)
        if index >= timed_from:
            latencies.append(took)
            if progress is not None:
                progress(index - timed_from + 1, outcome)
    return outcome


def booking(fleet: Fleet | ScanFleet) -> tuple[Callable[[Choice], None], Callable[[Choice], None]]:
    """Book and release a seat in the fleet's load column (the in-memory claim)."""

    def book(choice: Choice) -> None:
        fleet.set_load(choice.container_id, fleet.load(choice.container_id) + choice.share)

    def release(choice: Choice) -> None:
        left = max(0.0, fleet.load(choice.container_id) - choice.share)
        fleet.set_load(choice.container_id, left)

    return book, release


def summary(name: str, outcome: Outcome, containers: int, occupancy: float) -> dict[str, Any]:
    latencies = np.array(outcome.latencies_ns, dtype=np.float64) / 1e6
    decisions = len(latencies)
    refused = sum(outcome.refusals.values())
    return {
        "name": name,
        "containers": containers,
        "decisions": decisions,
        "per_s": decisions / (latencies.sum() / 1e3) if decisions else math.nan,
        "p50_ms": float(np.percentile(latencies, 50)) if decisions else math.nan,
        "p99_ms": float(np.percentile(latencies, 99)) if decisions else math.nan,
        "max_ms": float(latencies.max()) if decisions else math.nan,
        "refused": refused / decisions if decisions else math.nan,
        "refusals": dict(outcome.refusals),
        "occupancy": occupancy,
    }


def occupancy(fleet: Fleet, network: Network) -> float:
    """The mean load of the live candidates: the share of their seats taken."""
    loads = [
        fleet.load(p.container_id)
        for p, candidate, silent in zip(
            network.profiles, network.candidate, network.silent, strict=True
        )
        if candidate and not silent
    ]
    return float(np.mean(loads)) if loads else math.nan


COLUMNS: tuple[Column, ...] = (
    ("name", "selection", "{}"), ("containers", "containers", "{}"),
    ("decisions", "decisions", "{}"), ("per_s", "decisions/s", "{:,.0f}"),
    ("p50_ms", "p50 ms", "{:.3f}"), ("p99_ms", "p99 ms", "{:.3f}"),
    ("max_ms", "max ms", "{:.2f}"), ("refused", "refused", "{:.1%}"),
    ("occupancy", "occupancy", "{:.0%}"),
)  # fmt: skip


def _time_fleet(
    fleet: Fleet,
    network: Network,
    ending: dict[int, list[Choice]],
    rng: np.random.Generator,
    say: Callable[[str], None],
) -> Outcome:
    requests = len(network.plays) - network.warmup
    step = max(1, requests // 10)
    began = time.perf_counter()

    def progress(done: int, outcome: Outcome) -> None:
        if done % step == 0:
            rate = done / (sum(outcome.latencies_ns) / 1e9)
            say(f"  fleet: {done:,}/{requests:,} decisions, {rate:,.0f}/s, "
                f"{time.perf_counter() - began:.0f} s")  # fmt: skip

    say(f"timing Fleet.select + booking on {requests:,} requests")
    book, release = booking(fleet)
    return drive(fleet, network.plays, book, release, start=network.warmup,
                 timed_from=network.warmup, ending=ending, rng=rng, progress=progress)  # fmt: skip


def _time_scan(
    scan: ScanFleet,
    network: Network,
    requests: int,
    *,
    ending: dict[int, list[Choice]],
    rng: np.random.Generator,
    say: Callable[[str], None],
) -> Outcome:
    count = min(requests, len(network.plays) - network.warmup)
    say(f"timing the plain-Python scan on the first {count:,} requests, from the same state")
    step = max(1, count // 5)

    def progress(done: int, outcome: Outcome) -> None:
        if done % step == 0:
            say(f"  scan: {done:,}/{count:,} decisions")

    book, release = booking(scan)
    end = network.warmup + count
    return drive(scan, network.plays[:end], book, release, start=network.warmup,
                 timed_from=network.warmup, ending=ending, rng=rng, progress=progress)  # fmt: skip


def run(
    containers: int,
    requests: int,
    baseline_requests: int,
    seed: int,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Generate the network, index it, drive both selectors; the report as a dict."""
    rng = np.random.default_rng(seed)
    say(f"generating {containers:,} containers and {requests:,} requests (seed {seed})")
    network = synthetic_network(containers, requests, rng)
    say("indexing the fleet (tracemalloc on)")
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    fleet = build_fleet(network, 0.0)
    warm(fleet, network, 0.0, rng)
    index_s = time.perf_counter() - started
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    say(f"  indexed in {index_s:.1f} s: {current / 2**20:.1f} MiB held, peak {peak / 2**20:.1f}")

    book, release = booking(fleet)
    say(f"warming up: {network.warmup:,} untimed requests fill the network")
    warmed = drive(fleet, network.plays[: network.warmup], book, release, rng=rng,
                   timed_from=network.warmup)  # fmt: skip
    start_occupancy = occupancy(fleet, network)
    say(f"  occupancy {start_occupancy:.0%}")

    scan = ScanFleet.copy_of(fleet, network)
    # What exists now (the generated requests above all: about a million objects a server
    # would never hold) is moved out of the collector's sight; it still runs, on new objects.
    gc.collect()
    gc.freeze()
    try:
        timed = _time_fleet(fleet, network, warmed.ending, rng, say)
        rows = [summary("fleet (numpy index)", timed, containers, occupancy(fleet, network))]
        baseline_rows: list[dict[str, Any]] = []
        if baseline_requests:
            baseline = _time_scan(
                scan, network, baseline_requests, ending=warmed.ending, rng=rng, say=say
            )
            baseline_rows = [summary("scan (plain Python)", baseline, containers, start_occupancy)]
    finally:
        gc.unfreeze()
    rows += baseline_rows
    fleet_row = rows[0]
    speedup = fleet_row["per_s"] / baseline_rows[0]["per_s"] if baseline_rows else math.nan
    return {
        "benchmark": "indexer",
        "machine": machine(),
        "config": {
            "containers": containers,
            "requests": requests,
            "warmup_requests": network.warmup,
            "session_requests": network.duration,
            "baseline_requests": baseline_requests,
            "seed": seed,
        },
        "results": rows,
        "speedup": speedup,
        "memory": {
            "method": "tracemalloc while indexing the generated profiles and warming every "
            "build's block (the profiles themselves excluded)",
            "held_mib": current / 2**20,
            "peak_mib": peak / 2**20,
            "index_seconds": index_s,
        },
        "occupancy_at_start": start_occupancy,
        "targets": {
            "decisions_per_s": limit(fleet_row["per_s"], DECISIONS_TARGET, at_most=False),
            "p99_ms": limit(fleet_row["p99_ms"], P99_TARGET_MS, at_most=True),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gamecast bench indexer", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--containers", type=int, default=40_000)
    parser.add_argument("--requests", type=int, default=200_000, help="timed decisions")
    parser.add_argument("--baseline-requests", type=int, default=2_000,
                        help="decisions of the plain-Python scan (0: none)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="also write the JSON report there")
    args = parser.parse_args(argv)
    print(f"gamecast bench indexer: {args.containers:,} containers, {args.requests:,} requests, "
          f"one core")  # fmt: skip
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"  note: load average {load:.2f} before the run; other work shares the CPU")
    report = run(args.containers, args.requests, args.baseline_requests, args.seed)
    print()
    print(table(report["results"], COLUMNS))
    for row in report["results"]:
        refusals = ", ".join(f"{k} {v:,}" for k, v in sorted(row["refusals"].items()))
        print(f"refusals ({row['name']}): {refusals or 'none'}")
    memory = report["memory"]
    print(f"memory: {memory['held_mib']:.1f} MiB held, peak {memory['peak_mib']:.1f} MiB "
          f"({memory['method']})")  # fmt: skip
    if not math.isnan(report["speedup"]):
        print(f"speed-up over the scan: {report['speedup']:,.0f}x")
    print_limits(5, report["targets"])
    print_end(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
