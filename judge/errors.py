"""The judge's exception tree: rotation, consensus and scoring fed inputs they cannot use."""

from __future__ import annotations

from contracts.errors import GamecastError


class JudgeError(GamecastError):
    """Root of every exception the judge package raises on purpose."""
