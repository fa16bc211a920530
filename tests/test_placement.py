"""Placing players from the page's probes: landmarks, neighbours, the fit, and what it refuses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.coordinates import learn, synthetic_topology
from indexer.coordinates import Coordinate, Coordinates, VivaldiConfig, distance
from indexer.placement import LANDMARKS, NEIGHBOURS, Placement, fit

CONTAINERS, PLAYERS = 1000, 60


@pytest.fixture(scope="module")
def network() -> tuple[Placement, object, np.ndarray]:
    """1,000 containers whose coordinates were learned on the synthetic Internet, and 60
    players of the same topology who have measured nothing yet."""
    rng = np.random.default_rng(7)
    topology = synthetic_topology(CONTAINERS + PLAYERS, rng)
    points = learn(topology, 200, VivaldiConfig(), rng)
    placement = Placement(VivaldiConfig(), np.random.default_rng(8))
    for i in range(CONTAINERS):
        placement.join(f"c{i}", f"region-{topology.region[i]}", f"http://10.0.0.{i % 250}/probe")
        placement.book.put(f"c{i}", points.take(np.arange(CONTAINERS)).row(i))
    return placement, topology, np.arange(CONTAINERS)


def _probe(topology, player: int, landmarks, rng) -> list[tuple[str, float]]:
    ids = np.array([int(lm.container_id[1:]) for lm in landmarks])
    rtts = topology.probe(np.full(len(ids), player), ids, rng)
    return [(f"c{i}", float(r)) for i, r in zip(ids, rtts, strict=True)]


def test_two_rounds_place_players_among_their_neighbours(network) -> None:
    placement, topology, containers = network
    rng = np.random.default_rng(9)
    everywhere, nearby, regret = [], [], []
    for player in range(CONTAINERS, CONTAINERS + PLAYERS):
        first = placement.landmarks()
        assert len(first) == LANDMARKS
        samples = _probe(topology, player, first, rng)
        rough = placement.place(f"p{player}", samples).coordinate
        assert rough is not None
        second = placement.neighbours(rough, {c for c, _ in samples})
        assert len(second) == NEIGHBOURS and not {lm.container_id for lm in second} & {
            c for c, _ in samples
        }
        placed = placement.place(f"p{player}", samples + _probe(topology, player, second, rng))
        assert placed.coordinate is not None and not placed.refused
        assert f"p{player}" not in placement.book  # players do not stay in the book
        here = Coordinates(
            np.array([placed.coordinate.vec]),
            np.array([placed.coordinate.height]),
            np.array([placed.coordinate.error]),
        )
        book_rows = [placement.book.coordinate(f"c{i}") for i in containers]
        there = Coordinates(
            np.array([c.vec for c in book_rows]),
            np.array([c.height for c in book_rows]),
            np.array([c.error for c in book_rows]),
        )
        estimate = distance(here, there)
        true = topology.rtt(np.full(len(containers), player), containers)
        relative = np.abs(estimate - true) / true
        everywhere.append(np.median(relative))
        nearby.append(np.median(relative[topology.region[containers] == topology.region[player]]))
        regret.append(true[np.argmin(estimate)] - true.min())
    assert np.median(everywhere) <= 0.10
    assert np.median(nearby) <= 0.25  # landmarks alone: ~0.36 on this topology
    assert np.median(regret) <= 0.005  # seconds: the container judged nearest vs the nearest


def test_landmarks_cover_regions_and_explore_the_least_placed() -> None:
    placement = Placement(VivaldiConfig(dimensions=2), np.random.default_rng(1))
    for i in range(4):
        placement.join(f"eu{i}", "eu", f"http://eu{i}/probe")
        placement.book.put(f"eu{i}", Coordinate((0.0, 0.0), 0.001, 0.1 + i / 10))
    placement.join("us0", "us", "http://us0/probe")
    placement.book.put("us0", Coordinate((0.05, 0.0), 0.001, 0.2))
    placement.join("new", "us", "http://new/probe")  # fresh: error 1.5
    placement.join("hidden", "us", "")  # no probe url: never a landmark
    chosen = [lm.container_id for lm in placement.landmarks(3)]
    assert chosen == ["new", "eu0", "us0"]  # explore first, then the surest of each region
    assert "hidden" not in [lm.container_id for lm in placement.landmarks(8)]
    placement.pause("us0")
    assert "us0" not in [lm.container_id for lm in placement.landmarks(8)]
    assert "us0" in placement.book  # its coordinate stays for its return


def test_refused_samples_are_named_and_leave_the_player_unplaced() -> None:
    placement = Placement(VivaldiConfig(dimensions=2), np.random.default_rng(1))
    placement.join("a", "eu", "http://a/probe")
    placed = placement.place("p", [("ghost", 0.01), ("a", 1e-157), ("a", math.nan)])
    assert placed.coordinate is None
    assert placed.refused == {
        "ghost": "container 'ghost' has no coordinate",
        "a": "an RTT of nan s is not a number from 5e-05 to 10",
    }
    assert "p" not in placement.book


def test_fit_recovers_a_point_from_exact_distances() -> None:
    config = VivaldiConfig(dimensions=2)
    anchors = Coordinates(
        np.array([[0.0, 0.0], [0.04, 0.0], [0.0, 0.04], [0.04, 0.04]]),
        np.full(4, 0.002),
        np.full(4, 0.1),
    )
    truth = np.array([0.01, 0.03])
    rtt = np.sqrt(np.sum((anchors.vec - truth) ** 2, axis=1)) + 0.002 + 0.003
    placed = fit(anchors, rtt, config)
    assert np.allclose(placed.vec, truth, atol=1e-4)
    assert placed.height == pytest.approx(0.003, abs=1e-4)
    assert placed.error == 0.05  # a perfect fit claims the floor, not zero
