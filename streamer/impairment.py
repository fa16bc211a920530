"""Faults a container can be started with on purpose, to show that verifiers catch them.

A verifier is only worth its score if a container that cheats or degrades is demoted. These
are the three ways issue 6 names, applied by the container to its own sessions:
- `extra_delay_ms` holds every frame that long after it is encoded, before it is sent. The
  frame rate stays as asked (a delay line with due times, not a pause per frame) and the
  marker's capture time stays the moment the pixels were final, so a receiver's
  glass-to-glass rises by exactly the delay: `gamecast bench verifier` measures that.
- `serve_fps` streams at that rate when a session asks for more, as a container advertising
  60 fps and serving 30 would.
- `ignore_input` drops every valid input event before the game sees it.

`DelayLine` is the pure part of the delay; streamer/pipeline.py's hold thread waits for its
head. A thread rather than a loop timer: a timer fires only when the loop is free, and a
frame late by that much more would overstate the delay the benchmark checks to +-3 ms.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from streamer.errors import StreamerError

MAX_EXTRA_DELAY_MS = 5_000.0
MAX_SERVE_FPS = 240  # contracts.protocol's highest frame rate

T = TypeVar("T")


class ImpairmentError(StreamerError, ValueError):
    """An impairment setting is out of range; the message gives the range."""


@dataclass(frozen=True, slots=True)
class Impairment:
    """What is wrong with this container on purpose; the default is nothing."""

    extra_delay_ms: float = 0.0
    serve_fps: int = 0  # 0: serve the rate each session asks for
    ignore_input: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.extra_delay_ms <= MAX_EXTRA_DELAY_MS:  # also refuses NaN
            raise ImpairmentError(
                f"extra delay {self.extra_delay_ms} ms is outside [0, {MAX_EXTRA_DELAY_MS:g}] ms"
            )
        if not 0 <= self.serve_fps <= MAX_SERVE_FPS:
            raise ImpairmentError(
                f"served frame rate {self.serve_fps} is outside [0, {MAX_SERVE_FPS}] "
                "(0: as each session asks)"
            )

    @property
    def active(self) -> bool:
        return self != NO_IMPAIRMENT

    def frame_rate(self, asked: int) -> int:
        """The rate a session that asked for `asked` frames per second is really served."""
        return min(asked, self.serve_fps) if self.serve_fps else asked

    def describe(self) -> str:
        """For the container's log: what it does wrong, or "none"."""
        parts = []
        if self.extra_delay_ms:
            parts.append(f"frames held {self.extra_delay_ms:g} ms before sending")
        if self.serve_fps:
            parts.append(f"at most {self.serve_fps} fps served whatever was asked")
        if self.ignore_input:
            parts.append("input ignored")
        return ", ".join(parts) or "none"


NO_IMPAIRMENT = Impairment()


class DelayLine(Generic[T]):
    """A first-in first-out line where each item becomes due `delay` seconds after it entered.

    Times are whatever monotonic clock the caller passes in; items entered in time order
    leave in that order, so only the head's due time ever needs a timer.
    """

    def __init__(self, delay: float) -> None:
        if delay < 0:
            raise ImpairmentError(f"a delay line cannot hold items for {delay} s")
        self.delay = delay
        self._items: deque[tuple[float, T]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: T, now: float) -> None:
        self._items.append((now + self.delay, item))

    @property
    def next_due(self) -> float | None:
        """When the head becomes due; None while the line is empty."""
        return self._items[0][0] if self._items else None

    def pop_due(self, now: float) -> list[T]:
        """Every item due at `now`, in the order they entered."""
        due = []
        while self._items and self._items[0][0] <= now:
            due.append(self._items.popleft()[1])
        return due
