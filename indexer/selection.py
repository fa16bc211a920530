"""Selection: the container that takes a play request, fast enough for a large network.

`Fleet` is the local index both registries read: numpy columns, one row per container, that
the registry keeps in step with each container's lifecycle (`set_candidate`, `set_deadline`,
`set_load`, ...). `Fleet.select` is pure: `now` and a `numpy.random.Generator` come in.

Filters, in the seed's order; the first that empties the set names the refusal
(`NoContainerError.filter`):
  standby    candidate (admitted, live, maintenance open), deadline >= now, and load < 1;
  build      the requested build is deployed;
  resources  VRAM, cores, RAM and uplink meet the `Requirements`, it has one of the listed
             encoders, and a seat of the requested shape still fits: load + share <= 1;
  rtt        estimated RTT <= the bound. Passed by all when the player is unknown. A
             container without a coordinate passes only an infinite bound: nobody can show
             that it keeps a finite one;
  price      price per minute <= the budget.

Ranking (lower is better). q is the verifier's QoS in [0, 1] (UNPROVEN_QOS = 0.5 until a
verifier scored it: as likely good as bad), p >= 0 its penalty, f_w(q) = 1 + w * (1 - q)
inflates a base by up to w for a poor score. C is the budget when finite and positive, else
the fleet's median price (1 when that is 0); R is the bound when finite and positive, else
the median RTT of the containers that pass every filter (50 ms when none has a coordinate).
An RTT that is unknown (player unknown, or container without a coordinate) counts as R.
  lowest-cost      price * f_0.1(q) + p * C          per minute; quantum 0.001
                   (price first, quality breaks near-ties: at most 10 %)
  best-experience  rtt_ms * f_1(q) + p * R_ms        ms; quantum 0.1 ms
                   with the player unknown: f_1(q) + p, quality alone; quantum 0.001
  best-overall     (price / C + rtt / R) * f_0.5(q) + p     quantum 0.001
A penalty of 1 costs as much as one more budget, one more bound, or one more of each term.
Scores are quantised (floor(score / quantum)) so that near-equal containers tie, and ties are
broken uniformly at random with the injected generator: load spreads over equal containers.
A shortlist is the best `shortlist` containers by quantised score, ties in random order.

Speed (benchmarks/indexer.py: 40,000 containers). Containers are grouped per build into
blocks: copies of the columns the filters scan, ordered by region so that the regions a
request keeps are one slice, and a packed row per container of what ranking needs. A request
tests its slice for a free seat and the budget in two vectorised comparisons, packs the
survivors (a tenth, typically) with one `compress`, and only those get an RTT and a score.
The setters write through to the blocks; a block is rebuilt lazily when its membership
changes, its standby column re-swept lazily when a deadline may have passed, and its seat
costs are kept for the last SHAPE_CACHE (shape, requirements) pairs asked. Whole regions are
pruned by the triangle inequality: a region keeps a centroid c, a radius r >= |x - c| over
its members' vectors and their least height h_min, so no member is nearer a player at p than
|p - c| - r + h_min + h_player (exact: no false negatives). Updates only grow r; it is
recomputed once the region has seen as many updates as it has placed members.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from contracts.protocol import StreamCapacity
from contracts.requirements import Requirements
from indexer.coordinates import Coordinate, VivaldiConfig
from indexer.errors import IndexerError, NoContainerError
from indexer.lifecycle import FULL

Vector = NDArray[np.float64]
Rows = NDArray[np.intp]
_T = TypeVar("_T")

UNPROVEN_QOS = 0.5
FALLBACK_RTT_SCALE = 0.050  # seconds
SHAPE_CACHE = 16  # (shape, requirements) seat-cost columns kept per build
_SLACK = 1e-9  # seconds: region pruning never drops a row that rounding puts on the bound
_ROW_FILL = {  # a free row's values
    "_price": 0.0, "_vram": 0.0, "_cpu": 0.0, "_ram": 0.0, "_uplink": 0.0,
    "_maxw": 0.0, "_maxh": 0.0, "_maxfps": 0.0, "_cap_id": 0, "_enc_id": 0, "_region": 0,
    "_used": False, "_candidate": False, "_deadline": -math.inf, "_load": 0.0,
    "_qos": UNPROVEN_QOS, "_pen": 0.0, "_vec": 0.0, "_height": math.inf,
}  # fmt: skip


class Policy(Enum):
    LOWEST_COST = "lowest-cost"
    BEST_EXPERIENCE = "best-experience"
    BEST_OVERALL = "best-overall"


QUALITY_WEIGHT = {Policy.LOWEST_COST: 0.1, Policy.BEST_EXPERIENCE: 1.0, Policy.BEST_OVERALL: 0.5}
QUANTUM = {Policy.LOWEST_COST: 0.001, Policy.BEST_EXPERIENCE: 0.1, Policy.BEST_OVERALL: 0.001}
QUALITY_QUANTUM = 0.001  # best-experience with the player unknown


@dataclass(frozen=True, slots=True)
class Profile:
    """What selection knows of a container's announced specs."""

    container_id: str
    builds: frozenset[str]  # builds deployed (today: the reference game's name)
    region: str  # the operator's declared region, e.g. "eu-west"
    price_per_minute: float  # what a player pays per minute on this container
    vram_mib: int  # the largest GPU's memory; 0 without a GPU
    cpu_cores: int
    ram_mib: int
    uplink_mbps: float
    encoders: frozenset[str]  # e.g. {"h264", "vp8"}
    max_width: int
    max_height: int
    max_fps: int
    capacity: tuple[StreamCapacity, ...] = ()  # (): one session of anything within the limits

    def __post_init__(self) -> None:
        if not (math.isfinite(self.price_per_minute) and self.price_per_minute >= 0):
            raise IndexerError(
                f"container {self.container_id!r}: the price per minute must be a finite "
                f"number >= 0, not {self.price_per_minute!r}"
            )


