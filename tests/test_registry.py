"""ContainerRegistry: each container's lifecycle kept in step with the fleet index selection reads.

Time is a fake clock (`now` arguments); the heartbeat period is 1 s with 3 misses allowed.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from contracts.protocol import GpuSpec, HostSpecs, StreamCapacity, Telemetry
from indexer.errors import IndexerError, NoContainerError
from indexer.lifecycle import (
    Admission,
    Availability,
    Event,
    IllegalEventError,
    Liveness,
    LivenessConfig,
    SeedState,
)
from indexer.registry import ContainerRegistry, ContainerSpec
from indexer.selection import Request

HD = Request("tetris", 1920, 1080, 60)
HD720 = Request("tetris", 1280, 720, 60)


def spec(
    container_id: str, *capacity: tuple[int, int, int, int], **changes: object
) -> ContainerSpec:
    base = ContainerSpec(
        container_id,
        frozenset({"tetris"}),
        ("h264",),
        1920,
        1080,
        60,
        capacity=tuple(StreamCapacity(*c) for c in capacity),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def registry_of(*specs: ContainerSpec, admit: bool = True) -> ContainerRegistry:
    registry = ContainerRegistry(
        LivenessConfig(1.0, 3), np.random.default_rng(0), admit_on_register=admit
    )
    for item in specs:
        registry.register(item, now=0.0)
    return registry


def seed_state(registry: ContainerRegistry, container_id: str, now: float) -> SeedState:
    return registry.get(container_id).lifecycle.seed_state(now)


def test_a_registered_container_is_inspected_before_it_is_offered() -> None:
    registry = registry_of(spec("a"), admit=False)
    assert seed_state(registry, "a", 0.0) is SeedState.AWAITING_INSPECTION
    with pytest.raises(NoContainerError, match="standby") as refused:
        registry.claim(HD, "s1", 0.0)
    assert refused.value.filter == "standby"
    registry.apply("a", Event.INSPECTION_PASSED, 0.5)
    assert seed_state(registry, "a", 0.5) is SeedState.CONNECTED_AND_HEALTHY
    assert registry.claim(HD, "s1", 0.5).container_id == "a"


def test_admit_on_register_stands_in_for_the_verifiers() -> None:
    registry = registry_of(spec("a"))
    assert registry.get("a").lifecycle.admission is Admission.READY
    assert registry.claim(HD, "s1", 0.0).container_id == "a"


def test_a_live_container_cannot_register_twice_and_unknown_ones_are_errors() -> None:
    registry = registry_of(spec("a"))
    with pytest.raises(IndexerError, match="container 'a' is already registered and live"):
        registry.register(spec("a"), now=1.0)
    with pytest.raises(IndexerError, match="container 'x' is not registered"):
        registry.heartbeat("x", 1.0)


def test_heartbeats_keep_a_container_live_and_silence_expires_it_and_its_sessions() -> None:
    registry = registry_of(spec("a", (1280, 720, 60, 2)), spec("b", games=frozenset({"doom"})))
    registry.claim(HD720, "s1", 0.0)
    registry.claim(HD720, "s2", 0.0)
    for now in (1.0, 2.0, 3.0, 4.0):
        registry.heartbeat("a", now)
    # b last heard at 0: past 3 periods at 3.01; a, heard at 4.0, is live until 7.0.
    assert registry.expire(3.0) == []
    expired = registry.expire(3.01)
    assert [cid for cid, _ in expired] == ["b"]
    assert registry.get("b").lifecycle.liveness is Liveness.MISSED
    assert registry.expire(7.0) == []
    ((cid, freed),) = registry.expire(7.01)
    assert (cid, sorted(freed)) == ("a", ["s1", "s2"])
    assert registry.get("a").lifecycle.seats == {}
    with pytest.raises(NoContainerError) as refused:
        registry.claim(HD720, "s3", 7.01)
    assert refused.value.filter == "standby"


def test_selection_does_not_wait_for_the_sweep_to_skip_a_silent_container() -> None:
    registry = registry_of(spec("a"))
    with pytest.raises(NoContainerError) as refused:
        registry.claim(HD, "s1", 3.5)  # past the deadline, expire() not run yet
    assert refused.value.filter == "standby"


def test_a_late_heartbeat_is_refused_until_the_container_registers_again() -> None:
    registry = registry_of(spec("a"))
    with pytest.raises(IllegalEventError, match="overdue"):
        registry.heartbeat("a", 5.0)
    registry.expire(5.0)
    with pytest.raises(IllegalEventError, match="heartbeat while missed"):
        registry.heartbeat("a", 5.1)
    registry.register(spec("a"), now=5.2)
    assert seed_state(registry, "a", 5.2) is SeedState.CONNECTED_AND_HEALTHY
    registry.heartbeat("a", 6.0)
    assert registry.get("a").lifecycle.last_heartbeat == 6.0
    assert registry.expire(9.0) == []  # live until 6 + 3 s, not 5.2 + 3 s


def test_a_closed_connection_frees_the_seats_at_once_and_the_record_is_kept() -> None:
    registry = registry_of(spec("a"))
    registry.claim(HD, "s1", 0.0)
    assert registry.apply("a", Event.HEARTBEAT_MISSED, 0.5) == ("s1",)
    assert registry.get("a").lifecycle.liveness is Liveness.MISSED
    assert "a" in registry
    with pytest.raises(IllegalEventError):
        registry.apply("a", Event.HEARTBEAT_MISSED, 0.6)


def test_admission_survives_reconnection_and_new_specs_are_inspected_again() -> None:
    registry = registry_of(spec("a"), admit=False)
    registry.apply("a", Event.INSPECTION_PASSED, 0.0)
    registry.apply("a", Event.QC_FLAGGED, 0.1)  # a verifier's hold is not washed away
    registry.apply("a", Event.HEARTBEAT_MISSED, 0.2)
    registry.register(spec("a"), now=0.3)
    assert registry.get("a").lifecycle.admission is Admission.QUALITY_CONTROL

    ready = registry_of(spec("b"), admit=False)
    ready.apply("b", Event.INSPECTION_PASSED, 0.0)
    ready.apply("b", Event.HEARTBEAT_MISSED, 0.1)
    ready.register(spec("b", max_fps=120), now=0.2)  # claims more than was inspected
    assert ready.get("b").lifecycle.admission is Admission.NEEDS_REINSPECTION
    assert ready.get("b").spec.max_fps == 120


def test_a_maintenance_lock_stops_new_claims_but_lets_seats_finish() -> None:
    registry = registry_of(spec("a", (1280, 720, 60, 2)))
    registry.claim(HD720, "s1", 0.0)
    registry.start("a", "s1", 0.0)
    registry.apply("a", Event.MAINTENANCE_ON, 0.1)
    assert registry.get("a").lifecycle.availability is Availability.MAINTENANCE_LOCK
    with pytest.raises(NoContainerError):
        registry.claim(HD720, "s2", 0.2)
    registry.release("a", "s1", 0.3)
    registry.apply("a", Event.MAINTENANCE_OFF, 0.4)
    assert registry.claim(HD720, "s2", 0.5).container_id == "a"


def test_a_container_takes_as_many_sessions_as_it_advertised_and_never_more() -> None:
    registry = registry_of(spec("a", (1280, 720, 60, 3), (1920, 1080, 60, 1)))
    for n in range(3):
        assert registry.claim(HD720, f"s{n}", 0.0).container_id == "a"
    with pytest.raises(NoContainerError, match="standby"):
        registry.claim(HD720, "s3", 0.0)
    assert registry.get("a").lifecycle.load == pytest.approx(1.0)
    registry.release("a", "s1", 0.1)
    assert registry.claim(HD720, "s4", 0.1).container_id == "a"  # the freed seat is taken again


def test_mixed_shapes_share_a_container_by_their_cost() -> None:
    registry = registry_of(spec("a", (1280, 720, 60, 2), (1920, 1080, 60, 1)))
    assert registry.claim(HD720, "s1", 0.0).share == pytest.approx(0.5)
    with pytest.raises(NoContainerError):
        registry.claim(HD, "s2", 0.0)  # a whole one does not fit beside it
    registry.claim(HD720, "s2", 0.0)
    registry.release("a", "s1", 0.0)
    registry.release("a", "s2", 0.0)
    assert registry.claim(HD, "s3", 0.0).share == pytest.approx(1.0)


def test_seat_moves_follow_the_lifecycle_table() -> None:
    registry = registry_of(spec("a", (1280, 720, 60, 2)))
    registry.claim(HD720, "s1", 0.0)
    registry.claim(HD720, "s2", 0.0)
    assert registry.get("a").lifecycle.availability is Availability.RESERVED
    registry.start("a", "s2", 0.0)
    assert registry.get("a").lifecycle.availability is Availability.IN_SESSION
    with pytest.raises(IllegalEventError, match="session_started for session 's2'"):
        registry.start("a", "s2", 0.0)
    registry.release("a", "s2", 0.0)
    with pytest.raises(IllegalEventError, match="session_ended for session 's2'"):
        registry.release("a", "s2", 0.0)
    assert registry.get("a").lifecycle.availability is Availability.RESERVED


def test_can_stream_follows_the_claims_own_rule() -> None:
    registry = registry_of(spec("a", (1280, 720, 60, 2)))  # max size allows 1080p60
    assert registry.can_stream("a", 1280, 720, 60)
    assert registry.can_stream("a", 640, 360, 30)
    assert not registry.can_stream("a", 1920, 1080, 60)  # not advertised
    assert not registry.can_stream("a", 1280, 720, 120)


def test_the_announced_host_and_the_latest_telemetry_are_kept() -> None:
    host = HostSpecs("AMD EPYC", 2, 24_105, [GpuSpec(0, "NVIDIA L4", "GPU-1", 23_034)])
    registry = registry_of(spec("a", host=host))
    record = registry.get("a")
    assert record.spec.profile().vram_mib == 23_034
    first, second = Telemetry(10.0, 100, []), Telemetry(20.0, 200, [])
    registry.heartbeat("a", 1.0, first)
    registry.heartbeat("a", 2.0, second)
    registry.heartbeat("a", 3.0)  # from an agent that predates telemetry: liveness only
    assert (record.telemetry, record.telemetry_at, record.lifecycle.last_heartbeat) == (
        second,
        2.0,
        3.0,
    )
