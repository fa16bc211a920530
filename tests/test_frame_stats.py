"""FrameLog metrics from marker samples with known receive times (Unix ms)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pytest

from contracts.marker import FrameMarker
from verifier.frame_stats import FrameLog, percentile


def log_of(
    received_ms: Sequence[float],
    *,
    sequences: Sequence[int] | None = None,
    inputs: Sequence[int] | None = None,
    latency_ms: int = 0,
) -> FrameLog:
    """Frames received at the given times, captured `latency_ms` before each."""
    log = FrameLog()
    for n, received in enumerate(received_ms):
        seq = n if sequences is None else sequences[n]
        applied = 0 if inputs is None else inputs[n]
        log.add(FrameMarker.at(seq, round(received) - latency_ms, applied), received)
    return log


def paced(intervals_ms: Sequence[float], start_ms: float = 1_000.0) -> FrameLog:
    return log_of(list(itertools.accumulate(intervals_ms, initial=start_ms)))


def test_intervals_and_fps() -> None:
    log = log_of([1_000.0, 1_016.0, 1_033.0, 1_050.0])
    assert log.frames == 4
    assert log.intervals_ms() == [16.0, 17.0, 17.0]
    assert log.fps() == pytest.approx(3 * 1000 / 50)
    assert paced([1000 / 60] * 60).fps() == pytest.approx(60.0)


@pytest.mark.parametrize("received", [[], [5.0], [5.0, 5.0]], ids=["none", "one", "no-span"])
def test_fps_without_a_span_is_zero(received: list[float]) -> None:
    assert log_of(received).fps() == 0.0


@pytest.mark.parametrize(
    ("sequences", "gaps"),
    [
        ([0, 1, 2, 3], 0),
        ([0, 1, 3], 1),  # one missing
        ([0, 1, 5], 3),  # three missing
        ([0, 2, 1, 3], 4),  # one swapped pair: 0->2 and 1->3 each skip one, 2->1 goes back 2
        ([0, 1, 1, 2], 1),  # a repeat
        ([5, 4], 2),
        ([7], 0),
    ],
)
def test_sequence_gaps(sequences: list[int], gaps: int) -> None:
    log = log_of([float(10 * n) for n in range(len(sequences))], sequences=sequences)
    assert log.sequence_gaps() == gaps


@pytest.mark.parametrize(
    ("steady_ms", "count", "gap_ms", "freezes"),
    [
        (16.7, 60, 200.0, 1),  # mean + 150 = 166.7 decides at 60 fps
        (16.7, 60, 160.0, 0),
        (20.0, 40, 170.0, 1),  # exactly mean + 150
        (20.0, 40, 169.0, 0),
        (100.0, 30, 300.0, 1),  # exactly 3 x mean decides at 10 fps
        (100.0, 30, 299.0, 0),
    ],
)
def test_freezes_follow_the_w3c_rule(
    steady_ms: float, count: int, gap_ms: float, freezes: int
) -> None:
    assert paced([steady_ms] * count + [gap_ms] + [steady_ms] * 5).freezes() == freezes


def test_freeze_uses_the_mean_of_the_last_30_only() -> None:
    """Slow frames long ago must not raise the bar for a freeze now."""
    assert paced([500.0] * 10 + [16.0] * 30 + [170.0]).freezes() == 1


def test_each_long_gap_is_a_freeze() -> None:
    assert paced(([16.0] * 40 + [400.0]) * 3).freezes() == 3


@pytest.mark.parametrize("captured_unix_ms", [1_700_000_000_000, 2 * (1 << 32) - 10])
def test_glass_to_glass_across_the_wrap(captured_unix_ms: int) -> None:
    log = FrameLog()
    for n, received in enumerate([captured_unix_ms + 25.4, captured_unix_ms + 40.6]):
        log.add(FrameMarker.at(n, captured_unix_ms, 0), received)
    assert log.glass_to_glass_ms() == [25.0, 41.0]


def test_glass_to_glass_of_a_steady_stream() -> None:
    log = log_of([3 * (1 << 32) - 20 + 16.0 * n for n in range(4)], latency_ms=33)
    assert log.glass_to_glass_ms() == [33.0] * 4


def test_glass_to_glass_with_receiver_clock_slightly_behind() -> None:
    log = log_of([1_700_000_000_000.0], latency_ms=-3)
    assert abs(log.glass_to_glass_ms()[0]) <= 3


def test_input_to_photon() -> None:
    log = log_of([110.0, 130.0, 180.0, 230.0, 250.0], inputs=[0, 1, 1, 3, 3])
    for seq, sent in [(1, 100.0), (2, 150.0), (3, 200.0), (4, 240.0)]:
        log.input_sent(seq, sent)
    # 1 first shows at 130; 2 and 3 first show together at 230; 4 never shows
    assert log.input_to_photon_ms() == [30.0, 80.0, 30.0]


def test_input_shown_before_it_was_sent_is_not_a_latency() -> None:
    log = log_of([100.0, 200.0], inputs=[1, 1])
    log.input_sent(1, 150.0)
    assert log.input_to_photon_ms() == []


def test_unreadable_frames_are_counted_not_used() -> None:
    log = log_of([0.0, 16.0])
    log.add(None, 32.0)
    log.add(None, 48.0)
    assert (log.unreadable, log.frames, log.intervals_ms()) == (2, 2, [16.0])


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([5.0], 0.95, 5.0),
        ([3.0, 1.0, 2.0], 0.5, 2.0),
        ([float(n) for n in range(1, 11)], 0.0, 1.0),
        ([float(n) for n in range(1, 11)], 0.5, 5.0),
        ([float(n) for n in range(1, 11)], 0.95, 10.0),
        ([float(n) for n in range(1, 11)], 1.0, 10.0),
        ([float(n) for n in range(1, 101)], 0.95, 95.0),
        ([1.0, 2.0], 2.0, 2.0),
        ([1.0, 2.0], -1.0, 1.0),
    ],
)
def test_percentile(values: list[float], fraction: float, expected: float) -> None:
    assert percentile(values, fraction) == expected


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 0.5))


def test_summary() -> None:
    log = log_of(
        [0.0, 20.0, 40.0, 60.0], sequences=[0, 1, 3, 4], inputs=[0, 1, 1, 1], latency_ms=30
    )
    log.input_sent(1, 10.0)
    log.add(None, 80.0)
    summary = log.summary()
    assert summary == {
        "frames": 4,
        "unreadable": 1,
        "sequence_gaps": 1,
        "fps": 50.0,
        "interval_mean_ms": 20.0,
        "interval_std_ms": 0.0,
        "freezes": 0,
        "g2g_p50_ms": 30.0,
        "g2g_p95_ms": 30.0,
        "i2p_p50_ms": 10.0,
        "i2p_p95_ms": 10.0,
        "inputs": 1,
    }


def test_summary_of_an_empty_log() -> None:
    summary = FrameLog().summary()
    assert (summary["frames"], summary["fps"], summary["freezes"]) == (0, 0.0, 0)
    nan_keys = ["interval_mean_ms", "interval_std_ms", "g2g_p50_ms", "i2p_p95_ms"]
    assert all(math.isnan(summary[key]) for key in nan_keys)