@dataclass(frozen=True, slots=True)
class Request:
    build: str
    width: int
    height: int
    fps: int
    requirements: Requirements = Requirements()
    budget_per_minute: float = math.inf
    rtt_bound: float = math.inf  # seconds
    policy: Policy = Policy.BEST_OVERALL
    player: Coordinate | None = None  # None: unknown; the RTT filter passes all, RTT unranked

    def __post_init__(self) -> None:
        if min(self.width, self.height, self.fps) <= 0:
            raise IndexerError(f"a stream needs a positive size and rate, not {self.shape}")
        if not (self.budget_per_minute >= 0 and self.rtt_bound >= 0):
            raise IndexerError("the budget and the RTT bound must be numbers >= 0")

    @property
    def shape(self) -> str:
        return f"{self.width}x{self.height}@{self.fps}"


@dataclass(frozen=True, slots=True)
class Choice:
    container_id: str
    share: float  # the seat's cost on that container
    rtt: float  # estimated seconds; math.nan when the player or the container is unplaced
    score: float  # the policy's quantised score, lower is better


def seat_share(profile: Profile, width: int, height: int, fps: int) -> float | None:
    """The share of the container one session of that shape takes, None when it cannot
    stream it: the smallest advertised shape covering it (by pixels per second, then the
    most sessions), 1.0 without capacity; never beyond the container's limits. The rule of
    indexer/registry.py's claims, which test_selection.py checks against."""
    if width > profile.max_width or height > profile.max_height or fps > profile.max_fps:
        return None
    share = _share_of(profile.capacity, width, height, fps)
    return None if math.isnan(share) else share


def _share_of(capacity: tuple[StreamCapacity, ...], width: int, height: int, fps: int) -> float:
    """seat_share without the limits; NaN when no advertised shape covers the request."""
    if not capacity:
        return 1.0
    covering = [c for c in capacity if c.width >= width and c.height >= height and c.fps >= fps]
    if not covering:
        return math.nan
    smallest = min(covering, key=lambda c: (c.width * c.height * c.fps, -c.sessions))
    return 1.0 / smallest.sessions


_Q = TypeVar("_Q", float, Vector)


def quality_factor(policy: Policy, qos: _Q) -> _Q:
    """f_w(q) of the module docstring, for one QoS or a column of them."""
    return 1.0 + QUALITY_WEIGHT[policy] * (1.0 - qos)


class _Interned(Generic[_T]):
    """Distinct values (capacity lists, encoder sets) numbered with reference counts, so a
    column computes a value per distinct one and gathers."""

    def __init__(self) -> None:
        self.ids: dict[_T, int] = {}
        self.values: list[_T] = []  # by number; a free number keeps its old value
        self.refs: list[int] = []
        self.free: list[int] = []

    def take(self, value: _T) -> int:
        number = self.ids.get(value)
        if number is None:
            if self.free:
                number = self.free.pop()
                self.values[number] = value
            else:
                number = len(self.values)
                self.values.append(value)
                self.refs.append(0)
            self.ids[value] = number
        self.refs[number] += 1
        return number

    def drop(self, number: int) -> None:
        self.refs[number] -= 1
        if not self.refs[number]:
            del self.ids[self.values[number]]
            self.free.append(number)


@dataclass(eq=False, slots=True)
class _Region:
    """A declared region's bounds over its members' coordinates: no member is nearer a
    player at p than |p - centre| + low, where low = least_height - radius."""

    name: str
    centre: tuple[float, ...]
    members: int = 0
    placed: int = 0  # members with a coordinate
    loose: int = 0  # updates since the bounds were last computed
    radius: float = 0.0
    least_height: float = math.inf
    low: float = math.inf  # inf while nobody is placed: the region prunes itself


