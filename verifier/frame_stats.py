"""What a receiver learns from frame markers: rate, smoothness, latency, loss, input reaction.

Pure: samples carry the receiver's Unix time in milliseconds; nothing here reads a clock.
Freezes follow the W3C webrtc-stats rule: an inter-frame delay >= max(3 x the mean of the last
30, that mean + 150 ms).
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field

from contracts.marker import FrameMarker, capture_age_ms


@dataclass(frozen=True, slots=True)
class FrameSample:
    marker: FrameMarker
    received_ms: float  # receiver's Unix time when the frame was decoded/presented


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * (len(ordered) - 1))))
    return ordered[rank]


def count_freezes(intervals_ms: list[float]) -> int:
    """Inter-frame delays that count as freezes under the W3C webrtc-stats rule."""
    count = 0
    for index in range(1, len(intervals_ms)):
        mean = statistics.fmean(intervals_ms[max(0, index - 30) : index])
        if intervals_ms[index] >= max(3 * mean, mean + 150):
            count += 1
    return count


def frame_rate(times_ms: list[float]) -> float:
    """Frames per second over a series of arrival (or presentation) times."""
    span = times_ms[-1] - times_ms[0] if len(times_ms) > 1 else 0.0
    return (len(times_ms) - 1) * 1000.0 / span if span > 0 else 0.0


def series_summary(
    times_ms: list[float], g2g_ms: list[float], i2p_ms: list[float]
) -> dict[str, float]:
    """Rate, smoothness and latency of one receiver's frames: the figures every client reports."""
    intervals = [b - a for a, b in itertools.pairwise(times_ms)]
    return {
        "frames": len(times_ms),
        "fps": round(frame_rate(times_ms), 2),
        "interval_mean_ms": round(statistics.fmean(intervals), 2) if intervals else math.nan,
        "interval_std_ms": round(statistics.pstdev(intervals), 2) if intervals else math.nan,
        "freezes": count_freezes(intervals),
        "g2g_p50_ms": round(percentile(g2g_ms, 0.5), 1),
        "g2g_p95_ms": round(percentile(g2g_ms, 0.95), 1),
        "i2p_p50_ms": round(percentile(i2p_ms, 0.5), 1),
        "i2p_p95_ms": round(percentile(i2p_ms, 0.95), 1),
    }


@dataclass
class FrameLog:
    samples: list[FrameSample] = field(default_factory=list)
    unreadable: int = 0
    inputs_sent: dict[int, float] = field(default_factory=dict)  # seq -> sent Unix ms

    def add(self, marker: FrameMarker | None, received_ms: float) -> None:
        if marker is None:
            self.unreadable += 1
        else:
            self.samples.append(FrameSample(marker, received_ms))

    def input_sent(self, seq: int, sent_ms: float) -> None:
        self.inputs_sent[seq] = sent_ms

    @property
    def frames(self) -> int:
        return len(self.samples)

    def sequence_gaps(self) -> int:
        """Frames missing or out of order, from the marker's frame sequence."""
        gaps = 0
        for before, after in zip(self.samples, self.samples[1:], strict=False):
            step = after.marker.frame_sequence - before.marker.frame_sequence
            gaps += 0 if step == 1 else max(1, abs(step - 1))
        return gaps

    def intervals_ms(self) -> list[float]:
        times = [s.received_ms for s in self.samples]
        return [b - a for a, b in itertools.pairwise(times)]

    def fps(self) -> float:
        return frame_rate([s.received_ms for s in self.samples])

    def glass_to_glass_ms(self) -> list[float]:
        return [
            float(capture_age_ms(s.marker.capture_time_ms, round(s.received_ms)))
            for s in self.samples
        ]

    def freezes(self) -> int:
        return count_freezes(self.intervals_ms())

    def input_to_photon_ms(self) -> list[float]:
        """For each input sent, the delay until the first frame showing it applied."""
        latencies = []
        pending = sorted(self.inputs_sent.items())
        position = 0
        for sample in self.samples:
            while position < len(pending) and pending[position][0] <= sample.marker.input_sequence:
                _seq, sent = pending[position]
                if sample.received_ms >= sent:
                    latencies.append(sample.received_ms - sent)
                position += 1
        return latencies

    def summary(self) -> dict[str, float]:
        times = [s.received_ms for s in self.samples]
        return {
            **series_summary(times, self.glass_to_glass_ms(), self.input_to_photon_ms()),
            "unreadable": self.unreadable,
            "sequence_gaps": self.sequence_gaps(),
            "inputs": len(self.inputs_sent),
        }
