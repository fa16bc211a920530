"""The root of every exception gamecast raises on purpose, and the contracts' own subtree.

Each package has one subtree under `GamecastError` (IndexerError, JudgeError, BuildError,
SignalingError, StreamerError, VerifierError, ...), so a caller can tell our own refusals from
a foreign library's failure with one `except`, and an edge translates a foreign exception once,
at the boundary, into the subtree of the package that met it.
"""

from __future__ import annotations


class GamecastError(Exception):
    """Something gamecast refused or could not do, with a message a person can act on."""


class ContractError(GamecastError, ValueError):
    """Bytes, a file or a picture that break a shared contract (a peer's or a file's fault, not
    ours): a malformed message, an invalid input event, an unreadable marker, a bad challenge."""
