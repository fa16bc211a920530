"""ContainerRegistry: registration, filtered claims, availability moves, and liveness."""

from __future__ import annotations

import random
import re
from dataclasses import replace

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
from signaling.protocol import GpuSpec, HostSpecs, StreamCapacity, Telemetry

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
    assert (record.spec, record.availability, record.seats, record.load) == (
        spec("a"),
        Availability.STANDBY,
        {},
        0.0,
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
        ((spec("a"),), 1, HD, "no container is free for another 1920x1080@60 session"),
        ((spec("a"), spec("b", games=("doom",))), 1, HD, "no container is free for another"),
        ((spec("b", games=("doom",)),), 0, HD, "no container is hosting 'tetris'"),
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
    assert (record.availability, list(record.seats), record.sessions_served) == (
        Availability.RESERVED,
        ["s1"],
        1,
    )
    with pytest.raises(NoContainerError, match="no container is free for another 1920x1080@60"):
        registry.claim(HD, "s2")  # "small" is free, but cannot stream 1080p


def test_a_container_without_advertised_capacity_takes_one_session() -> None:
    registry = registry_of(spec("a"))
    assert registry.claim(HD, "s1") == spec("a")
    with pytest.raises(NoContainerError, match="no container is free for another"):
        registry.claim(HD, "s2")
    assert list(registry.get("a").seats) == ["s1"]


def single_in(state: Availability) -> ContainerRegistry:
    """A registry holding only container "a", moved through the API into `state`."""
    registry = registry_of(spec("a"))
    if state is not Availability.STANDBY:
        registry.claim(HD, "s1")
    if state is Availability.IN_SESSION:
        registry.start("a", "s1")
    assert registry.get("a").availability is state
    return registry


@pytest.mark.parametrize("state", [Availability.RESERVED, Availability.IN_SESSION], ids=str)
def test_release_returns_to_standby(state: Availability) -> None:
    registry = single_in(state)
    registry.release("a", "s1")
    record = registry.get("a")
    assert (record.availability, record.seats, record.sessions_served) == (
        Availability.STANDBY,
        {},
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
    message = f"session 's1' on container 'a' cannot go from {state.value} to {target}"
    with pytest.raises(ClaimError, match=message):
        getattr(registry, action)("a", "s1")
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
        registry.release(container_id, f"s{round_}")
    for start in range(0, len(chosen), count):
        assert sorted(chosen[start : start + count]) == sorted(f"c{n}" for n in range(count))
    assert {r.sessions_served for r in registry.records()} == {4}


def test_registry_keeps_the_announced_host_and_the_latest_telemetry() -> None:
    host = HostSpecs("AMD EPYC", 2, 24_105, [GpuSpec(0, "NVIDIA L4", "GPU-1", 23_034)])
    registry = registry_of(replace(spec("a"), host=host))
    record = registry.get("a")
    assert record.spec.host == host
    assert (record.telemetry, record.telemetry_at) == (None, None)

    first, second = Telemetry(10.0, 100, []), Telemetry(20.0, 200, [])
    registry.heartbeat("a", 1.0, first)
    registry.heartbeat("a", 2.0, second)
    assert (record.telemetry, record.telemetry_at, record.last_heartbeat) == (second, 2.0, 2.0)
    registry.heartbeat("a", 3.0)  # from an agent that predates telemetry: liveness only
    assert (record.telemetry, record.telemetry_at, record.last_heartbeat) == (second, 2.0, 3.0)


def with_capacity(container_id: str, *entries: tuple[int, int, int, int]) -> ContainerSpec:
    return replace(spec(container_id), capacity=tuple(StreamCapacity(*e) for e in entries))


HD720 = StreamRequest("tetris", 1280, 720, 60)


def test_a_container_takes_as_many_sessions_as_it_advertised_and_never_more() -> None:
    registry = registry_of(with_capacity("a", (1280, 720, 60, 3), (1920, 1080, 60, 1)))
    for n in range(3):
        assert registry.claim(HD720, f"s{n}").container_id == "a"
    with pytest.raises(NoContainerError, match="no container is free for another 1280x720@60"):
        registry.claim(HD720, "s3")
    assert registry.get("a").load == pytest.approx(1.0)
    registry.release("a", "s1")
    assert registry.claim(HD720, "s4").container_id == "a"  # the freed seat is taken again


def test_mixed_shapes_share_a_container_by_their_cost() -> None:
    registry = registry_of(with_capacity("a", (1280, 720, 60, 2), (1920, 1080, 60, 1)))
    registry.claim(HD720, "s1")  # half the container
    with pytest.raises(NoContainerError, match="free for another 1920x1080@60"):
        registry.claim(HD, "s2")  # a whole one does not fit beside it
    registry.claim(HD720, "s2")
    registry.release("a", "s1")
    registry.release("a", "s2")
    registry.claim(HD, "s3")
    with pytest.raises(NoContainerError, match="free for another 1280x720@60"):
        registry.claim(HD720, "s4")


def test_a_request_is_costed_at_the_smallest_advertised_shape_that_covers_it() -> None:
    registry = registry_of(with_capacity("a", (1280, 720, 60, 4), (1920, 1080, 120, 1)))
    small = StreamRequest("tetris", 640, 360, 30)
    assert registry.get("a").spec.seat_cost(small) == pytest.approx(0.25)
    assert registry.get("a").spec.seat_cost(HD) == pytest.approx(1.0)  # only 1080p120 covers it


def test_a_shape_the_container_did_not_advertise_is_not_matched_to_it() -> None:
    registry = registry_of(with_capacity("a", (1280, 720, 60, 2)))  # max size allows 1080p60
    with pytest.raises(NoContainerError, match="no container is able to stream 1920x1080@60"):
        registry.claim(HD, "s1")


def test_sessions_go_to_the_least_loaded_container() -> None:
    registry = registry_of(
        with_capacity("a", (1280, 720, 60, 4)), with_capacity("b", (1280, 720, 60, 2))
    )
    chosen = [registry.claim(HD720, f"s{n}").container_id for n in range(6)]
    assert sorted(chosen) == ["a", "a", "a", "a", "b", "b"]
    assert chosen[2] == "a"  # a quarter full beats half full


def test_a_container_is_in_session_while_any_of_its_seats_is() -> None:
    registry = registry_of(with_capacity("a", (1280, 720, 60, 2)))
    registry.claim(HD720, "s1")
    registry.claim(HD720, "s2")
    assert registry.get("a").availability is Availability.RESERVED
    registry.start("a", "s2")
    assert registry.get("a").availability is Availability.IN_SESSION
    registry.release("a", "s2")
    assert registry.get("a").availability is Availability.RESERVED
