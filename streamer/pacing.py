"""Frame pacing from a monotonic clock: frame slot N is due at t0 + N/fps, with no drift.

When production falls behind by more than one interval, the missed slots are skipped rather
than produced late in a burst: in real-time play a stale frame is worth less than none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FrameSlot:
    index: int  # slot number since t0; the frame's presentation time is index / fps
    deadline: float  # when the frame is due, on the pacer's clock
    skipped: int  # slots dropped just before this one because production was late


class FramePacer:
    def __init__(self, fps: float, start: float) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self.interval = 1.0 / fps
        self._start = start
        self._next = 0
        self.skipped_total = 0

    def deadline(self, index: int) -> float:
        return self._start + index * self.interval

    def next_slot(self, now: float) -> FrameSlot:
        """The slot to produce next, given that the previous one has just been produced."""
        index = self._next
        if now > self.deadline(index) + self.interval:
            index = math.floor((now - self._start) * self.fps)
        skipped = index - self._next
        self.skipped_total += skipped
        self._next = index + 1
        return FrameSlot(index, self.deadline(index), skipped)
