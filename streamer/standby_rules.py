"""When a container keeps a build's instance waiting for the next player: the warm pool's rules.

Pure: the pool (streamer/warm_pool.py) feeds these rules what happened and when (`now`, a
monotonic second count) and does what they say. Per build, one slot:

    EMPTY --start due--> STARTING --started--> WAITING --taken--> EMPTY (a player has it)
      ^                     |                     |
      +---- failed: retry --+----- exited, or discarded: retry after the backoff

- **When to start**: a slot is EMPTY, the container stands by (no session runs: a waiting
  instance is for the next player, not a second game beside a player's), and its retry time
  has come. So a fresh instance follows each session, and none competes with one.
- **Pause**: a game that has waited `settle_s` (long enough to have drawn its first frames
  and to have crashed, if it crashes at start) is paused (SIGSTOP): a waiting game then
  costs its memory and no CPU. It is resumed when taken, or to be stopped.
- **Hand over**: only a WAITING instance is taken; a STARTING one is awaited by the edge
  (it is the cold start the player would pay anyway, begun earlier).
- **Replace, with backoff**: a start that fails, or a game that exits while waiting, empties
  the slot and delays its next start by `backoff_s(failures)` (1, 2, 4 ... 60 s). A game that
  had waited at least `stable_s` before it exited starts the count again at one, so a build
  that crashes at once backs off while one that dies after hours is replaced in a second.
  An instance discarded because its build's tree changed on disk is replaced at once.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from streamer.errors import StreamerError

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
STABLE_S = 10.0  # waiting this long before an exit: not a build that crashes at start
SETTLE_S = 2.0  # a waiting game runs this long before it is paused


class SlotState(enum.Enum):
    EMPTY = "empty"
    STARTING = "starting"
    WAITING = "waiting"


class StandbyRuleError(StreamerError, RuntimeError):
    """An event that cannot happen in the slot's state: the pool's own misuse."""


def backoff_s(failures: int, base: float = BACKOFF_BASE_S, most: float = BACKOFF_MAX_S) -> float:
    """The wait before the next start after `failures` failures in a row (0: none)."""
    if failures <= 0:
        return 0.0
    return min(most, base * 2.0 ** (failures - 1))


@dataclass
class Slot:
    state: SlotState = SlotState.EMPTY
    retry_at: float = 0.0  # no start before this
    failures: int = 0  # in a row: starts that failed, games that exited soon after waiting
    waiting_since: float = 0.0
    paused: bool = False


class StandbyRules:
    """One slot per build; every event names its build and, where time matters, `now`."""

    def __init__(
        self, builds: Iterable[str], *, stable_s: float = STABLE_S, settle_s: float = SETTLE_S
    ) -> None:
        self.slots = {name: Slot() for name in builds}
        self.stable_s = stable_s
        self.settle_s = settle_s
        self.sessions: set[str] = set()  # running on the container, whatever they play

    def due(self, now: float) -> list[str]:
        """The builds whose instance should be started now; each is STARTING from here on."""
        if self.sessions:
            return []
        starting = [
            name
            for name, slot in self.slots.items()
            if slot.state is SlotState.EMPTY and now >= slot.retry_at
        ]
        for name in starting:
            self.slots[name].state = SlotState.STARTING
        return starting

    def to_pause(self, now: float) -> list[str]:
        """The waiting games that have run `settle_s` unpaused: pause them (now paused)."""
        names = [
            name
            for name, slot in self.slots.items()
            if slot.state is SlotState.WAITING
            and not slot.paused
            and now >= slot.waiting_since + self.settle_s
        ]
        for name in names:
            self.slots[name].paused = True
        return names

    def next_due(self, now: float) -> float | None:
        """When `due` or `to_pause` may next name a build, if nothing else happens first;
        None: not until an event (a session ends, an instance starts or stops)."""
        times = [
            s.waiting_since + self.settle_s
            for s in self.slots.values()
            if s.state is SlotState.WAITING and not s.paused
        ]
        if not self.sessions:
            times += [s.retry_at for s in self.slots.values() if s.state is SlotState.EMPTY]
        return max(now, min(times)) if times else None

    def started(self, name: str, now: float) -> None:
        slot = self._slot(name, SlotState.STARTING, "started")
        slot.state, slot.waiting_since, slot.paused = SlotState.WAITING, now, False

    def start_failed(self, name: str, now: float) -> float:
        """The start failed (or its build was refused); returns when the next may begin."""
        slot = self._slot(name, SlotState.STARTING, "start_failed")
        return self._retry(slot, slot.failures + 1, now)

    def exited(self, name: str, now: float) -> float:
        """The waiting game ended on its own; returns when its replacement may start."""
        slot = self._slot(name, SlotState.WAITING, "exited")
        stable = now - slot.waiting_since >= self.stable_s
        return self._retry(slot, 1 if stable else slot.failures + 1, now)

    def discarded(self, name: str) -> None:
        """The waiting instance was stopped because its build changed: replace it at once."""
        slot = self._slot(name, SlotState.WAITING, "discarded")
        slot.state, slot.retry_at = SlotState.EMPTY, 0.0

    def cancelled(self, name: str) -> None:
        """A start given up by the pool itself (stopping): the slot is empty, no penalty."""
        self._slot(name, SlotState.STARTING, "cancelled").state = SlotState.EMPTY

    def take(self, name: str) -> bool:
        """Hand the waiting instance to a player: True when there is one (the slot empties;
        the edge resumes it if it was paused)."""
        slot = self.slots.get(name)
        if slot is None or slot.state is not SlotState.WAITING:
            return False
        slot.state, slot.failures = SlotState.EMPTY, 0  # it served a player: it works
        return True

    def session_started(self, session: str) -> None:
        self.sessions.add(session)

    def session_ended(self, session: str) -> None:
        """Idempotent: a session refused at its start and one that ended are both ended."""
        self.sessions.discard(session)

    def _retry(self, slot: Slot, failures: int, now: float) -> float:
        slot.state, slot.failures = SlotState.EMPTY, failures
        slot.retry_at = now + backoff_s(failures)
        return slot.retry_at

    def _slot(self, name: str, expected: SlotState, event: str) -> Slot:
        slot = self.slots.get(name)
        if slot is None:
            raise StandbyRuleError(f"{event}: no standby slot for a build named {name!r}")
        if slot.state is not expected:
            raise StandbyRuleError(
                f"{event}: the slot of {name!r} is {slot.state.value}, not {expected.value}"
            )
        return slot
