"""The container agent's exception tree: encoder, capture, display, game and hook failures."""

from __future__ import annotations

from contracts.errors import GamecastError


class StreamerError(GamecastError):
    """Root of every exception the streamer package raises on purpose."""
