"""The test fixtures' exception tree."""

from __future__ import annotations

from contracts.errors import GamecastError


class TestbedError(GamecastError):
    """Root of every exception the testbed package raises on purpose."""
