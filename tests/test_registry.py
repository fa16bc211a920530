"""ContainerRegistry: registration, filtered claims, availability moves, and liveness."""

from __future__ import annotations

import random
import re

import pytest

from indexer.registry import (
    Availability,
    ClaimError,
    ContainerRegistry,
    ContainerSpec,
    IndexerError,
    NoContainerError,
    StreamRequest,
)

HD = StreamRequest("tetris", 1920, 1080, 60)


def spec(
    container_id: str,
    games: tuple[str, ...] = ("tetris",),
    size: tuple[int, int, int] = (1920, 1080, 60),
) -> ContainerSpec:
    return ContainerSpec(container_id, frozenset(games), ("h264",), *size)


def registry_of(*specs: ContainerSpec, period: float = 1.0, misses: int = 3) -> ContainerRegistry:
    registry = ContainerRegistry(period, misses, random.Random(0))
    for item in specs:
        registry.register(item, now=0.0)
    return registry


def test_register_and_lookup() -> None:
    registry = registry_of(spec("a"))
    assert "a" in registry
    assert "b" not in registry
    assert [r.spec.container_id for r in registry.records()] == ["a"]
    record = registry.get("a")
    assert (record.spec, record.availability, record.session_id) == (
        spec("a"),
        Availability.STANDBY,
        None,
    )
    assert registry.records() == [record]


def test_duplicate_register_is_refused() -> None:
    registry = registry_of(spec("a"))
    with pytest.raises(IndexerError, match="container 'a' is already registered"):
        registry.register(spec("a", games=("doom",)), now=1.0)
    assert registry.get("a").spec == spec("a")


def test_unknown_container_is_an_indexer_error() -> None:
    registry = registry_of()
    with pytest.raises(IndexerError, match="container 'x' is not registered"):
        registry.get("x")
    with pytest.raises(IndexerError, match="container 'x' is not registered"):
        registry.heartbeat("x", 1.0)


def test_unregister_forgets() -> None:
    registry = registry_of(spec("a"), spec("b"))
    assert registry.unregister("a").spec == spec("a")
    assert "a" not in registry
    assert len(registry.records()) == 1


@pytest.mark.parametrize(
    ("specs", "earlier_claims", "wanted", "message"),
    [
        ((), 0, HD, "no container is registered"),
        ((spec("a"),), 1, HD, "no container is standby"),
        ((spec("a"), spec("b", games=("doom",))), 1, HD, "no container is hosting 'tetris'"),
        ((spec("a", games=("doom",)),), 0, StreamRequest("x", 640, 360, 30), "hosting 'x'"),
        ((spec("a", size=(1280, 720, 60)),), 0, HD, "no container is able to stream 1920x1080@60"),
        ((spec("a", size=(1920, 720, 60)),), 0, HD, "able to stream 1920x1080@60"),
        ((spec("a"),), 0, StreamRequest("tetris", 1280, 720, 120), "able to stream 1280x720@120"),
    ],
)
def test_claim_names_the_filter_that_emptied_the_set(
    specs: tuple[ContainerSpec, ...], earlier_claims: int, wanted: StreamRequest, message: str
) -> None:
    registry = registry_of(*specs)
    for n in range(earlier_claims):
        registry.claim(HD, f"earlier{n}")
    with pytest.raises(NoContainerError, match=re.escape(message)):
        registry.claim(wanted, "s1")


def test_claim_picks_the_only_eligible_container() -> None:
    eligible = spec("ok")
    registry = registry_of(
        spec("busy", games=("tetris", "solo")),
        spec("other-game", games=("doom",)),
        spec("small", size=(1280, 720, 60)),
        eligible,
    )
    assert registry.claim(StreamRequest("solo", 640, 360, 30), "s0").container_id == "busy"
    assert registry.claim(HD, "s1") == eligible
    record = registry.get("ok")
    assert (record.availability, record.session_id, record.sessions_served) == (
        Availability.RESERVED,
        "s1",
        1,
    )
    with pytest.raises(NoContainerError, match="no container is able to stream"):
        registry.claim(HD, "s2")  # "small" is the only standby tetris host left


def test_second_claim_of_a_single_container_finds_none_standby() -> None:
    registry = registry_of(spec("a"))
    assert registry.claim(HD, "s1") == spec("a")
    with pytest.raises(NoContainerError, match="no container is standby"):
        registry.claim(HD, "s2")
    assert registry.get("a").session_id == "s1"


def single_in(state: Availability) -> ContainerRegistry:
    """A registry holding only container "a", moved through the API into `state`."""
    registry = registry_of(spec("a"))
    if state is not Availability.STANDBY:
        registry.claim(HD, "s1")
    if state is Availability.IN_SESSION:
        registry.start("a")
    assert registry.get("a").availability is state
    return registry


@pytest.mark.parametrize("state", [Availability.RESERVED, Availability.IN_SESSION], ids=str)
def test_release_returns_to_standby(state: Availability) -> None:
    registry = single_in(state)
    registry.release("a")
    record = registry.get("a")
    assert (record.availability, record.session_id, record.sessions_served) == (
        Availability.STANDBY,
        None,
        1,
    )
    assert registry.claim(HD, "s2") == spec("a")


@pytest.mark.parametrize(
    ("state", "action", "target"),
    [
        (Availability.STANDBY, "start", "in_session"),
        (Availability.STANDBY, "release", "standby"),
        (Availability.IN_SESSION, "start", "in_session"),
    ],
)
def test_illegal_availability_moves(state: Availability, action: str, target: str) -> None:
    registry = single_in(state)
    message = f"container 'a' cannot go from {state.value} to {target}"
    with pytest.raises(ClaimError, match=message):
        getattr(registry, action)("a")
    assert registry.get("a").availability is state


@pytest.mark.parametrize(
    ("heartbeats", "now", "expired"),
    [
        ((), 2.9, []),
        ((), 3.0, []),
        ((), 3.1, ["a"]),
        ((2.0,), 3.1, []),
        ((2.0,), 4.9, []),
        ((2.0,), 5.1, ["a"]),
    ],
)
def test_expired_after_missed_heartbeats(
    heartbeats: tuple[float, ...], now: float, expired: list[str]
) -> None:
    registry = registry_of(spec("a"), period=1.0, misses=3)
    for at in heartbeats:
        registry.heartbeat("a", at)
    assert registry.expired(now) == expired


def test_expired_lists_only_the_silent_ones() -> None:
    registry = registry_of(spec("a"), spec("b"), spec("c"), period=1.0, misses=3)
    registry.heartbeat("b", 2.5)
    assert registry.expired(4.0) == ["a", "c"]


@pytest.mark.parametrize("count", [2, 3, 5])
def test_ties_are_spread_by_sessions_served(count: int) -> None:
    registry = registry_of(*(spec(f"c{n}") for n in range(count)))
    chosen = []
    for round_ in range(4 * count):
        container_id = registry.claim(HD, f"s{round_}").container_id
        chosen.append(container_id)
        registry.release(container_id)
    for start in range(0, len(chosen), count):
        assert sorted(chosen[start : start + count]) == sorted(f"c{n}" for n in range(count))
    assert {r.sessions_served for r in registry.records()} == {4}
