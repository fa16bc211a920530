"""Placing a player among the network's coordinates from a few round trips the page timed.

DESIGN.md step 3: the indexer cannot ask a new player to probe thousands of containers, and a
new player has no coordinate to estimate from. So the page probes in two short rounds:
1. *landmarks*: the best-placed container of each region (and one of the least placed, so
   that players' probes are also how new containers get their first coordinate). A player
   measured against several regions lands in the right part of the world;
2. *neighbours*: the containers nearest that first placement, which fixes the player among
   the containers it will actually be matched with.
After each round the player is fitted to its samples at once: the least-squares point of
Vivaldi's model (|x - x_i| + h + h_i = rtt_i, relative residuals, Levenberg-Marquardt),
not the many small spring steps a long-lived node takes. The neighbours' round is what
places a player among the containers it will be matched with: landmarks alone place it in
the right part of the world only. tests/test_placement.py holds both rounds to their bounds on
benchmarks/coordinates.py's topology (1,000 settled containers).

A probe times the path and the container's reply, so a container can only make itself look
farther (indexer/coordinates.py's sanity policy). Once the player is placed, each sample is
learned from as a player's measurement, which moves the container as Vivaldi does; the caller
writes the containers that moved back to the store. Players are transient: the player's node
leaves the book afterwards. Pure: randomness comes in as a generator.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from contracts.protocol import MIN_PROBE_MS
from indexer.coordinates import (
    Coordinate,
    CoordinateBook,
    Coordinates,
    Role,
    RttSample,
    SampleRefusedError,
    Vector,
    VivaldiConfig,
    distance,
)

LANDMARKS = 6  # containers one player probes in the first round (protocol.MAX_PROBES: 8)
NEIGHBOURS = 5  # ... and in the second
EXPLORE = 1  # of the landmarks, how many go to the least-placed containers
# Seconds: shorter is no network (and 1/rtt^2 would overflow the fit); the protocol's floor.
MIN_RTT = MIN_PROBE_MS / 1000
FIT_STEPS = 30  # Levenberg-Marquardt iterations; a dozen samples settle in far fewer


@dataclass(frozen=True, slots=True)
class Landmark:
    container_id: str
    url: str


@dataclass(frozen=True, slots=True)
class PlacedPlayer:
    """Where the player landed (None when no sample was usable), which containers moved (to
    write back to the store), and each refused sample's reason."""

    coordinate: Coordinate | None
    moved: dict[str, Coordinate] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


