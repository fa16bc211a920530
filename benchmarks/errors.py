"""The benchmarks' exception tree."""

from __future__ import annotations

from contracts.errors import GamecastError


class BenchmarkError(GamecastError):
    """Root of every exception the benchmarks package raises on purpose."""
