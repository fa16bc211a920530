"""FramePacer on an explicit clock: slot N due at start + N/fps, late production skips."""

from __future__ import annotations

import pytest

from streamer.pacing import FramePacer, FrameSlot, SteadyRelease


@pytest.mark.parametrize("fps", [0, -1, -60.0])
def test_fps_must_be_positive(fps: float) -> None:
    with pytest.raises(ValueError, match="fps must be positive"):
        FramePacer(fps, start=0.0)


@pytest.mark.parametrize("fps", [30, 59.94, 60, 144])
@pytest.mark.parametrize("start", [0.0, 123_456.789])
def test_on_time_slots_do_not_drift(fps: float, start: float) -> None:
    pacer = FramePacer(fps, start)
    for n in range(10_000):
        lateness = 0.5 / fps if n % 2 else 0.0  # late, but by less than one interval
        slot = pacer.next_slot(start + n / fps + lateness)
        assert (slot.index, slot.skipped) == (n, 0)
        assert slot.deadline == pytest.approx(start + n / fps, abs=1e-9)
    assert pacer.deadline(10_000) == pytest.approx(start + 10_000 / fps, abs=1e-9)
    assert pacer.skipped_total == 0


@pytest.mark.parametrize(
    ("now", "index", "skipped"),
    [
        (0.02, 1, 0),  # slot 1 exactly on time
        (0.039, 1, 0),  # late by less than one interval: still slot 1
        (0.041, 2, 1),  # late by more: jump to the slot now running
        (0.105, 5, 4),
        (10.0, 500, 499),
    ],
)
def test_late_production_skips_to_current_slot(now: float, index: int, skipped: int) -> None:
    pacer = FramePacer(50, start=0.0)
    assert pacer.next_slot(0.0) == FrameSlot(0, 0.0, 0)
    slot = pacer.next_slot(now)
    assert (slot.index, slot.skipped) == (index, skipped)
    assert slot.deadline == pytest.approx(index / 50, abs=1e-9)
    assert pacer.skipped_total == skipped
    assert pacer.next_slot(slot.deadline).index == index + 1


def test_skips_accumulate() -> None:
    pacer = FramePacer(10, start=100.0)
    slots = [pacer.next_slot(now) for now in (100.0, 100.35, 100.4, 101.0)]
    assert [(s.index, s.skipped) for s in slots] == [(0, 0), (3, 2), (4, 0), (10, 5)]
    assert pacer.skipped_total == 7


def test_steady_release_holds_frames_to_the_usual_lateness() -> None:
    release = SteadyRelease(fps=60, window=10, quantile=0.9)
    # Nine frames ready 2 ms after their slot, then one at 4 ms: the hold settles on the
    # 90th percentile, so a quick frame waits for it and a slow one goes at once.
    for index in range(9):
        assert release.release_at(index, index + 0.002) == pytest.approx(index + 0.002)
    assert release.release_at(9, 9.004) == pytest.approx(9.004)
    assert release.hold == pytest.approx(0.004)
    assert release.release_at(10, 10.001) == pytest.approx(10.004)
    assert release.release_at(11, 11.006) == pytest.approx(11.006)


def test_steady_release_hold_is_capped_at_half_an_interval() -> None:
    release = SteadyRelease(fps=120)
    for index in range(50):
        release.release_at(index, index + 0.020)  # an encoder far slower than the frame rate
    assert release.hold == pytest.approx(0.5 / 120)
    assert release.release_at(50, 50.0) == pytest.approx(50 + 0.5 / 120)


def test_early_frames_are_never_released_before_their_slot() -> None:
    release = SteadyRelease(fps=60)
    assert release.release_at(5.0, 4.9) == 5.0


@pytest.mark.parametrize(("fps", "quantile"), [(0, 0.9), (60, 0.0), (60, 1.5)])
def test_steady_release_refuses_nonsense(fps: float, quantile: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        SteadyRelease(fps, quantile=quantile)
