"""What the agent tells the indexer about its builds (p.BuildEvent), and where reports wait.

A game that crashed or was ended by a limit of its sandbox (streamer/game_process.py
`GameExit`), and a build found altered or planted on this host's disk (streamer/deploy.py
`BuildFault`, at start or before a session), each become one report. Faults found at start
come before the agent is registered, and a report may be made while it reconnects, so reports
wait in a `ReportOutbox` until it is registered: bounded, the oldest dropped (and counted)
when it is full, since the latest say most about the host now.

Pure: the records are read through the two protocols below, so this module imports neither
the process nor the deployment code.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from contracts import protocol as p

OUTBOX_LIMIT = 32  # reports held while unregistered: 16 s of a hostile build crashing at 2/s


class Exit(Protocol):
    """How a game ended (streamer/game_process.py GameExit)."""

    @property
    def crashed(self) -> bool: ...

    @property
    def limit(self) -> str: ...

    def describe(self) -> str: ...


class Fault(Protocol):
    """A build found altered or planted on disk (streamer/deploy.py BuildFault)."""

    @property
    def sha256(self) -> str: ...

    @property
    def reason(self) -> str: ...

    @property
    def redeployed(self) -> bool: ...

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def planted(self) -> bool: ...


def _cut(text: str) -> str:
    """Cut to the protocol's text limit, marked as cut: a crash's stderr line is the build's."""
    return text if len(text) <= p.MAX_TEXT else text[: p.MAX_TEXT - 3] + "..."


def game_report(
    session_id: str, name: str, version: str, sha256: str, how: Exit
) -> p.BuildEvent | None:
    """The report of a game that ended on its own; None for a clean quit (no fault)."""
    if not how.crashed:
        return None
    kind = "limit_killed" if how.limit else "crashed"
    return p.BuildEvent(
        kind, name[:64], version[:32], sha256, session_id[: p.MAX_TEXT], how.limit,
        _cut(how.describe()),
    )  # fmt: skip


def fault_report(fault: Fault, session_id: str = "") -> p.BuildEvent:
    """The report of a build found altered (the hash check refused its tree) or planted."""
    if fault.planted:
        kind, detail = "planted", f"a folder no blob proves: {fault.reason}"
    else:
        what = "unpacked again" if fault.redeployed else "cannot be deployed again"
        kind, detail = "hash_refused", f"altered on disk ({what}): {fault.reason}"
    return p.BuildEvent(
        kind, fault.name[:64], fault.version[:32], fault.sha256[:64], session_id[: p.MAX_TEXT],
        detail=_cut(detail),
    )  # fmt: skip


class ReportOutbox:
    """Reports waiting to be sent, oldest first, at most `limit`; `dropped` counts the oldest
    ones pushed out. `add` may be called from a worker thread (builds are verified in one):
    deque's append and popleft are atomic."""

    def __init__(self, limit: int = OUTBOX_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"an outbox holds at least one report, not {limit}")
        self._waiting: deque[p.BuildEvent] = deque(maxlen=limit)
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, report: p.BuildEvent | None) -> None:
        """Queue `report` (None: nothing to report)."""
        if report is None:
            return
        if len(self._waiting) == self._waiting.maxlen:
            self.dropped += 1
        self._waiting.append(report)

    def take(self) -> p.BuildEvent | None:
        """The oldest report waiting, removed; None when none waits."""
        try:
            return self._waiting.popleft()
        except IndexError:
            return None
