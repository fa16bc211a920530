"""The signaling edge's exception tree."""

from __future__ import annotations

from contracts.errors import GamecastError


class SignalingError(GamecastError):
    """Root of every exception the signaling package raises on purpose."""
