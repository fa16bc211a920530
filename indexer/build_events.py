"""What a container reported about its builds (p.BuildEvent): the recent ones and a count of each.

Every store keeps this per container, so every indexer's dashboard can show it: the memory
registry in its record, the Redis store in the container's hash and the change feed. A
container that floods reports is held by its connection's rate limit, and what is kept stays
bounded: the latest `RECENT_BUILD_EVENTS`, and one counter per kind (the protocol's kinds
only, so no sender can grow the counters either).

Pure: the time of each event is what the caller heard it at (Unix seconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from contracts.protocol import BUILD_EVENT_KINDS, BuildEvent

RECENT_BUILD_EVENTS = 20


@dataclass(frozen=True, slots=True)
class BuildEventRecord:
    """One report as the indexer keeps it: the message's fields and when it was heard."""

    at: float  # Unix seconds, the indexer's clock
    kind: str
    build: str = ""
    version: str = ""
    sha256: str = ""
    session: str = ""
    limit: str = ""
    detail: str = ""

    @classmethod
    def of(cls, message: BuildEvent, at: float) -> BuildEventRecord:
        return cls(
            at, message.kind, message.build, message.version, message.sha256, message.session,
            message.limit, message.detail,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildEventRecord:
        return cls(**{**data, "at": float(data["at"])})


@dataclass(frozen=True, slots=True)
class BuildEvents:
    """A container's recent build events (oldest first) and how many of each kind it sent."""

    recent: tuple[BuildEventRecord, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)

    def add(self, record: BuildEventRecord, count: int | None = None) -> BuildEvents:
        """These events with `record` after them, the oldest dropped past the bound; `count`
        is the kind's count as a store says it (None: one more than here)."""
        if record.kind not in BUILD_EVENT_KINDS:
            raise ValueError(f"no build event kind {record.kind!r}; the protocol has "
                             f"{list(BUILD_EVENT_KINDS)}")  # fmt: skip
        total = self.counts.get(record.kind, 0) + 1 if count is None else count
        recent = (*self.recent, record)[-RECENT_BUILD_EVENTS:]
        return BuildEvents(recent, {**self.counts, record.kind: total})

    def to_dict(self) -> dict[str, Any]:
        """For the API: newest first, and a count for every kind (0 where none came)."""
        return {
            "recent": [r.to_dict() for r in reversed(self.recent)],
            "counts": {kind: self.counts.get(kind, 0) for kind in BUILD_EVENT_KINDS},
        }
