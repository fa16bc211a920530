"""The verifier client's exception tree: bot sessions, traces, samples and checks."""

from __future__ import annotations

from contracts.errors import GamecastError


class VerifierError(GamecastError):
    """Root of every exception the verifier package raises on purpose."""
