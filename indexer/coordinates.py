"""Network coordinates: estimate the RTT between any two nodes from a few measured ones.

Vivaldi (Dabek, Cox, Kaashoek, Morris, "Vivaldi: a decentralized network coordinate system",
SIGCOMM 2004) as Serf's `coordinate` package runs it: each node is a point in a small
Euclidean space plus a non-negative height (the paper's height vectors: the access link,
which every path in or out of the node crosses), and the estimated RTT between two nodes is
the distance between their vectors plus both heights. A measured RTT pulls or pushes the
measuring node along the line to its peer by a step scaled by how sure each side is of its
place (the paper's adaptive timestep and error weighting, cc = ce = 0.25), so a newcomer
moves fast and a settled node barely twitches.

The indexer keeps every coordinate itself, so three of Serf's extras are left out: gravity
(it only keeps a drifting cluster near the origin, and drift changes no distance), the
per-peer median filter (a reporter sends the median of several probes already, DESIGN.md
step 3), and the adjustment term of Lee et al. (on benchmarks/coordinates.py's topology it
moved the median error by less than a point, for a fourth number per node). The units are
seconds. Pure: randomness comes in as a `numpy.random.Generator`; nothing depends on time.

Who may move which coordinate is the sanity policy of `CoordinateBook`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from numpy.typing import NDArray

from indexer.errors import IndexerError

Vector = NDArray[np.float64]
_ZERO = 1.0e-6  # seconds: below this two vectors coincide and the direction is drawn at random


class Role(Enum):
    """Who measured a sample; it is stamped from the reporter's authenticated connection."""

    CONTAINER = "container"
    VERIFIER = "verifier"
    PLAYER = "player"


class Refusal(Enum):
    """Why a sample was not learned from; CLOSER_THAN_ESTIMATE is what a lying container gets."""

    INVALID_RTT = "invalid-rtt"
    SELF_SAMPLE = "self-sample"
    UNKNOWN_NODE = "unknown-node"
    CLOSER_THAN_ESTIMATE = "closer-than-estimate"