@dataclass(eq=False, slots=True)
class _Block:
    """One build's containers, ordered by region so that a run of regions is a slice.

    `spare` and `price` are the columns the cheap filters scan; `rows` packs what only the
    survivors need, compressed in one call: [-2x, |x|^2, height, base_cost, fexp, fall, pall,
    penalty, row] for a vector x (see `_rtts`), 128 bytes with 8 dimensions: two cache lines.
    Built from the fleet's columns; the setters write through.

    `spare` folds the standby filter in: FULL - load for a candidate that is live, -inf
    otherwise. Liveness is swept lazily: the rows whose deadline was below `swept` (the
    `now` of the last sweep) are -inf, and every other candidate's deadline is at least
    `horizon`; a request at a `now` outside [swept, horizon) sweeps first.
    """

    slots: Rows
    pos: NDArray[np.int32]  # slot -> row, -1 for the fleet's other rows
    regions: list[tuple[_Region, int, int]]  # (region, first row, end row), non-empty, in order
    spare: Vector  # FULL - load when standing by, else -inf
    until: Vector  # the deadline when a candidate, else -inf
    price: Vector
    rows: NDArray[np.float64]  # (n, dims + 8)
    penalised: bool
    unplaced: int
    max_price: float
    costs: OrderedDict[tuple[int, int, int, Requirements], Vector]
    swept: float = math.inf  # none yet: the first request sweeps
    horizon: float = -math.inf


