"""Fleet.select on small hand-built fleets: each filter named in the seed's order, each policy's
pick, QoS and penalties, random ties, and region pruning against a plain scan."""

from __future__ import annotations

import math

import numpy as np
import pytest

from indexer.coordinates import Coordinate
from indexer.errors import NoContainerError
from indexer.selection import Fleet, Policy, Profile, Request, Requirements
from signaling.protocol import StreamCapacity


def profile(cid: str, price: float = 0.02, region: str = "eu", **changes: object) -> Profile:
    values: dict[str, object] = {
        "container_id": cid, "builds": frozenset({"tetris"}), "region": region,
        "price_per_minute": price, "vram_mib": 16_000, "cpu_cores": 8, "ram_mib": 32_000,
        "uplink_mbps": 500.0, "encoders": frozenset({"h264"}), "max_width": 1920,
        "max_height": 1080, "max_fps": 60,
        "capacity": (StreamCapacity(1280, 720, 60, 2),),
    }  # fmt: skip
    values.update(changes)
    return Profile(**values)  # type: ignore[arg-type]


def at(x_ms: float, height_ms: float = 0.5) -> Coordinate:
    vec = np.zeros(8)
    vec[0] = x_ms / 1000
    return Coordinate(vec, height_ms / 1000, 0.1)


def fleet_of(*entries: tuple[Profile, Coordinate | None]) -> Fleet:
    fleet = Fleet()
    for prof, coordinate in entries:
        fleet.add(prof, coordinate)
        fleet.set_candidate(prof.container_id, True)
        fleet.set_deadline(prof.container_id, math.inf)
    return fleet


def pick(fleet: Fleet, request: Request, seed: int = 0) -> str:
    return fleet.select(request, 0.0, np.random.default_rng(seed))[0].container_id


def refusal(fleet: Fleet, request: Request) -> str:
    with pytest.raises(NoContainerError) as refused:
        fleet.select(request, 0.0, np.random.default_rng(0))
    return refused.value.filter


HD720 = Request("tetris", 1280, 720, 60)


def test_each_filter_empties_the_set_and_is_named_in_the_seeds_order() -> None:
    near = fleet_of((profile("a", price=0.05), at(10)))
    player = at(0)
    assert refusal(Fleet(), HD720) == "standby"
    assert refusal(near, Request("doom", 1280, 720, 60)) == "build"
    assert (
        refusal(near, Request("tetris", 1280, 720, 60, Requirements(vram_mib=80_000)))
        == "resources"
    )
    assert refusal(near, Request("tetris", 1920, 1080, 60)) == "resources"  # no seat of that shape
    assert refusal(near, Request("tetris", 1280, 720, 60, rtt_bound=0.005, player=player)) == "rtt"
    assert refusal(near, Request("tetris", 1280, 720, 60, budget_per_minute=0.01)) == "price"
    # Two filters fail: the earlier one is named.
    both = Request("tetris", 1280, 720, 60, budget_per_minute=0.01, rtt_bound=0.005, player=player)
    assert refusal(near, both) == "rtt"
    near.set_load("a", 1.0)
    assert refusal(near, HD720) == "standby"
    near.set_load("a", 0.0)
    near.set_deadline("a", -1.0)  # silent: its deadline passed
    assert refusal(near, HD720) == "standby"


def test_each_policy_picks_its_container() -> None:
    fleet = fleet_of(
        (profile("cheap-far", price=0.01), at(70)),
        (profile("dear-near", price=0.08), at(2)),
        (profile("mid", price=0.03), at(15)),
    )
    player = at(0)
    assert (
        pick(fleet, Request("tetris", 1280, 720, 60, policy=Policy.LOWEST_COST, player=player))
        == "cheap-far"
    )
    assert (
        pick(fleet, Request("tetris", 1280, 720, 60, policy=Policy.BEST_EXPERIENCE, player=player))
        == "dear-near"
    )
    bounded = Request(
        "tetris", 1280, 720, 60, policy=Policy.LOWEST_COST, player=player, rtt_bound=0.03
    )
    assert pick(fleet, bounded) == "mid"  # the cheapest within 30 ms


def test_quality_and_penalties_move_the_ranking() -> None:
    fleet = fleet_of((profile("a"), at(5)), (profile("b"), at(5)))
    request = Request("tetris", 1280, 720, 60, policy=Policy.BEST_OVERALL, player=at(0))
    fleet.set_quality("a", 0.2)
    fleet.set_quality("b", 1.0)
    assert {pick(fleet, request, seed) for seed in range(10)} == {"b"}
    fleet.set_quality("a", 1.0)
    fleet.set_quality("b", 1.0, penalty=5.0)
    assert {pick(fleet, request, seed) for seed in range(10)} == {"a"}


def test_ties_are_broken_at_random_and_reproducibly() -> None:
    fleet = fleet_of(*((profile(f"c{n}"), at(5)) for n in range(4)))
    picks = [pick(fleet, HD720, seed) for seed in range(40)]
    assert set(picks) == {"c0", "c1", "c2", "c3"}
    assert picks == [pick(fleet, HD720, seed) for seed in range(40)]


def test_a_shortlist_is_distinct_and_best_first() -> None:
    fleet = fleet_of(*((profile(f"c{n}", price=0.01 * (n + 1)), at(5)) for n in range(5)))
    request = Request("tetris", 1280, 720, 60, policy=Policy.LOWEST_COST)
    choices = fleet.select(request, 0.0, np.random.default_rng(0), shortlist=3)
    assert [c.container_id for c in choices] == ["c0", "c1", "c2"]
    assert [c.share for c in choices] == [0.5, 0.5, 0.5]


def test_region_pruning_never_drops_a_container_within_the_bound() -> None:
    rng = np.random.default_rng(7)
    entries = []
    for n in range(300):
        region = f"r{n % 6}"
        centre = (n % 6) * 25.0
        entries.append((profile(f"c{n}", region=region), at(centre + rng.normal(0, 4))))
    fleet = fleet_of(*entries)
    for trial in range(50):
        player = at(float(rng.uniform(-10, 160)), 2.0)
        bound = float(rng.uniform(0.005, 0.04))
        request = Request("tetris", 1280, 720, 60, rtt_bound=bound, player=player,
                          policy=Policy.BEST_EXPERIENCE)  # fmt: skip
        within = {
            prof.container_id
            for prof, c in entries
            if abs(c.vec[0] - player.vec[0]) + c.height + player.height <= bound
        }
        if not within:
            assert refusal(fleet, request) == "rtt"
            continue
        shortlist = fleet.select(request, 0.0, np.random.default_rng(trial), shortlist=400)
        assert {c.container_id for c in shortlist} == within
