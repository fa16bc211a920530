"""Fleet: the selection core on hand-built fleets, and against the plain scan on random ones.

Coordinates are placed on one axis: `at(x)` is x ms from the origin with a 0.5 ms height,
so a player `at(0)` with a 0.5 ms height estimates x + 1 ms to a container `at(x)`.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from contracts.protocol import StreamCapacity
from contracts.requirements import Requirements
from indexer.coordinates import Coordinate
from indexer.errors import IndexerError, NoContainerError
from indexer.lifecycle import FULL
from indexer.selection import (
    QUALITY_QUANTUM,
    QUANTUM,
    Choice,
    Fleet,
    Policy,
    Profile,
    Request,
    seat_share,
)
from testbed.selection_oracle import ScanState, select_by_scan

DIMENSIONS = 8
PLAYER = Coordinate((0.0,) * DIMENSIONS, 0.0005, 0.1)
HD720 = (1280, 720, 60)


def profile(cid: str, **changes: object) -> Profile:
    base = Profile(
        container_id=cid,
        builds=frozenset({"reference"}),
        region="eu-west",
        price_per_minute=0.02,
        vram_mib=8192,
        cpu_cores=8,
        ram_mib=16384,
        uplink_mbps=100.0,
        encoders=frozenset({"h264"}),
        max_width=1920,
        max_height=1080,
        max_fps=60,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def at(x_ms: float, height_ms: float = 0.5) -> Coordinate:
    return Coordinate((x_ms / 1e3,) + (0.0,) * (DIMENSIONS - 1), height_ms / 1e3, 0.1)


def fleet_of(*entries: Profile | tuple[Profile, Coordinate | None]) -> Fleet:
    """Candidates, live until t = 100."""
    fleet = Fleet(DIMENSIONS)
    for entry in entries:
        item, coordinate = entry if isinstance(entry, tuple) else (entry, None)
        fleet.add(item, coordinate)
        fleet.set_candidate(item.container_id, True)
        fleet.set_deadline(item.container_id, 100.0)
    return fleet


def request(**changes: object) -> Request:
    return replace(Request("reference", *HD720), **changes)  # type: ignore[arg-type]


def choose(fleet: Fleet, wanted: Request, seed: int = 0, now: float = 0.0) -> Choice:
    return fleet.select(wanted, now, np.random.default_rng(seed))[0]


def refused(fleet: Fleet, wanted: Request, now: float = 0.0) -> NoContainerError:
    with pytest.raises(NoContainerError) as caught:
        fleet.select(wanted, now, np.random.default_rng(0))
    return caught.value


# -- filters ------------------------------------------------------------------------------------


def test_an_empty_fleet_is_refused_at_standby() -> None:
    error = refused(Fleet(DIMENSIONS), request())
    assert (error.filter, str(error)) == ("standby", "no container is registered")


@pytest.mark.parametrize(
    ("setup", "wanted", "emptied", "says"),
    [
        (lambda f: f.set_candidate("a", False), request(), "standby", "on standby"),
        (lambda f: f.set_load("a", 1.0), request(), "standby", "on standby"),
        (lambda f: None, request(build="doom"), "build", "hosts 'doom'"),
        (
            lambda f: None,
            request(requirements=Requirements(vram_mib=24576)),
            "resources",
            "with 24576 MiB VRAM",
        ),
        (
            lambda f: None,
            request(requirements=Requirements(encoders=frozenset({"av1", "vp9"}))),
            "resources",
            "encoder av1 or vp9",
        ),
        (lambda f: None, request(width=3840, height=2160), "resources", "3840x2160@60"),
        (lambda f: f.set_load("a", 0.6), request(), "resources", "free seat"),
        (lambda f: None, request(rtt_bound=0.010, player=PLAYER), "rtt", "nearest is ~31 ms"),
        (lambda f: None, request(budget_per_minute=0.01), "price", "cheapest is 0.02/min"),
    ],
)
def test_each_filter_empties_the_set_and_names_itself(setup, wanted, emptied, says) -> None:  # type: ignore[no-untyped-def]
    fleet = fleet_of((profile("a", capacity=(StreamCapacity(1280, 720, 60, 2),)), at(30)))
    setup(fleet)
    error = refused(fleet, wanted)
    assert error.filter == emptied
    assert says in str(error)


def test_a_fleet_failing_two_filters_names_the_earlier() -> None:
    fleet = fleet_of((profile("a", price_per_minute=0.05, vram_mib=2048), at(30)))
    needs = Requirements(vram_mib=4096)
    far_and_dear = request(player=PLAYER, rtt_bound=0.010, budget_per_minute=0.01)
    assert refused(fleet, far_and_dear).filter == "rtt"
    assert refused(fleet, replace(far_and_dear, requirements=needs)).filter == "resources"
    assert refused(fleet, replace(far_and_dear, build="doom")).filter == "build"
    fleet.set_candidate("a", False)
    assert refused(fleet, replace(far_and_dear, build="doom")).filter == "standby"


def test_a_passed_deadline_drops_a_container_and_a_heartbeat_brings_it_back() -> None:
    fleet = fleet_of(profile("a"), profile("b"))
    fleet.set_deadline("a", 5.0)
    assert {choose(fleet, request(), seed, now=6.0).container_id for seed in range(20)} == {"b"}
    fleet.set_deadline("b", 5.0)
    assert refused(fleet, request(), now=6.0).filter == "standby"
    fleet.set_deadline("a", 9.0)
    assert choose(fleet, request(), now=6.0).container_id == "a"
    # `now` is an input: an earlier one sees both again.
    assert {choose(fleet, request(), seed, now=1.0).container_id for seed in range(20)} == {
        "a",
        "b",
    }


def test_seats_are_booked_until_none_fits() -> None:
    fleet = fleet_of(
        profile("a", capacity=(StreamCapacity(1280, 720, 60, 2), StreamCapacity(1920, 1080, 60, 1)))
    )
    first = choose(fleet, request())
    assert first.share == 0.5
    fleet.set_load("a", fleet.load("a") + first.share)
    assert refused(fleet, request(width=1920, height=1080)).filter == "resources"
    fleet.set_load("a", fleet.load("a") + choose(fleet, request()).share)
    assert fleet.load("a") == 1.0
    assert refused(fleet, request()).filter == "standby"


def test_a_container_without_a_coordinate_keeps_no_finite_bound() -> None:
    fleet = fleet_of(profile("a"))
    assert refused(fleet, request(player=PLAYER, rtt_bound=0.5)).filter == "rtt"
    unbounded = choose(fleet, request(player=PLAYER))
    assert unbounded.container_id == "a"
    assert math.isnan(unbounded.rtt)
    fleet.set_coordinate("a", at(20))
    placed = choose(fleet, request(player=PLAYER, rtt_bound=0.5))
    assert placed.rtt == pytest.approx(0.021)


def test_an_unknown_player_passes_the_rtt_filter_and_gets_no_rtt() -> None:
    fleet = fleet_of((profile("far"), at(900)))
    choice = choose(fleet, request(rtt_bound=0.010))
    assert choice.container_id == "far"
    assert math.isnan(choice.rtt)


# -- ranking ------------------------------------------------------------------------------------


def three_offers() -> Fleet:
    """cheap and far, dear and near, and one between."""
    return fleet_of(
        (profile("cheap-far", price_per_minute=0.01), at(59)),
        (profile("dear-near", price_per_minute=0.09), at(4)),
        (profile("mid", price_per_minute=0.04), at(24)),
    )


@pytest.mark.parametrize(
    ("policy", "winner", "score"),
    [
        (Policy.LOWEST_COST, "cheap-far", 0.010),  # 0.01 * (1 + 0.1 * 0.5), floored
        (Policy.BEST_EXPERIENCE, "dear-near", 7.5),  # 5 ms * (1 + 0.5)
        (Policy.BEST_OVERALL, "mid", 0.890),  # (0.04 / 0.1 + 25 / 80) * 1.25
    ],
)
def test_each_policy_picks_its_container(policy: Policy, winner: str, score: float) -> None:
    wanted = request(policy=policy, player=PLAYER, rtt_bound=0.080, budget_per_minute=0.1)
    choice = choose(three_offers(), wanted)
    assert choice.container_id == winner
    assert choice.score == pytest.approx(score, abs=QUANTUM[policy])


@pytest.mark.parametrize("policy", list(Policy))
def test_quality_and_penalties_move_the_ranking(policy: Policy) -> None:
    fleet = fleet_of((profile("a"), at(10)), (profile("b"), at(10)))
    wanted = request(policy=policy, player=PLAYER, rtt_bound=0.050)
    fleet.set_quality("a", 0.2)
    fleet.set_quality("b", 0.9)
    assert {choose(fleet, wanted, seed).container_id for seed in range(10)} == {"b"}
    fleet.set_quality("b", 0.9, penalty=0.5)
    assert {choose(fleet, wanted, seed).container_id for seed in range(10)} == {"a"}


def test_an_unknown_player_ranks_best_experience_by_quality_alone() -> None:
    fleet = fleet_of((profile("near"), at(1)), (profile("proven"), at(80)))
    fleet.set_quality("proven", 1.0)
    choice = choose(fleet, request(policy=Policy.BEST_EXPERIENCE))
    assert choice.container_id == "proven"
    assert choice.score == pytest.approx(1.0, abs=QUALITY_QUANTUM)


def test_ties_are_broken_at_random_reaching_every_tied_container_and_reproducibly() -> None:
    fleet = fleet_of(*(profile(cid) for cid in "abcd"), profile("dear", price_per_minute=0.03))
    wanted = request(policy=Policy.LOWEST_COST)
    picks = [choose(fleet, wanted, seed).container_id for seed in range(200)]
    assert set(picks) == set("abcd")
    assert min(picks.count(cid) for cid in "abcd") > 20  # load spreads over equal containers
    assert [choose(fleet, wanted, 7).container_id for _ in range(3)] == [picks[7]] * 3


def test_near_equal_scores_tie_within_a_quantum() -> None:
    fleet = fleet_of((profile("a"), at(10.02)), (profile("b"), at(10.06)), (profile("c"), at(10.2)))
    wanted = request(policy=Policy.BEST_EXPERIENCE, player=PLAYER)
    picks = {choose(fleet, wanted, seed).container_id for seed in range(40)}
    assert picks == {"a", "b"}  # 16.53 and 16.59 ms share a 0.1 ms cell; 16.8 does not


def test_a_shortlist_is_the_best_distinct_containers_best_first() -> None:
    fleet = fleet_of(*((profile(f"c{i}"), at(5.0 * i)) for i in range(6)))
    wanted = request(policy=Policy.BEST_EXPERIENCE, player=PLAYER)
    rng = np.random.default_rng(0)
    three = fleet.select(wanted, 0.0, rng, shortlist=3)
    assert [c.container_id for c in three] == ["c0", "c1", "c2"]
    everyone = fleet.select(wanted, 0.0, rng, shortlist=50)
    assert [c.container_id for c in everyone] == [f"c{i}" for i in range(6)]
    assert [c.score for c in everyone] == sorted(c.score for c in everyone)
    with pytest.raises(IndexerError, match="at least one"):
        fleet.select(wanted, 0.0, rng, shortlist=0)


def test_a_shortlist_keeps_ties_in_random_order() -> None:
    fleet = fleet_of(*(profile(cid) for cid in "abc"))
    orders = {
        tuple(c.container_id for c in fleet.select(request(), 0.0, np.random.default_rng(s), 3))
        for s in range(60)
    }
    assert len(orders) == 6


# -- seat cost ----------------------------------------------------------------------------------


def registry_seat_cost(
    capacity: tuple[StreamCapacity, ...], w: int, h: int, fps: int
) -> float | None:
    """indexer/registry.py's ContainerSpec.seat_cost as of commit 2765226, verbatim but for
    the signature: the rule selection must keep."""
    if not capacity:
        return 1.0
    covering = [c for c in capacity if c.width >= w and c.height >= h and c.fps >= fps]
    if not covering:
        return None
    smallest = min(covering, key=lambda c: (c.width * c.height * c.fps, -c.sessions))
    return 1.0 / smallest.sessions


CAPACITIES = [
    (),
    (StreamCapacity(1280, 720, 60, 3),),
    (StreamCapacity(1280, 720, 60, 3), StreamCapacity(1920, 1080, 60, 1)),
    (StreamCapacity(1920, 1080, 60, 2), StreamCapacity(1280, 720, 120, 1)),
    (StreamCapacity(1280, 720, 60, 2), StreamCapacity(1280, 720, 60, 4)),  # most sessions win
    (StreamCapacity(3840, 2160, 30, 1), StreamCapacity(1920, 1080, 60, 2)),
    (StreamCapacity(640, 360, 30, 64),),
]
SHAPES = [(640, 360, 30), (1280, 720, 30), (1280, 720, 60), (1280, 720, 120),
          (1920, 1080, 60), (2560, 1440, 30), (3840, 2160, 30), (3840, 2160, 60)]  # fmt: skip


def expected_cost(item: Profile, w: int, h: int, fps: int) -> float | None:
    """The registry's claim: None beyond the container's limits, else its seat cost."""
    if w > item.max_width or h > item.max_height or fps > item.max_fps:
        return None
    return registry_seat_cost(item.capacity, w, h, fps)


def test_seat_cost_follows_the_registry_rule_within_the_limits() -> None:
    fleet = Fleet(DIMENSIONS)
    for number, capacity in enumerate(CAPACITIES):
        limits = {"max_width": 2560, "max_height": 1440, "max_fps": 60 + 60 * (number % 2)}
        fleet.add(profile(f"c{number}", capacity=capacity, **limits))
    for number, capacity in enumerate(CAPACITIES):
        item = fleet.profile(f"c{number}")
        for w, h, fps in SHAPES:
            expected = expected_cost(item, w, h, fps)
            assert fleet.seat_cost(f"c{number}", w, h, fps) == expected, (capacity, w, h, fps)
            assert seat_share(item, w, h, fps) == expected


def test_select_charges_the_seat_cost_of_the_requested_shape() -> None:
    for number, capacity in enumerate(CAPACITIES):
        item = profile(f"c{number}", capacity=capacity)
        fleet = fleet_of(item)
        for w, h, fps in SHAPES:
            expected = expected_cost(item, w, h, fps)
            wanted = request(width=w, height=h, fps=fps)
            if expected is None:
                assert refused(fleet, wanted).filter == "resources"
            else:
                assert choose(fleet, wanted).share == expected


# -- membership and state -----------------------------------------------------------------------


def test_add_remove_and_readd_keep_the_indexes_right() -> None:
    fleet = fleet_of((profile("a"), at(5)), (profile("b"), at(5)))
    wanted = request(player=PLAYER, rtt_bound=0.050)
    assert {choose(fleet, wanted, s).container_id for s in range(20)} == {"a", "b"}
    fleet.remove("a")
    assert ("a" in fleet, len(fleet)) == (False, 1)
    assert {choose(fleet, wanted, s).container_id for s in range(20)} == {"b"}
    fleet.add(profile("a", builds=frozenset({"quake"}), region="us-east"), at(7))
    assert refused(fleet, request(build="quake")).filter == "build"  # a re-add starts afresh
    fleet.set_candidate("a", True)
    fleet.set_deadline("a", 100.0)
    assert choose(fleet, request(build="quake", player=PLAYER, rtt_bound=0.05)).container_id == "a"
    assert {choose(fleet, wanted, s).container_id for s in range(20)} == {"b"}
    fleet.set_load("b", 0.5)
    fleet.add(profile("b"), at(5))  # re-registered: load and state reset
    assert (fleet.load("b"), refused(fleet, wanted).filter) == (0.0, "build")
    for cid in ("a", "b"):
        fleet.remove(cid)
    assert len(fleet) == 0
    assert refused(fleet, wanted).filter == "standby"
    with pytest.raises(IndexerError, match="not in the fleet"):
        fleet.remove("a")


def test_a_fleet_grows_past_its_preallocated_columns() -> None:
    offers = ((profile(f"c{i}", price_per_minute=0.01 * (i + 1)), at(i % 50)) for i in range(300))
    fleet = fleet_of(*offers)
    assert len(fleet) == 300
    assert choose(fleet, request(policy=Policy.LOWEST_COST)).container_id == "c0"
    for i in range(0, 300, 2):
        fleet.remove(f"c{i}")
    assert choose(fleet, request(policy=Policy.LOWEST_COST)).container_id == "c1"


def test_misuse_raises_with_a_message() -> None:
    fleet = fleet_of(profile("a"))
    with pytest.raises(IndexerError, match=r"within 0\.\.1"):
        fleet.set_load("a", 1.5)
    with pytest.raises(IndexerError, match="QoS"):
        fleet.set_quality("a", 1.2)
    with pytest.raises(IndexerError, match="penalty"):
        fleet.set_quality("a", 0.5, penalty=-1.0)
    with pytest.raises(IndexerError, match="'x' is not in the fleet"):
        fleet.set_deadline("x", 1.0)
    with pytest.raises(IndexerError, match="8 dimensions, not 2"):
        fleet.set_coordinate("a", Coordinate((0.0, 0.0), 0.001, 0.1))
    with pytest.raises(IndexerError, match="price per minute"):
        profile("b", price_per_minute=-0.01)
    with pytest.raises(IndexerError, match="positive size"):
        request(width=0)


# -- pruning against the plain scan ------------------------------------------------------------


def test_region_pruning_never_drops_a_container_within_the_bound() -> None:
    """On one axis the estimate is |dx| + both heights: the containers within the bound are
    known without the fleet, and the shortlist must be exactly them."""
    rng = np.random.default_rng(7)
    entries = [
        (profile(f"c{n}", region=f"r{n % 6}"), at((n % 6) * 25.0 + rng.normal(0, 4)))
        for n in range(300)
    ]
    fleet = fleet_of(*entries)
    refusals = 0
    for trial in range(50):
        player = at(float(rng.uniform(-10, 160)), 2.0)
        bound = float(rng.uniform(0.005, 0.04))
        wanted = request(rtt_bound=bound, player=player, policy=Policy.BEST_EXPERIENCE)
        within = {
            item.container_id
            for item, c in entries
            if abs(c.vec[0] - player.vec[0]) + c.height + player.height <= bound
        }
        if not within:
            refusals += 1
            assert refused(fleet, wanted).filter == "rtt"
            continue
        shortlist = fleet.select(wanted, 0.0, np.random.default_rng(trial), shortlist=400)
        assert {c.container_id for c in shortlist} == within
    assert 0 < refusals < 50  # both sides of the bound were tried


def random_world(rng: np.random.Generator) -> tuple[Fleet, list[ScanState]]:
    """A few regions as coordinate clusters, random specs and states, some unplaced
    containers, some moved after indexing; the same world as scan states."""
    count = int(rng.integers(20, 120))
    centres = rng.normal(0.0, 0.04, size=(4, DIMENSIONS))
    fleet, states = Fleet(DIMENSIONS), []
    for i in range(count):
        region = int(rng.integers(4))
        sessions = int(rng.integers(1, 4))
        item = profile(
            f"c{i}",
            builds=frozenset(rng.choice(["reference", "quake", "doom"], size=2).tolist()),
            region=f"r{region}",
            price_per_minute=float(rng.choice([0.01, 0.02, 0.025, 0.04])),
            vram_mib=int(rng.choice([0, 4096, 8192])),
            encoders=frozenset(rng.choice(["h264", "vp8", "av1"], size=2).tolist()),
            capacity=(StreamCapacity(1280, 720, 60, sessions),)
            + ((StreamCapacity(1920, 1080, 60, 1),) if rng.random() < 0.5 else ()),
        )
        coordinate = None
        if rng.random() < 0.9:
            vec = centres[region] + rng.normal(0.0, 0.008, DIMENSIONS)
            coordinate = Coordinate(tuple(vec.tolist()), float(rng.uniform(1e-4, 3e-3)), 0.2)
        state = ScanState(item, coordinate, bool(rng.random() < 0.9), float(rng.uniform(0, 10)))
        state.load = float(rng.integers(0, sessions + 1)) / sessions
        if rng.random() < 0.3:
            state.qos, state.penalty = float(rng.random()), float(rng.choice([0.0, 0.0, 0.4]))
        fleet.add(item, coordinate)
        states.append(state)
    rng.shuffle(states)  # a scan's order must not matter
    for state in states:
        cid = state.profile.container_id
        fleet.set_candidate(cid, state.candidate)
        fleet.set_deadline(cid, state.deadline)
        fleet.set_load(cid, state.load)
        fleet.set_quality(cid, state.qos, state.penalty)
        if state.coordinate is not None and rng.random() < 0.2:  # moved: its region's radius grows
            vec = np.array(state.coordinate.vec) + rng.normal(0.0, 0.02, DIMENSIONS)
            state.coordinate = Coordinate(tuple(vec.tolist()), state.coordinate.height, 0.2)
            fleet.set_coordinate(cid, state.coordinate)
    return fleet, states


def random_request(rng: np.random.Generator) -> Request:
    player = None
    if rng.random() < 0.85:
        player = Coordinate(tuple(rng.normal(0.0, 0.04, DIMENSIONS).tolist()), 0.003, 0.2)
    return Request(
        str(rng.choice(["reference", "quake", "doom", "none"])),
        *((1280, 720, 60) if rng.random() < 0.7 else (1920, 1080, 60)),
        requirements=Requirements(
            vram_mib=int(rng.choice([0, 4096])),
            encoders=frozenset(rng.choice(["h264", "vp8", "av1"], size=int(rng.integers(0, 2)))),
        ),
        budget_per_minute=float(rng.choice([math.inf, 0.015, 0.03])),
        rtt_bound=float(rng.choice([math.inf, 0.03, 0.05, 0.08, 0.12])),
        policy=Policy(rng.choice([p.value for p in Policy])),
        player=player,
    )


@pytest.mark.parametrize("seed", range(12))
def test_select_agrees_with_a_plain_scan_of_every_container(seed: int) -> None:
    """Region pruning never drops a container the scan finds within the bound: the same
    refusal, or the same set of containers, scores within a quantum, best first."""
    rng = np.random.default_rng(seed)
    fleet, states = random_world(rng)
    for _ in range(60):
        wanted, now = random_request(rng), float(rng.uniform(0, 10))
        try:
            expected = select_by_scan(states, wanted, now, rng, shortlist=10_000)
        except NoContainerError as scan_refusal:
            assert refused(fleet, wanted, now).filter == scan_refusal.filter, wanted
            continue
        got = fleet.select(wanted, now, rng, shortlist=10_000)
        assert {c.container_id for c in got} == {c.container_id for c in expected}, wanted
        quantum = QUANTUM[wanted.policy]
        if wanted.player is None and wanted.policy is Policy.BEST_EXPERIENCE:
            quantum = QUALITY_QUANTUM
        scores = {c.container_id: c.score for c in expected}
        shares = {c.container_id: c.share for c in expected}
        for choice in got:
            assert abs(choice.score - scores[choice.container_id]) <= quantum * 1.001
            assert choice.share == shares[choice.container_id]
            assert fleet.load(choice.container_id) + choice.share <= FULL  # the seat fits
        assert [c.score for c in got] == sorted(c.score for c in got)
        best = fleet.select(wanted, now, rng)[0]
        assert best.score == pytest.approx(min(c.score for c in expected), abs=quantum * 1.001)
