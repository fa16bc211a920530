"""PlayQueue: arrival order, a bounded length, and a latency bound that widens with the wait."""

from __future__ import annotations

import math

import pytest

from indexer.play_queue import PlayQueue, QueueFullError, Relaxation
from indexer.selection import Request

REQUEST = Request("tetris", 1280, 720, 60, rtt_bound=0.04)


def test_players_keep_their_place_in_arrival_order() -> None:
    queue = PlayQueue(Relaxation(), limit=3)
    assert [queue.add(p, REQUEST, 0.0) for p in ("a", "b", "c")] == [1, 2, 3]
    assert queue.add("b", REQUEST, 5.0) == 2  # asking again keeps the place
    queue.remove("a")
    assert [queue.position(p) for p in ("b", "c")] == [1, 2]
    assert [w.player_id for w in queue] == ["b", "c"]
    assert "a" not in queue


def test_a_full_queue_refuses_with_a_reason() -> None:
    queue = PlayQueue(Relaxation(), limit=1)
    queue.add("a", REQUEST, 0.0)
    with pytest.raises(QueueFullError, match="1 players are already waiting"):
        queue.add("b", REQUEST, 0.0)


def test_iterating_is_safe_while_players_leave() -> None:
    queue = PlayQueue(Relaxation())
    for player in "abc":
        queue.add(player, REQUEST, 0.0)
    for waiting in queue:
        queue.remove(waiting.player_id)
    assert len(queue) == 0


@pytest.mark.parametrize(
    ("waited", "bound"),
    [
        (0.0, 0.04),
        (4.99, 0.04),
        (5.0, 0.06),
        (10.0, 0.09),
        (15.0, 0.135),
        (30.0, 0.25),
        (99.0, 0.25),
    ],
)
def test_the_bound_widens_every_step_up_to_the_ceiling(waited: float, bound: float) -> None:
    """The defaults, as the README states them: x1.5 every 5 s up to 250 ms."""
    queue = PlayQueue(Relaxation())
    queue.add("a", REQUEST, 100.0)
    (waiting,) = queue
    assert queue.relaxed(waiting, 100.0 + waited).rtt_bound == pytest.approx(bound)


def test_a_bound_wider_than_the_ceiling_or_none_at_all_stays_the_players() -> None:
    relaxation = Relaxation(ceiling=0.25)
    assert relaxation.bound(0.3, 60.0) == pytest.approx(0.3)
    assert math.isinf(relaxation.bound(math.inf, 60.0))


@pytest.mark.parametrize(("step", "factor", "ceiling"), [(0, 1.5, 0.2), (5, 0.9, 0.2), (5, 1.5, 0)])
def test_a_relaxation_that_makes_no_sense_is_refused(
    step: float, factor: float, ceiling: float
) -> None:
    with pytest.raises(ValueError, match="relaxation needs"):
        Relaxation(step, factor, ceiling)