class SampleRefusedError(IndexerError):
    """A reporter's RTT sample was not learned from; `reason` says which check refused it."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class VivaldiConfig:
    """The tuning of the coordinate system; Serf's defaults unless said otherwise.

    dimensions: Euclidean dimensions; Ledlie et al. (NSDI 2007) saw no gain beyond 7.
    error_max: a fresh node's error estimate, and the ceiling of every error estimate.
    cc: the largest fraction of the prediction error one sample may move a node by.
    ce: the largest weight one sample has in a node's moving error estimate.
    height_min: seconds; a height must stay positive for the height update to work.
    max_rtt: seconds; longer samples are refused as absurd (Serf's limit).
    container_tolerance: a container's own report may stray from the estimate by this share
        (or by the pair's combined error estimate, if larger) before it counts; 0.4 refuses
        about 1 % of honest reports about nearby peers on benchmarks/coordinates.py's topology.
    """

    dimensions: int = 8
    error_max: float = 1.5
    cc: float = 0.25
    ce: float = 0.25
    height_min: float = 10.0e-6
    max_rtt: float = 10.0
    container_tolerance: float = 0.4

    def __post_init__(self) -> None:
        if self.dimensions < 1:
            raise IndexerError(f"coordinates need at least one dimension, not {self.dimensions}")
        for name in ("cc", "ce"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise IndexerError(f"{name} must be in (0, 1], not {getattr(self, name)}")
        if not (self.error_max > 0 and self.height_min > 0 and self.max_rtt > 0):
            raise IndexerError("error_max, height_min and max_rtt must be positive")
        if self.container_tolerance < 0:
            raise IndexerError("container_tolerance must not be negative")


@dataclass(frozen=True, slots=True)
class Coordinate:
    """One node's place: vector and height in seconds, and its dimensionless error estimate."""

    vec: tuple[float, ...]
    height: float
    error: float


@dataclass(frozen=True, slots=True)
class Coordinates:
    """Many nodes' coordinates, one row per node, so updates and estimates run vectorised."""

    vec: Vector  # (n, dimensions)
    height: Vector  # (n,)
    error: Vector  # (n,)

    @classmethod
    def fresh(cls, count: int, config: VivaldiConfig) -> Coordinates:
        """Nodes that know nothing yet: at the origin, with the largest error."""
        return cls(
            np.zeros((count, config.dimensions)),
            np.full(count, config.height_min),
            np.full(count, config.error_max),
        )

    @classmethod
    def of(cls, coordinates: Sequence[Coordinate]) -> Coordinates:
        """The rows of these coordinates, in their order."""
        return cls(
            np.array([c.vec for c in coordinates], dtype=np.float64),
            np.array([c.height for c in coordinates], dtype=np.float64),
            np.array([c.error for c in coordinates], dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.height)

    def take(self, rows: NDArray[np.intp]) -> Coordinates:
        return Coordinates(self.vec[rows], self.height[rows], self.error[rows])

    def put(self, rows: NDArray[np.intp], values: Coordinates) -> None:
        """Overwrite `rows` in place (the arrays are shared; the record itself stays frozen)."""
        self.vec[rows] = values.vec
        self.height[rows] = values.height
        self.error[rows] = values.error

    def row(self, index: int) -> Coordinate:
        return Coordinate(
            tuple(float(x) for x in self.vec[index]),
            float(self.height[index]),
            float(self.error[index]),
        )


def distance(a: Coordinates, b: Coordinates) -> Vector:
    """Estimated RTT in seconds between row i of `a` and row i of `b`; a one-row side is
    broadcast against every row of the other."""
    return _length(a.vec - b.vec) + a.height + b.height


def _length(rows: Vector) -> Vector:
    """The Euclidean length of each row; einsum is twice as fast as `np.linalg.norm` here."""
    squares: Vector = np.einsum("ij,ij->i", rows, rows)
    return np.sqrt(squares)


def _weight(nodes: Coordinates, peers: Coordinates) -> Vector:
    """How much of a step each node takes: its share of the pair's error (the less sure side
    moves more)."""
    shares: Vector = nodes.error / np.maximum(nodes.error + peers.error, _ZERO)
    return shares


def update(
    nodes: Coordinates,
    peers: Coordinates,
    rtt: Vector,
    config: VivaldiConfig,
    rng: np.random.Generator,
) -> Coordinates:
    """Row i of `nodes` after it measured `rtt[i]` seconds to row i of `peers`.

    Vivaldi's spring step as Serf's `updateVivaldi` takes it: the weight
    w = e_node / (e_node + e_peer) lets the less certain side do the moving; the error
    estimate follows the sample's relative error |estimate - rtt| / rtt with weight ce * w;
    the force cc * w * (rtt - estimate) moves the node along the unit vector from the peer
    (away when positive), and its height by force * (h_node + h_peer) / |x_node - x_peer|,
    never below `height_min`. Coinciding vectors (every newcomer sits at the origin) are
    separated in a uniformly random direction. Callers validate `rtt` (finite, positive);
    every row is computed from the inputs alone, so a batch behaves as if its samples
    arrived at the same instant.
    """
    estimate = distance(nodes, peers)
    weight = _weight(nodes, peers)
    relative_error = np.abs(estimate - rtt) / rtt
    error = np.minimum(
        config.ce * weight * relative_error + nodes.error * (1.0 - config.ce * weight),
        config.error_max,
    )
    force = config.cc * weight * (rtt - estimate)

    away = nodes.vec - peers.vec
    gap = _length(away)
    apart = gap > _ZERO
    if not apart.all():
        away[~apart] = rng.standard_normal((int((~apart).sum()), config.dimensions))
        gap = np.where(apart, gap, _length(away))
    vec = nodes.vec + away * (force / gap)[:, None]
    # Serf moves the height only when the vectors are apart: the share is undefined otherwise.
    raised = nodes.height + force * (nodes.height + peers.height) / np.where(apart, gap, 1.0)
    height = np.where(apart, np.maximum(raised, config.height_min), nodes.height)
    return Coordinates(vec, height, error)


@dataclass(frozen=True, slots=True)
class RttSample:
    """`reporter` measured `rtt` seconds to `peer` (the median of a few probes)."""

    reporter: str
    role: Role
    peer: str
    rtt: float


class CoordinateBook:
    """Every node's coordinate by id, learned from sanity-checked RTT samples.

    The sanity policy, so that a container cannot make itself look close:
    - an RTT must be finite, positive and at most `max_rtt`, and a node cannot sample itself;
    - a sample a player or a verifier measured moves both ends, as Vivaldi does. A container
      can delay its replies to their probes but cannot answer before a probe arrives, so such a
      sample can only make it look farther;
    - a container's own report is unverifiable, so it is compared with the estimate within a
      tolerance: `container_tolerance`, or the pair's combined error estimate when that is
      larger (a fresh pair's estimate means little, and an honest newcomer must not be
      accused). Below the band it is refused: it claims the container is closer than the
      evidence allows. Inside the band it is honest jitter: accepted, and changes nothing.
      Above the band it moves nothing but the container's height, and only up, by the
      Vivaldi step cc * w * (rtt - estimate): the excess is put on its access link, which
      makes it look farther from every node at once. Moving its vector instead would let it
      pick peers to be pushed away from, towards the players it wants; moving the peer would
      let it drag players or push rival containers away; and without the band, jitter alone
      would ratchet an honest reporter's height up.
    A refused sample changes nothing; its `SampleRefusedError.reason` lets the caller decide
    whether the reporter deserves a penalty.
    """

    def __init__(self, config: VivaldiConfig, rng: np.random.Generator) -> None:
        self.config = config
        self._rng = rng
        self._rows: dict[str, int] = {}
        self._ids: list[str] = []
        self._points = Coordinates.fresh(64, config)

    def __contains__(self, node_id: str) -> bool:
        return node_id in self._rows

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, node_id: str) -> None:
        """A node joins knowing nothing: at the origin, with the largest error."""
        if node_id in self._rows:
            raise IndexerError(f"node {node_id!r} already has a coordinate")
        if len(self._ids) == len(self._points):
            grown = Coordinates.fresh(2 * len(self._points), self.config)
            grown.put(np.arange(len(self._ids)), self._points)
            self._points = grown
        row = len(self._ids)
        self._points.put(np.array([row]), Coordinates.fresh(1, self.config))
        self._rows[node_id] = row
        self._ids.append(node_id)

    def remove(self, node_id: str) -> None:
        """Forget a node; the last row moves into its place so the arrays stay dense."""
        row = self._row(node_id)
        last = len(self._ids) - 1
        moved = self._ids[last]
        self._points.put(np.array([row]), self._points.take(np.array([last])))
        self._ids[row] = moved
        self._rows[moved] = row
        self._ids.pop()
        del self._rows[node_id]

    def coordinate(self, node_id: str) -> Coordinate:
        return self._points.row(self._row(node_id))

    def estimate(self, node_id: str, peer_ids: Sequence[str]) -> Vector:
        """Estimated RTT in seconds from `node_id` to each of `peer_ids`, in their order."""
        origin = self._points.take(self._rows_of([node_id]))
        return distance(origin, self._points.take(self._rows_of(peer_ids)))

    def observe(self, sample: RttSample) -> None:
        """Learn from one sample, or raise `SampleRefusedError` saying why it was not."""
        reporter, peer = self._check(sample)
        if sample.role is Role.CONTAINER:
            self._learn_from_container(sample, reporter, peer)
            return
        ends = np.array([reporter, peer])  # each end learns from the other's coordinate
        rtt = np.full(2, sample.rtt)
        before, other = self._points.take(ends), self._points.take(ends[::-1])
        moved = update(before, other, rtt, self.config, self._rng)
        self._points.put(ends, moved)

    def put(self, node_id: str, coordinate: Coordinate) -> None:
        """Set a node's coordinate outright: for a placement computed elsewhere
        (indexer/placement.py fits a newcomer to its samples at once)."""
        self._points.put(np.array([self._row(node_id)]), Coordinates.of([coordinate]))

    def coordinates(self, node_ids: Sequence[str]) -> Coordinates:
        """These nodes' coordinates as rows, in their order."""
        return self._points.take(self._rows_of(node_ids))

    def _row(self, node_id: str) -> int:
        return int(self._rows_of([node_id])[0])

    def _rows_of(self, node_ids: Sequence[str]) -> NDArray[np.intp]:
        try:  # map runs the lookups in C: thousands of ids per estimate
            found = map(self._rows.__getitem__, node_ids)
            return np.fromiter(found, dtype=np.intp, count=len(node_ids))
        except KeyError as unknown:
            raise IndexerError(
                f"node {unknown.args[0]!r} has no coordinate; add it first"
            ) from None

    def _check(self, sample: RttSample) -> tuple[int, int]:
        """The reporter's and the peer's rows, once it passes the checks needing no estimate."""
        rtt = sample.rtt
        if not (math.isfinite(rtt) and self.config.height_min <= rtt <= self.config.max_rtt):
            raise SampleRefusedError(
                Refusal.INVALID_RTT,
                f"{sample.reporter!r} reported an RTT of {rtt!r} s to {sample.peer!r}; an RTT "
                f"must be at least {self.config.height_min:g} s and at most "
                f"{self.config.max_rtt:g} s",
            )
        if sample.reporter == sample.peer:
            raise SampleRefusedError(
                Refusal.SELF_SAMPLE,
                f"{sample.reporter!r} reported an RTT to itself; only RTTs to another node "
                "place it",
            )
        for node_id in (sample.reporter, sample.peer):
            if node_id not in self._rows:
                raise SampleRefusedError(
                    Refusal.UNKNOWN_NODE,
                    f"node {node_id!r} has no coordinate (it left, or never joined); "
                    "the sample is dropped",
                )
        return self._rows[sample.reporter], self._rows[sample.peer]

    def _learn_from_container(self, sample: RttSample, reporter: int, peer: int) -> None:
        me = self._points.take(np.array([reporter]))
        them = self._points.take(np.array([peer]))
        estimate = float(distance(me, them)[0])
        tolerance = max(self.config.container_tolerance, float(me.error[0] + them.error[0]))
        if sample.rtt < estimate * (1.0 - tolerance):
            raise SampleRefusedError(
                Refusal.CLOSER_THAN_ESTIMATE,
                f"container {sample.reporter!r} reported {sample.rtt * 1e3:.1f} ms to "
                f"{sample.peer!r}, more than {tolerance:.0%} below the "
                f"{estimate * 1e3:.1f} ms that players' and verifiers' measurements place it "
                "at; a container's own report cannot bring it closer",
            )
        if sample.rtt > estimate * (1.0 + tolerance):
            step = self.config.cc * _weight(me, them)[0] * (sample.rtt - estimate)
            self._points.height[reporter] += step