class Fleet:
    """Every registered container's profile and state, indexed for `select`."""

    def __init__(self, dimensions: int = VivaldiConfig().dimensions) -> None:
        self.dimensions = d = dimensions
        # Columns of `_Block.rows` after the vector: height, the quality-dependent ones, row.
        self._h, self._base, self._fexp, self._fall, self._pall, self._pen_col, self._at = range(
            d + 1, d + 8
        )
        self._ids: list[str] = []
        self._profiles: list[Profile | None] = []
        self._slot: dict[str, int] = {}
        self._free: list[int] = []
        self._members: dict[str, set[int]] = {}  # build -> slots
        self._blocks: dict[str, _Block] = {}
        self._caps: _Interned[tuple[StreamCapacity, ...]] = _Interned()
        self._encs: _Interned[frozenset[str]] = _Interned()
        self._median: float | None = None
        self._price, self._vram, self._cpu = np.zeros(0), np.zeros(0), np.zeros(0)
        self._ram, self._uplink = np.zeros(0), np.zeros(0)
        self._maxw, self._maxh, self._maxfps = np.zeros(0), np.zeros(0), np.zeros(0)
        self._cap_id = np.zeros(0, np.intp)
        self._enc_id = np.zeros(0, np.intp)
        self._region = np.zeros(0, np.intp)
        self._used, self._candidate = np.zeros(0, bool), np.zeros(0, bool)
        self._deadline, self._load = np.zeros(0), np.zeros(0)
        self._qos, self._pen = np.zeros(0), np.zeros(0)
        self._vec, self._height = np.zeros((0, d)), np.zeros(0)
        self._alloc_rows(64)
        self._region_id: dict[str, int] = {}
        self._regions: list[_Region] = []

    # -- storage ---------------------------------------------------------------------------

    def _alloc_rows(self, size: int) -> None:
        """Preallocated columns, doubled when full; new rows are free."""
        old = len(self._ids)
        _grow(self, _ROW_FILL, old, size)
        self._ids.extend([""] * (size - old))
        self._profiles.extend([None] * (size - old))
        self._free.extend(range(size - 1, old - 1, -1))

    def __contains__(self, container_id: object) -> bool:
        return container_id in self._slot

    def __len__(self) -> int:
        return len(self._slot)

    def _row(self, container_id: str) -> int:
        try:
            return self._slot[container_id]
        except KeyError:
            raise IndexerError(f"container {container_id!r} is not in the fleet") from None

    # -- membership ------------------------------------------------------------------------

    def add(self, profile: Profile, coordinate: Coordinate | None = None) -> None:
        """Index a container: not yet a candidate, load 0, deadline -inf, QoS unproven, and
        without a coordinate unless one is given. A re-add of a known id replaces its
        profile and starts it afresh the same way."""
        if coordinate is not None:
            self._check_dimensions(coordinate)
        if profile.container_id in self._slot:
            self.remove(profile.container_id)
        if not self._free:
            self._alloc_rows(2 * len(self._ids))
        slot = self._free.pop()
        self._slot[profile.container_id] = slot
        self._ids[slot] = profile.container_id
        self._profiles[slot] = profile
        self._price[slot] = profile.price_per_minute
        self._vram[slot], self._cpu[slot] = profile.vram_mib, profile.cpu_cores
        self._ram[slot], self._uplink[slot] = profile.ram_mib, profile.uplink_mbps
        self._maxw[slot], self._maxh[slot] = profile.max_width, profile.max_height
        self._maxfps[slot] = profile.max_fps
        self._cap_id[slot] = self._caps.take(profile.capacity)
        self._enc_id[slot] = self._encs.take(profile.encoders)
        self._used[slot], self._candidate[slot] = True, False
        self._deadline[slot], self._load[slot] = -math.inf, 0.0
        self._qos[slot], self._pen[slot] = UNPROVEN_QOS, 0.0
        self._height[slot] = math.inf
        region = self._region_id.get(profile.region)
        if region is None:
            region = self._new_region(profile.region)
        self._regions[region].members += 1
        self._region[slot] = region
        for build in profile.builds:
            self._members.setdefault(build, set()).add(slot)
            self._blocks.pop(build, None)
        if coordinate is not None:
            self._place(slot, coordinate)
        self._median = None

    def remove(self, container_id: str) -> None:
        slot = self._row(container_id)
        profile = self._profiles[slot]
        assert profile is not None
        for build in profile.builds:
            members = self._members[build]
            members.discard(slot)
            if not members:
                del self._members[build]
            self._blocks.pop(build, None)
        region = int(self._region[slot])
        place = self._regions[region]
        place.members -= 1
        if not place.members:  # free for the next new region
            del self._region_id[place.name]
        elif math.isfinite(self._height[slot]):
            place.placed -= 1
            self._loosen(region)
        self._caps.drop(int(self._cap_id[slot]))
        self._encs.drop(int(self._enc_id[slot]))
        self._used[slot], self._candidate[slot] = False, False
        self._height[slot] = math.inf
        self._profiles[slot] = None
        del self._slot[container_id]
        self._free.append(slot)
        self._median = None

    def profile(self, container_id: str) -> Profile:
        profile = self._profiles[self._row(container_id)]
        assert profile is not None
        return profile

    # -- state -----------------------------------------------------------------------------

    def set_candidate(self, container_id: str, candidate: bool) -> None:
        """Whether the lifecycle offers it: admitted (READY), LIVE, maintenance OPEN."""
        slot = self._row(container_id)
        self._candidate[slot] = candidate
        self._write_until(slot)

    def set_deadline(self, container_id: str, deadline: float) -> None:
        """Live until this `now` (the last heartbeat plus the timeout)."""
        slot = self._row(container_id)
        self._deadline[slot] = deadline
        self._write_until(slot)

    def _write_until(self, slot: int) -> None:
        candidate = bool(self._candidate[slot])
        until = float(self._deadline[slot]) if candidate else -math.inf
        spare = FULL - float(self._load[slot]) if candidate else -math.inf
        for blk, row in self._rows_in_blocks(slot):
            blk.until[row], blk.spare[row] = until, spare
            if candidate:
                blk.horizon = min(blk.horizon, until)

    def set_load(self, container_id: str, load: float) -> None:
        """The share of the container its seats take, 0 to 1."""
        slot = self._slot.get(container_id)
        if slot is None:
            slot = self._row(container_id)
        if not -1e-9 <= load <= FULL:
            raise IndexerError(f"container {container_id!r}: a load is within 0..1, not {load!r}")
        load = max(load, 0.0)
        self._load[slot] = load
        profile = self._profiles[slot]
        assert profile is not None
        blocks, spare = self._blocks, FULL - load
        for build in profile.builds:
            blk = blocks.get(build)
            if blk is not None:
                row = blk.pos.item(slot)
                if blk.spare.item(row) > -math.inf:  # else not a candidate, or swept as silent
                    blk.spare[row] = spare

    def load(self, container_id: str) -> float:
        load: float = self._load.item(self._row(container_id))
        return load

    def set_quality(self, container_id: str, qos: float, penalty: float = 0.0) -> None:
        """The verifiers' score in [0, 1] and a penalty >= 0 (see the module docstring)."""
        if not (0.0 <= qos <= 1.0 and 0.0 <= penalty < math.inf):
            raise IndexerError(
                f"container {container_id!r}: QoS is within 0..1 and a penalty a finite "
                f"number >= 0, not {qos!r} and {penalty!r}"
            )
        slot = self._row(container_id)
        self._qos[slot], self._pen[slot] = qos, penalty
        values = self._quality_columns(self._price[slot : slot + 1], qos, penalty)[0]
        for blk, row in self._rows_in_blocks(slot):
            blk.rows[row, self._base : self._at] = values
            blk.penalised = blk.penalised or penalty > 0

    def set_coordinate(self, container_id: str, coordinate: Coordinate) -> None:
        self._check_dimensions(coordinate)
        slot = self._row(container_id)
        region = int(self._region[slot])
        if math.isfinite(self._height[slot]):
            self._regions[region].placed -= 1
            self._regions[region].loose += 1
        self._place(slot, coordinate)
        self._loosen(region, by=0)

    def seat_cost(self, container_id: str, width: int, height: int, fps: int) -> float | None:
        """The share one session of that shape takes there; None: it cannot stream it."""
        return seat_share(self.profile(container_id), width, height, fps)

    def _rows_in_blocks(self, slot: int) -> list[tuple[_Block, int]]:
        profile = self._profiles[slot]
        assert profile is not None
        found = []
        for build in profile.builds:
            blk = self._blocks.get(build)
            if blk is not None:
                found.append((blk, blk.pos.item(slot)))
        return found

    @staticmethod
    def _quality_columns(
        price: Vector, qos: Vector | float, pen: Vector | float
    ) -> NDArray[np.float64]:
        """base_cost, fexp, fall, pall, penalty per row: the scores' static parts."""
        q = np.asarray(qos, dtype=np.float64)
        fall = quality_factor(Policy.BEST_OVERALL, q)
        return np.column_stack(
            np.broadcast_arrays(
                price * quality_factor(Policy.LOWEST_COST, q),
                quality_factor(Policy.BEST_EXPERIENCE, q),
                fall,
                price * fall,
                np.asarray(pen, dtype=np.float64),
            )
        )

    # -- coordinates and regions -----------------------------------------------------------

    def _check_dimensions(self, coordinate: Coordinate) -> None:
        if len(coordinate.vec) != self.dimensions:
            raise IndexerError(
                f"a coordinate here has {self.dimensions} dimensions, not {len(coordinate.vec)}"
            )

    def _new_region(self, name: str) -> int:
        fresh = _Region(name, (0.0,) * self.dimensions)
        region = next((i for i, r in enumerate(self._regions) if not r.members), None)
        if region is None:
            region = len(self._regions)
            self._regions.append(fresh)
        self._regions[region] = fresh
        self._region_id[name] = region
        return region

    def _place(self, slot: int, coordinate: Coordinate) -> None:
        """Write a coordinate and grow its region's bounds to cover it."""
        vec = np.asarray(coordinate.vec, dtype=np.float64)
        height = coordinate.height
        self._vec[slot], self._height[slot] = vec, height
        place = self._regions[int(self._region[slot])]
        point = tuple(vec.tolist())
        if not place.placed:
            place.centre, place.radius, place.least_height = point, 0.0, height
        else:
            place.radius = max(place.radius, math.dist(point, place.centre))
            place.least_height = min(place.least_height, height)
        place.low = place.least_height - place.radius
        place.placed += 1
        d, norm = self.dimensions, float(vec @ vec)
        for blk, row in self._rows_in_blocks(slot):
            if math.isinf(blk.rows[row, self._h]):
                blk.unplaced -= 1
            blk.rows[row, :d], blk.rows[row, d] = -2.0 * vec, norm
            blk.rows[row, self._h] = height

    def _loosen(self, region: int, by: int = 1) -> None:
        """Count an update that may have left the region's bounds loose; once it has seen
        as many as it has members, recompute them (amortised O(1) per update)."""
        place = self._regions[region]
        place.loose += by
        if place.loose > max(16, place.placed):
            self._tighten(region)

    def _tighten(self, region: int) -> None:
        top = len(self._ids)
        members = np.flatnonzero(
            (self._region[:top] == region) & np.isfinite(self._height[:top]) & self._used[:top]
        )
        place = self._regions[region]
        place.loose, place.placed = 0, len(members)
        if not len(members):
            place.least_height = place.low = math.inf
            return
        vecs = self._vec[members]
        centre = vecs.mean(axis=0)
        place.centre = tuple(centre.tolist())
        place.radius = float(np.sqrt(np.max(np.sum((vecs - centre) ** 2, axis=1))))
        place.least_height = float(self._height[members].min())
        place.low = place.least_height - place.radius

    def _region_order(self) -> Rows:
        """Each region's rank in the blocks: a nearest-neighbour chain through the centroids,
        so that the regions near a player tend to be adjacent."""
        count = len(self._regions)
        placed = [i for i, place in enumerate(self._regions) if place.placed]
        rank = np.full(count, count, dtype=np.intp)
        if placed:
            centres = np.array([self._regions[i].centre for i in placed])
            left = list(range(len(placed)))
            here = int(np.argmax(np.sum((centres - centres.mean(axis=0)) ** 2, axis=1)))
            for position in range(len(placed)):
                rank[placed[here]] = position
                left.remove(here)
                if left:
                    gaps = np.sum((centres[left] - centres[here]) ** 2, axis=1)
                    here = left[int(np.argmin(gaps))]
        return rank

    # -- blocks ----------------------------------------------------------------------------

    def _block(self, build: str) -> _Block | None:
        blk = self._blocks.get(build)
        if blk is None:
            members = self._members.get(build)
            if not members:
                return None
            blk = self._blocks[build] = self._build_block(members)
        return blk

    def _build_block(self, members: set[int]) -> _Block:
        slots = np.fromiter(members, dtype=np.intp, count=len(members))
        slots = slots[np.lexsort((slots, self._region_order()[self._region[slots]]))]
        region = self._region[slots]
        cuts = np.flatnonzero(np.diff(region)) + 1
        starts, ends = np.concatenate(([0], cuts)), np.concatenate((cuts, [len(slots)]))
        pos = np.full(len(self._ids), -1, dtype=np.int32)
        pos[slots] = np.arange(len(slots))
        vec, height, price = self._vec[slots], self._height[slots], self._price[slots]
        rows = np.column_stack(
            (
                -2.0 * vec,
                np.einsum("ij,ij->i", vec, vec),
                height,
                self._quality_columns(price, self._qos[slots], self._pen[slots]),
                np.arange(len(slots), dtype=np.float64),
            )
        )
        return _Block(
            slots=slots,
            pos=pos,
            regions=[
                (self._regions[region[a]], int(a), int(b))
                for a, b in zip(starts, ends, strict=True)
            ],
            spare=np.zeros(len(slots)),  # swept by the first request
            until=np.where(self._candidate[slots], self._deadline[slots], -math.inf),
            price=price,
            rows=rows,
            penalised=bool(np.any(self._pen[slots] > 0)),
            unplaced=int(np.count_nonzero(np.isinf(height))),
            max_price=float(price.max()),
            costs=OrderedDict(),
        )

    def _sweep(self, blk: _Block, now: float) -> None:
        """Recompute the block's standby column for this `now` (see `_Block`)."""
        live = blk.until >= now
        blk.spare = np.where(live, FULL - self._load[blk.slots], -math.inf)
        blk.swept = now
        blk.horizon = float(blk.until[live].min()) if live.any() else math.inf

    def _costs(self, blk: _Block, key: tuple[int, int, int, Requirements]) -> Vector:
        """Per row, the seat's share for a (width, height, fps, requirements) where the
        container meets the requirements, NaN where it cannot stream it or misses one. Kept
        for the SHAPE_CACHE keys computed last (players pick among a few shapes)."""
        costs = blk.costs.get(key)
        if costs is not None:
            return costs
        width, height, fps, needs = key
        slots = blk.slots
        table = np.array([_share_of(caps, width, height, fps) for caps in self._caps.values])
        costs = table[self._cap_id[slots]]
        fits = (
            (self._maxw[slots] >= width)
            & (self._maxh[slots] >= height)
            & (self._maxfps[slots] >= fps)
            & (self._vram[slots] >= needs.vram_mib)
            & (self._cpu[slots] >= needs.cpu_cores)
            & (self._ram[slots] >= needs.ram_mib)
            & (self._uplink[slots] >= needs.uplink_mbps)
        )
        if needs.encoders:
            encoders = [bool(needs.encoders & e) for e in self._encs.values]
            fits &= np.array(encoders, dtype=bool)[self._enc_id[slots]]
        costs[~fits] = math.nan
        blk.costs[key] = costs
        if len(blk.costs) > SHAPE_CACHE:
            blk.costs.popitem(last=False)
        return costs

    def _cost_scale(self, request: Request) -> float:
        """C: the budget, or the fleet's median price."""
        budget = request.budget_per_minute
        if 0.0 < budget < math.inf:
            return budget
        if self._median is None:
            median = float(np.median(self._price[self._used])) if self._slot else 0.0
            self._median = median if median > 0 else 1.0
        return self._median

    # -- selection -------------------------------------------------------------------------

    def select(
        self, request: Request, now: float, rng: np.random.Generator, shortlist: int = 1
    ) -> list[Choice]:
        """The best `shortlist` containers for `request`, best first; raises NoContainerError
        naming the filter that emptied the set. Pure: nothing changes."""
        if shortlist < 1:
            raise IndexerError(f"a shortlist holds at least one container, not {shortlist}")
        blk = self._blocks.get(request.build) or self._block(request.build)
        if blk is None:
            raise self._refusal(request, now, None)
        if not blk.swept <= now < blk.horizon:
            self._sweep(blk, now)
        key = (request.width, request.height, request.fps, request.requirements)
        cost = blk.costs.get(key)
        if cost is None:
            cost = self._costs(blk, key)
        player, bound, policy = request.player, request.rtt_bound, request.policy
        lo, hi = 0, len(blk.slots)
        if player is not None:
            if len(player.vec) != self.dimensions:
                self._check_dimensions(player)
            if bound < math.inf:
                lo, hi = self._span(blk, player.vec, bound - player.height)
        # The cheap filters over the slice; the survivors (often a twentieth) are packed.
        ok = cost[lo:hi] <= blk.spare[lo:hi]
        budget = request.budget_per_minute
        if budget < blk.max_price:
            ok &= blk.price[lo:hi] <= budget
        rows = blk.rows[lo:hi].compress(ok, axis=0)
        if not len(rows):
            raise self._refusal(request, now, blk, lo, hi)
        scores, unit = self._scores(rows, request, blk.penalised)
        first = int(scores.argmin())
        best = scores.item(first)
        if best == math.inf:
            raise self._refusal(request, now, blk, lo, hi)
        unknown = player is None and policy is Policy.BEST_EXPERIENCE
        quantum = (QUALITY_QUANTUM if unknown else QUANTUM[policy]) / unit
        if shortlist == 1:  # the common case, straight through
            cell = math.floor(best / quantum)
            tied = (scores <= (cell + 1.0) * quantum * (1.0 + 1e-12)).nonzero()[0]
            if len(tied) > 1:  # the edge has slack for rounding: recheck the cells
                cells = np.floor(scores[tied] / quantum)
                tied = tied[cells == cell]
                first = int(tied[int(rng.random() * len(tied))])
            picks, cells_of = [first], [float(cell)]
        else:
            picks, cells_of = _best(scores, quantum, shortlist, rng)
        return [self._choice(blk, rows, at, cost, player=player, score=cell * quantum * unit)
                for at, cell in zip(picks, cells_of, strict=True)]  # fmt: skip

    def _choice(
        self,
        blk: _Block,
        rows: NDArray[np.float64],
        at: int,
        cost: Vector,
        *,
        player: Coordinate | None,
        score: float,
    ) -> Choice:
        row = int(rows.item(at, self._at))
        rtt, height = math.nan, rows.item(at, self._h)
        if player is not None and height < math.inf:
            gap = math.dist((-0.5 * rows[at, : self.dimensions]).tolist(), player.vec)
            rtt = gap + height + player.height
        return Choice(self._ids[blk.slots.item(row)], cost.item(row), rtt, score)

    def _rtts(self, rows: NDArray[np.float64], player: Coordinate) -> Vector:
        """Estimated RTT from the player at p to each packed row: coordinates.distance, with
        |x - p|^2 = [-2x, |x|^2] . [p, 1] + |p|^2."""
        vec = player.vec
        rtt: Vector = rows[:, : self.dimensions + 1] @ np.array((*vec, 1.0))
        rtt += math.hypot(*vec) ** 2
        np.abs(rtt, out=rtt)  # |x - p|^2 expanded can round below 0 when x = p
        np.sqrt(rtt, out=rtt)
        rtt += rows[:, self._h]
        rtt += player.height
        return rtt

    def _span(self, blk: _Block, vec: tuple[float, ...], limit: float) -> tuple[int, int]:
        """The rows from the first to the last region that may hold a container within
        `limit` (the bound less the player's height) of a player at `vec`: (0, 0) when none
        may. Plain floats: for a dozen regions, faster than numpy."""
        dist = math.dist
        limit += _SLACK
        lo = hi = 0
        for place, start, end in blk.regions:
            if dist(place.centre, vec) + place.low <= limit:
                if not hi:
                    lo = start
                hi = end
        return lo, hi

    def _scores(
        self, rows: NDArray[np.float64], request: Request, penalised: bool
    ) -> tuple[Vector, float]:
        """The survivors' scores, a new array in some unit: the policy's score is
        scores * unit (see the module docstring); inf beyond the RTT bound. Penalties are
        added only where some container of the block has one."""
        policy, player, bound = request.policy, request.player, request.rtt_bound
        if policy is Policy.LOWEST_COST or player is None:  # RTT unranked, or counted as R
            if policy is Policy.LOWEST_COST:
                scores = rows[:, self._base].copy()
                pen_unit = self._cost_scale(request)
            elif policy is Policy.BEST_EXPERIENCE:
                scores, pen_unit = rows[:, self._fexp].copy(), 1.0
            else:
                scores = rows[:, self._pall] * (1.0 / self._cost_scale(request))
                scores += rows[:, self._fall]
                pen_unit = 1.0
            if penalised:
                scores += rows[:, self._pen_col] * pen_unit
            if player is not None and bound < math.inf:
                scores[self._rtts(rows, player) > bound] = math.inf
            return scores, 1.0
        rtt = self._rtts(rows, player)  # scored in place
        scale = bound
        if not 0.0 < bound < math.inf:
            known = rtt[np.isfinite(rtt)]
            scale = float(np.median(known)) if len(known) else FALLBACK_RTT_SCALE
            np.copyto(rtt, scale, where=np.isinf(rtt))
        over = rtt > bound if bound < math.inf else None
        if policy is Policy.BEST_EXPERIENCE:
            rtt *= rows[:, self._fexp]
        else:
            rtt *= rows[:, self._fall]
            rtt += rows[:, self._pall] * (scale / self._cost_scale(request))
        if penalised:
            rtt += rows[:, self._pen_col] * scale
        if over is not None:
            rtt[over] = math.inf
        return rtt, (1000.0 if policy is Policy.BEST_EXPERIENCE else 1.0 / scale)

    # -- refusals --------------------------------------------------------------------------

    def _refusal(
        self, request: Request, now: float, blk: _Block | None, lo: int = 0, hi: int = 0
    ) -> NoContainerError:
        """Which filter emptied the set, recomputed step by step (the fast path only knows
        that the combined set is empty). Rows outside the span [lo, hi) fail the RTT
        filter, so the block is scanned whole only when the span fits nobody."""
        if not self._slot:
            return NoContainerError("no container is registered", filter="standby")
        build, shape = request.build, request.shape
        alive = fits = np.zeros(0, bool)
        start = 0
        if blk is not None:
            cost = self._costs(blk, (request.width, request.height, request.fps,
                                     request.requirements))  # fmt: skip
            for start, stop in ((lo, hi), (0, len(blk.slots))):
                spare = blk.spare[start:stop]  # swept for `now` by select
                alive = spare > FULL - 1.0  # live, candidate, and load < 1
                fits = alive & (cost[start:stop] <= spare)
                if fits.any():
                    break
        if not alive.any():
            top = len(self._ids)
            standby = (self._candidate[:top] & (self._deadline[:top] >= now)
                       & (self._load[:top] < 1.0) & self._used[:top])  # fmt: skip
            if not standby.any():
                return NoContainerError(
                    f"no container is on standby: all {len(self)} registered are busy, "
                    "silent or not admitted; try again shortly",
                    filter="standby",
                )
            return NoContainerError(f"no standby container hosts {build!r}", filter="build")
        if not fits.any():
            needs = request.requirements.describe()
            return NoContainerError(
                f"no standby container hosting {build!r} has a free seat for {shape}"
                + (f" with {needs}" if needs else ""),
                filter="resources",
            )
        assert blk is not None
        found = fits.nonzero()[0] + start
        player, bound = request.player, request.rtt_bound
        if player is not None:
            rtt = self._rtts(blk.rows.take(found, axis=0), player)
            found = found[rtt <= bound]
            if not len(found):
                nearest = float(rtt.min())
                known = "none has a coordinate yet"
                if nearest < math.inf:
                    known = f"the nearest is ~{nearest * 1e3:.0f} ms"
                return NoContainerError(
                    f"no container hosting {build!r} with a free {shape} seat is within "
                    f"{bound * 1e3:.0f} ms ({known}); raise the bound or wait",
                    filter="rtt",
                )
        within = "" if player is None else f" within {bound * 1e3:.0f} ms"
        return NoContainerError(
            f"no container hosting {build!r}{within} with a free {shape} seat is at up to "
            f"{request.budget_per_minute:g}/min (the cheapest is "
            f"{blk.price[found].min():g}/min); raise the budget",
            filter="price",
        )


def _grow(owner: object, fills: dict[str, float], old: int, size: int) -> None:
    """Replace each named column of `owner` by one of `size` rows, new rows filled."""
    for name, fill in fills.items():
        column: NDArray[np.generic] = getattr(owner, name)
        grown = np.full((size, *column.shape[1:]), fill, dtype=column.dtype)
        grown[:old] = column
        setattr(owner, name, grown)


def _best(
    scores: Vector, quantum: float, shortlist: int, rng: np.random.Generator
) -> tuple[list[int], list[float]]:
    """Positions of the best `shortlist` finite scores by cell floor(score / quantum), ties
    in random order, and their cells."""
    pool = np.flatnonzero(scores < math.inf)
    if len(pool) > shortlist:
        kth = float(np.partition(scores[pool], shortlist - 1)[shortlist - 1])
        edge = (math.floor(kth / quantum) + 1.0) * quantum * (1.0 + 1e-12)
        pool = pool[scores[pool] <= edge]
    cells = np.floor(scores[pool] / quantum)
    order = np.lexsort((rng.random(len(pool)), cells))[:shortlist]
    return pool[order].tolist(), cells[order].tolist()
