"""The indexer's exception tree: one base, and a class for each way a request can fail."""

from __future__ import annotations

from contracts.errors import GamecastError


class IndexerError(GamecastError):
    """Base of the indexer's errors."""


class NoContainerError(IndexerError):
    """No container can take this request. `filter` names the filter that emptied the set
    (selection's order: standby, build, resources, rtt, price); the message says it for people."""

    def __init__(self, message: str, filter: str = "") -> None:
        super().__init__(message)
        self.filter = filter
