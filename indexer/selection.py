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

Speed (benchmarks/indexer.py): containers are grouped per build into blocks whose columns are
copies ordered by region, so a request touches one contiguous slice and never gathers; the
setters write through to the blocks. Whole regions are pruned by the triangle inequality: a
region keeps a centroid c, a radius r >= |x - c| over its members' vectors and their least
and largest heights, so no member is nearer a player at p than |p - c| - r + h_min + h_player
(exact: no false negatives). Updates only grow r; it is recomputed once the region has seen
as many updates as it has members. A block is rebuilt lazily after its membership changes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from indexer.coordinates import Coordinate, VivaldiConfig
from indexer.errors import IndexerError, NoContainerError
from signaling.protocol import StreamCapacity

Vector = NDArray[np.float64]
Mask = NDArray[np.bool_]
Rows = NDArray[np.intp]
_T = TypeVar("_T")

FULL = 1.0 + 1e-9  # seats cost 1/n each: n of them must fit despite rounding
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
_REGION_FILL = {  # a region without placed members prunes itself: its least height is inf
    "_r_aug": 0.0, "_r_rad": 0.0, "_r_hmin": math.inf, "_r_low": math.inf,
    "_r_placed": 0, "_r_loose": 0,
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
class Requirements:
    """A build's needs (from its manifest in a later issue)."""

    vram_mib: int = 0
    cpu_cores: int = 0
    ram_mib: int = 0
    uplink_mbps: float = 0.0
    encoders: frozenset[str] = frozenset()  # the container needs one of them; empty: any

    def describe(self) -> str:
        """The needs in words, e.g. "8192 MiB VRAM, encoder h264 or vp8"; "" without any."""
        parts = [
            f"{value:g} {unit}"
            for value, unit in (
                (self.vram_mib, "MiB VRAM"),
                (self.cpu_cores, "cores"),
                (self.ram_mib, "MiB RAM"),
                (self.uplink_mbps, "Mbit/s uplink"),
            )
            if value
        ]
        if self.encoders:
            parts.append("encoder " + " or ".join(sorted(self.encoders)))
        return ", ".join(parts)


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


def quality_factor(policy: Policy, qos: float) -> float:
    return 1.0 + QUALITY_WEIGHT[policy] * (1.0 - qos)


class _Interned(Generic[_T]):
    """Distinct values (capacity lists, encoder sets) numbered with reference counts, so a
    column computes a value per distinct one and gathers."""

    def __init__(self) -> None:
        self.ids: dict[_T, int] = {}
        self.values: list[_T] = []
        self.refs: list[int] = []

    def take(self, value: _T) -> int:
        number = self.ids.get(value)
        if number is None:
            number = self.refs.index(0) if 0 in self.refs else len(self.values)
            if number == len(self.values):
                self.values.append(value)
                self.refs.append(0)
            else:
                del self.ids[self.values[number]]
                self.values[number] = value
            self.ids[value] = number
        self.refs[number] += 1
        return number

    def drop(self, number: int) -> None:
        self.refs[number] -= 1  # kept for reuse: its id is recycled by the next new value


@dataclass(eq=False, slots=True)
class _Block:
    """One build's containers, ordered by region so that a run of regions is a slice.

    `spare`, `until` and `price` are the columns the cheap filters scan; `rows` packs what
    only the survivors need, gathered in one `take`: [-2x, 1, |x|^2, height, base_cost,
    fexp, fall, pall, penalty] for a vector x (see `_query`).
    Built from the fleet's columns; the setters write through.
    """

    slots: Rows
    pos: dict[int, int]  # slot -> row
    regions: list[tuple[int, int, int]]  # (region id, first row, end row), non-empty, in order
    spare: Vector  # FULL - load
    until: Vector  # the deadline when a candidate, else -inf
    price: Vector
    rows: NDArray[np.float64]  # (n, dims + 8)
    penalised: bool
    unplaced: int
    max_price: float
    costs: OrderedDict[tuple[int, int, int, Requirements], Vector]


class Fleet:
    """Every registered container's profile and state, indexed for `select`."""

    def __init__(self, dimensions: int = VivaldiConfig().dimensions) -> None:
        self.dimensions = d = dimensions
        # Columns of `_Block.rows` after the vector: height, then the quality-dependent ones.
        self._h, self._base, self._fexp, self._fall, self._pall, self._pen_col = range(d + 2, d + 8)
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
        self._region_names: list[str] = []
        self._region_count: list[int] = []
        self._region_top = 0  # regions ever used are below this
        self._r_aug = np.zeros((0, d + 2))  # centroid c as [-2c, 1, |c|^2]
        self._r_rad, self._r_hmin, self._r_low = np.zeros(0), np.zeros(0), np.zeros(0)
        self._r_placed, self._r_loose = np.zeros(0, np.intp), np.zeros(0, np.intp)
        self._alloc_regions(16)

    # -- storage ---------------------------------------------------------------------------

    def _alloc_rows(self, size: int) -> None:
        """Preallocated columns, doubled when full; new rows are free."""
        old = len(self._ids)
        _grow(self, _ROW_FILL, old, size)
        self._ids.extend([""] * (size - old))
        self._profiles.extend([None] * (size - old))
        self._free.extend(range(size - 1, old - 1, -1))

    def _alloc_regions(self, size: int) -> None:
        old = len(self._region_names)
        _grow(self, _REGION_FILL, old, size)
        self._r_aug[old:, self.dimensions] = 1.0
        self._region_names.extend([""] * (size - old))
        self._region_count.extend([0] * (size - old))

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
        self._region_count[region] += 1
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
        self._region_count[region] -= 1
        if not self._region_count[region]:
            del self._region_id[self._region_names[region]]
            self._r_placed[region] = self._r_loose[region] = 0
            self._r_hmin[region] = self._r_low[region] = math.inf
        elif math.isfinite(self._height[slot]):
            self._r_placed[region] -= 1
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
        until = self._deadline[slot] if self._candidate[slot] else -math.inf
        for blk, row in self._rows_in_blocks(slot):
            blk.until[row] = until

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
        blocks = self._blocks
        for build in profile.builds:
            blk = blocks.get(build)
            if blk is not None:
                blk.spare[blk.pos[slot]] = FULL - load

    def load(self, container_id: str) -> float:
        return float(self._load[self._row(container_id)])

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
            blk.rows[row, self._base :] = values
            blk.penalised = blk.penalised or penalty > 0

    def set_coordinate(self, container_id: str, coordinate: Coordinate) -> None:
        self._check_dimensions(coordinate)
        slot = self._row(container_id)
        region = int(self._region[slot])
        if math.isfinite(self._height[slot]):
            self._r_placed[region] -= 1
            self._r_loose[region] += 1
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
                found.append((blk, blk.pos[slot]))
        return found

    @staticmethod
    def _quality_columns(
        price: Vector, qos: Vector | float, pen: Vector | float
    ) -> NDArray[np.float64]:
        """base_cost, fexp, fall, pall, penalty per row: the scores' static parts."""
        fall = 1.0 + QUALITY_WEIGHT[Policy.BEST_OVERALL] * (1.0 - np.asarray(qos))
        return np.column_stack(
            np.broadcast_arrays(
                price * (1.0 + QUALITY_WEIGHT[Policy.LOWEST_COST] * (1.0 - np.asarray(qos))),
                1.0 + QUALITY_WEIGHT[Policy.BEST_EXPERIENCE] * (1.0 - np.asarray(qos)),
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
        if 0 not in self._region_count:
            self._alloc_regions(2 * len(self._region_names))
        region = self._region_count.index(0)
        self._region_id[name] = region
        self._region_names[region] = name
        self._region_top = max(self._region_top, region + 1)
        return region

    def _place(self, slot: int, coordinate: Coordinate) -> None:
        """Write a coordinate and grow its region's bounds to cover it."""
        vec = np.asarray(coordinate.vec, dtype=np.float64)
        height = coordinate.height
        self._vec[slot], self._height[slot] = vec, height
        region = int(self._region[slot])
        d = self.dimensions
        if self._r_placed[region] == 0:
            self._r_aug[region, :d], self._r_aug[region, d + 1] = -2.0 * vec, float(vec @ vec)
            self._r_rad[region], self._r_hmin[region] = 0.0, height
        else:
            gap = math.dist(vec.tolist(), (-0.5 * self._r_aug[region, :d]).tolist())
            self._r_rad[region] = max(self._r_rad[region], gap)
            self._r_hmin[region] = min(self._r_hmin[region], height)
        self._r_low[region] = self._r_hmin[region] - self._r_rad[region]
        self._r_placed[region] += 1
        norm = float(vec @ vec)
        for blk, row in self._rows_in_blocks(slot):
            if math.isinf(blk.rows[row, self._h]):
                blk.unplaced -= 1
            blk.rows[row, :d], blk.rows[row, d + 1] = -2.0 * vec, norm
            blk.rows[row, self._h] = height

    def _loosen(self, region: int, by: int = 1) -> None:
        """Count an update that may have left the region's bounds loose; once it has seen
        as many as it has members, recompute them (amortised O(1) per update)."""
        self._r_loose[region] += by
        if self._r_loose[region] > max(16, self._r_placed[region]):
            self._tighten(region)

    def _tighten(self, region: int) -> None:
        top = len(self._ids)
        members = np.flatnonzero(
            (self._region[:top] == region) & np.isfinite(self._height[:top]) & self._used[:top]
        )
        self._r_loose[region], self._r_placed[region] = 0, len(members)
        if not len(members):
            self._r_hmin[region] = self._r_low[region] = math.inf
            return
        vecs = self._vec[members]
        centre = vecs.mean(axis=0)
        d = self.dimensions
        self._r_aug[region, :d] = -2.0 * centre
        self._r_aug[region, d + 1] = float(centre @ centre)
        self._r_rad[region] = float(np.sqrt(np.max(np.sum((vecs - centre) ** 2, axis=1))))
        self._r_hmin[region] = float(self._height[members].min())
        self._r_low[region] = self._r_hmin[region] - self._r_rad[region]

    def _region_order(self) -> Rows:
        """Each region's rank in the blocks: a nearest-neighbour chain through the centroids,
        so that the regions near a player tend to be adjacent."""
        top = self._region_top
        placed = np.flatnonzero(self._r_placed[:top] > 0)
        rank = np.full(top, top, dtype=np.intp)
        if len(placed):
            centres = self._r_aug[placed, : self.dimensions]
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
        vec, height, price = self._vec[slots], self._height[slots], self._price[slots]
        rows = np.column_stack(
            (
                -2.0 * vec,
                np.ones(len(slots)),
                np.einsum("ij,ij->i", vec, vec),
                height,
                self._quality_columns(price, self._qos[slots], self._pen[slots]),
            )
        )
        return _Block(
            slots=slots,
            pos=dict(zip(slots.tolist(), range(len(slots)), strict=True)),
            regions=[(int(region[a]), int(a), int(b)) for a, b in zip(starts, ends, strict=True)],
            spare=FULL - self._load[slots],
            until=np.where(self._candidate[slots], self._deadline[slots], -math.inf),
            price=price,
            rows=rows,
            penalised=bool(np.any(self._pen[slots] > 0)),
            unplaced=int(np.count_nonzero(np.isinf(height))),
            max_price=float(price.max()),
            costs=OrderedDict(),
        )

    def _costs(self, blk: _Block, request: Request) -> Vector:
        """Per row, the seat's share for the request's shape where the container meets the
        requirements, NaN where it cannot stream it or misses one (an LRU cache)."""
        key = (request.width, request.height, request.fps, request.requirements)
        costs = blk.costs.get(key)
        if costs is not None:
            blk.costs.move_to_end(key)
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
        cost = self._costs(blk, request)
        player, bound, policy = request.player, request.rtt_bound, request.policy
        lo, hi = 0, len(blk.slots)
        if player is not None:
            if len(player.vec) != self.dimensions:
                self._check_dimensions(player)
            qv = self._query(player)
            if bound < math.inf:
                lo, hi = self._span(blk, qv, bound - player.height)
        # The cheap filters over the slice; the survivors (often a tenth) are gathered.
        ok = cost[lo:hi] <= blk.spare[lo:hi]
        ok &= blk.until[lo:hi] >= now
        budget = request.budget_per_minute
        if budget < blk.max_price:
            ok &= blk.price[lo:hi] <= budget
        found = np.flatnonzero(ok)
        if not len(found):
            raise self._refusal(request, now, blk, lo, hi)
        found += lo
        rows = blk.rows.take(found, axis=0)
        rtt: Vector | None = None
        if player is not None and (bound < math.inf or policy is not Policy.LOWEST_COST):
            rtt = self._rtts(rows, player, qv)
        scores, unit = self._scores(rows, request, rtt)
        if rtt is not None and bound < math.inf:
            scores[rtt > bound] = math.inf
        best = float(scores.min())
        if best == math.inf:
            raise self._refusal(request, now, blk, lo, hi)
        unknown = player is None and policy is Policy.BEST_EXPERIENCE
        quantum = (QUALITY_QUANTUM if unknown else QUANTUM[policy]) / unit
        picks, cells = _best(scores, best, quantum, shortlist=shortlist, rng=rng)
        return [
            Choice(
                container_id=self._ids[blk.slots[found[at]]],
                share=float(cost[found[at]]),
                rtt=self._rtt_of(rows[at], rtt, at, player),
                score=cell * quantum * unit,
            )
            for at, cell in zip(picks, cells, strict=True)
        ]

    def _query(self, player: Coordinate) -> Vector:
        """[p, |p|^2, 1]: a row's first dims + 2 columns [-2x, 1, |x|^2] times this are
        |x - p|^2."""
        vec = player.vec
        return np.array((*vec, math.hypot(*vec) ** 2, 1.0))

    def _rtts(
        self, rows: NDArray[np.float64], player: Coordinate, qv: Vector | None = None
    ) -> Vector:
        """Estimated RTT from the player to each packed row: coordinates.distance."""
        rtt: Vector = rows[:, : self.dimensions + 2] @ (self._query(player) if qv is None else qv)
        np.abs(rtt, out=rtt)  # |x - p|^2 expanded can round below 0 when x = p
        np.sqrt(rtt, out=rtt)
        rtt += rows[:, self._h]
        rtt += player.height
        return rtt

    def _span(self, blk: _Block, qv: Vector, limit: float) -> tuple[int, int]:
        """The rows from the first to the last region that may hold a container within
        `limit` (the bound less the player's height): (0, 0) when none may."""
        top = self._region_top
        gap = np.sqrt(np.abs(self._r_aug[:top] @ qv))
        keep = (gap + self._r_low[:top] <= limit + _SLACK).tolist()
        lo = hi = 0
        for region, start, end in blk.regions:
            if keep[region]:
                if not hi:
                    lo = start
                hi = end
        return lo, hi

    def _scores(
        self, rows: NDArray[np.float64], request: Request, rtt: Vector | None
    ) -> tuple[Vector, float]:
        """The survivors' scores, a new array in some unit: the policy's score is
        scores * unit (see the module docstring)."""
        policy = request.policy
        pen = rows[:, self._pen_col]
        if policy is Policy.LOWEST_COST:
            return rows[:, self._base] + pen * self._cost_scale(request), 1.0
        if rtt is None:  # the player is unknown: RTT counts as R
            if policy is Policy.BEST_EXPERIENCE:
                return rows[:, self._fexp] + pen, 1.0
            price_term = rows[:, self._pall] * (1.0 / self._cost_scale(request))
            return price_term + rows[:, self._fall] + pen, 1.0
        scale = request.rtt_bound
        if not 0.0 < scale < math.inf:
            known = rtt[np.isfinite(rtt)]
            scale = float(np.median(known)) if len(known) else FALLBACK_RTT_SCALE
            rtt = np.where(np.isinf(rtt), scale, rtt)
        if policy is Policy.BEST_EXPERIENCE:
            return rtt * rows[:, self._fexp] + pen * scale, 1000.0
        scores = rtt * rows[:, self._fall]
        scores += rows[:, self._pall] * (scale / self._cost_scale(request))
        scores += pen * scale
        return scores, 1.0 / scale

    def _rtt_of(
        self, row: NDArray[np.float64], rtt: Vector | None, at: int, player: Coordinate | None
    ) -> float:
        if player is None or math.isinf(row[self._h]):
            return math.nan
        if rtt is not None:
            return float(rtt[at])
        gap = math.dist((-0.5 * row[: self.dimensions]).tolist(), player.vec)
        return gap + float(row[self._h]) + player.height

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
            cost = self._costs(blk, request)
            for start, stop in ((lo, hi), (0, len(blk.slots))):
                spare = blk.spare[start:stop]
                alive = (blk.until[start:stop] >= now) & (spare > FULL - 1.0)  # load < 1
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
        found = np.flatnonzero(fits) + start
        player, bound = request.player, request.rtt_bound
        if player is not None:
            rtt = self._rtts(blk.rows.take(found, axis=0), player)
            found = found[rtt <= bound]
            if not len(found):
                return NoContainerError(
                    f"no container hosting {build!r} with a free {shape} seat is within "
                    f"{bound * 1e3:.0f} ms (the nearest is ~{rtt.min() * 1e3:.0f} ms); "
                    "raise the bound or wait",
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
    scores: Vector, best: float, quantum: float, *, shortlist: int, rng: np.random.Generator
) -> tuple[list[int], list[float]]:
    """Positions of the best `shortlist` finite scores by cell floor(score / quantum), ties
    in random order, and their cells."""
    if shortlist == 1:
        edge = (math.floor(best / quantum) + 1.0) * quantum * (1.0 + 1e-12)
        pool = np.flatnonzero(scores <= edge)
    else:
        pool = np.flatnonzero(scores < math.inf)
        if len(pool) > shortlist:
            kth = float(np.partition(scores[pool], shortlist - 1)[shortlist - 1])
            edge = (math.floor(kth / quantum) + 1.0) * quantum * (1.0 + 1e-12)
            pool = pool[scores[pool] <= edge]
    if len(pool) == 1:
        return [int(pool[0])], [math.floor(float(scores[pool[0]]) / quantum)]
    cells = np.floor(scores[pool] / quantum)
    if shortlist == 1:
        low = float(cells.min())
        tied = pool[cells == low]
        return [int(tied[int(rng.random() * len(tied))])], [low]
    order = np.lexsort((rng.random(len(pool)), cells))[:shortlist]
    return pool[order].tolist(), cells[order].tolist()
