"""The signaling edge's exception tree, and what a refusal says on the wire."""

from __future__ import annotations

from contracts import protocol as p
from contracts.errors import GamecastError
from contracts.signing import HostKeyError
from indexer.errors import IndexerError


class SignalingError(GamecastError):
    """Root of every exception the signaling package raises on purpose."""


# What a connection answers with an error reply and goes on: a peer's misbehaviour (a refused
# message or registration) or the registry store failing it (Redis away, a key store unreadable).
Refusal = p.ProtocolError | HostKeyError | IndexerError
REFUSALS = (p.ProtocolError, HostKeyError, IndexerError)


def error_reply(refusal: Refusal, ref: str = "") -> p.Error:
    """The wire error for a refusal; `ref` names the message type that caused it, when known.
    A peer's fault keeps its stable code; the store's fault is "unavailable" (try again)."""
    if isinstance(refusal, IndexerError):
        return p.Error("unavailable", str(refusal), ref)
    return p.Error(refusal.code, refusal.reason, ref)