class Placement:
    """The indexer's coordinate book plus who can be probed, and where."""

    def __init__(self, config: VivaldiConfig, rng: np.random.Generator) -> None:
        self.book = CoordinateBook(config, rng)
        self._rng = rng
        self._probes: dict[str, tuple[str, str]] = {}  # container -> (region, probe url)

    def join(self, container_id: str, region: str, probe_url: str) -> None:
        """A container registered (again): it has a coordinate from now on, and players may
        probe it if it published where."""
        if container_id not in self.book:
            self.book.add(container_id)
        if probe_url:
            self._probes[container_id] = (region, probe_url)
        else:
            self._probes.pop(container_id, None)

    def placed(self, container_id: str) -> Coordinate | None:
        """The container's coordinate once any sample moved it; None while it knows nothing."""
        if container_id not in self.book:
            return None
        coordinate = self.book.coordinate(container_id)
        return None if coordinate.error >= self.book.config.error_max else coordinate

    def pause(self, container_id: str) -> None:
        """The container went away: nobody probes it, but its coordinate stays for its return."""
        self._probes.pop(container_id, None)

    def landmarks(self, count: int = LANDMARKS) -> list[Landmark]:
        """Up to `count` probe targets: the surest container of each region in turn, and
        `EXPLORE` of the least sure; ties broken at random."""
        if not self._probes:
            return []
        ids = list(self._probes)
        errors = self.book.coordinates(ids).error
        order = np.lexsort((self._rng.random(len(ids)), errors))  # surest first
        explore = min(EXPLORE, count - 1, max(0, len(ids) - count)) if count > 1 else 0
        chosen: list[str] = [ids[i] for i in order[::-1][:explore]]
        by_region: dict[str, list[str]] = {}
        for i in order:
            if ids[i] not in chosen:
                by_region.setdefault(self._probes[ids[i]][0], []).append(ids[i])
        queues = list(by_region.values())
        while len(chosen) < count and any(queues):
            for queue in queues:
                if queue and len(chosen) < count:
                    chosen.append(queue.pop(0))
        return [Landmark(c, self._probes[c][1]) for c in chosen]

    def neighbours(
        self, player: Coordinate, exclude: set[str], count: int = NEIGHBOURS
    ) -> list[Landmark]:
        """The `count` probe-able containers nearest `player` by estimate, but `exclude`."""
        ids = [c for c in self._probes if c not in exclude]
        if not ids or count < 1:
            return []
        here = Coordinates.of([player])
        estimates = distance(here, self.book.coordinates(ids))
        nearest = np.argsort(estimates, kind="stable")[:count]
        return [Landmark(ids[i], self._probes[ids[i]][1]) for i in nearest]

    def place(
        self,
        player_id: str,
        samples: Sequence[tuple[str, float]],
        learn_from: Collection[str] | None = None,
    ) -> PlacedPlayer:
        """Place a player from (container id, RTT seconds) samples, then learn from those of
        `learn_from` (default: all): a second round fits on both rounds' samples but learns
        only from the new ones, or a container would be pulled twice for one measurement.

        A sample the book refuses (an absurd RTT, an unknown container) is left out with its
        reason; with none left the player stays unplaced.
        """
        book, config = self.book, self.book.config
        refused: dict[str, str] = {}
        usable: dict[str, float] = {}
        for container_id, rtt in samples:
            if container_id not in book:
                refused[container_id] = f"container {container_id!r} has no coordinate"
            elif not (math.isfinite(rtt) and MIN_RTT <= rtt <= config.max_rtt):
                refused[container_id] = (
                    f"an RTT of {rtt!r} s is not a number from {MIN_RTT:g} to {config.max_rtt:g}"
                )
            else:
                usable[container_id] = rtt
        if not usable:
            return PlacedPlayer(None, refused=refused)
        placed_at = fit(book.coordinates(list(usable)), np.array(list(usable.values())), config)
        if not all(math.isfinite(x) for x in (*placed_at.vec, placed_at.height, placed_at.error)):
            return PlacedPlayer(None, refused=refused)  # never write a NaN into the book
        book.add(player_id)
        try:
            book.put(player_id, placed_at)
            learning = {c: r for c, r in usable.items() if learn_from is None or c in learn_from}
            for container_id, rtt in learning.items():
                try:
                    book.observe(RttSample(player_id, Role.PLAYER, container_id, rtt))
                except SampleRefusedError as exc:
                    refused[container_id] = str(exc)
            placed = book.coordinate(player_id)
        finally:
            book.remove(player_id)
        moved = {c: book.coordinate(c) for c in learning if c not in refused}
        return PlacedPlayer(placed, moved, refused)


def fit(peers: Coordinates, rtt: Vector, config: VivaldiConfig) -> Coordinate:
    """The coordinate whose estimated RTTs to `peers` best match `rtt` in relative residuals
    squared (Levenberg-Marquardt, from the peers' centroid weighted by 1/rtt^2). Its error
    estimate is the median relative residual: the springs it pulls on later are as strong as
    the fit was good."""
    pull = 1.0 / rtt**2  # start where the nearest peers pull hardest
    vec = pull @ peers.vec / pull.sum()
    gaps = np.sqrt(np.sum((peers.vec - vec) ** 2, axis=1))
    height = max(float(np.min(rtt - peers.height - gaps)), config.height_min)
    damping = 1.0e-3

    def residuals(vec: Vector, height: float) -> Vector:
        gaps: Vector = np.sqrt(np.sum((peers.vec - vec) ** 2, axis=1))
        return (gaps + height + peers.height - rtt) / rtt

    cost = float(np.sum(residuals(vec, height) ** 2))
    for _ in range(FIT_STEPS):
        away = vec - peers.vec
        gaps = np.maximum(np.sqrt(np.sum(away**2, axis=1)), 1.0e-9)
        jacobian = np.column_stack((away / gaps[:, None], np.ones(len(rtt)))) / rtt[:, None]
        normal = jacobian.T @ jacobian
        gradient = jacobian.T @ residuals(vec, height)
        damped = normal + damping * np.diag(np.diag(normal) + 1.0e-12)
        step = np.linalg.solve(damped, -gradient)
        new_vec, new_height = vec + step[:-1], max(height + step[-1], config.height_min)
        new_cost = float(np.sum(residuals(new_vec, new_height) ** 2))
        if new_cost < cost:
            vec, height, cost, damping = new_vec, new_height, new_cost, damping * 0.3
        else:
            damping *= 10.0
    error = float(np.median(np.abs(residuals(vec, height))))
    return Coordinate(tuple(float(x) for x in vec), height, min(max(error, 0.05), config.error_max))
