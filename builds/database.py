"""The builds' SQLite file (the embedded default): one short transaction per operation.

Each operation opens its own connection, so the HTTP edge (from the event loop or a worker
thread) and the operator's CLI (another process) share the file without sharing objects;
SQLite's own locking orders them, and `BEGIN IMMEDIATE` takes the write lock up front so a
read-then-write (an ownership check, then an insert) cannot interleave with another writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from builds.errors import CatalogError

BUSY_TIMEOUT = 10.0  # seconds a writer waits for another's lock before failing


@contextmanager
def transaction(path: Path, *, write: bool = True) -> Iterator[sqlite3.Connection]:
    """A connection to `path` inside one transaction: committed when the block ends, rolled
    back when it raises; `write=False` for reads, which then never wait for the write lock.
    SQLite's failures become CatalogError naming the file."""
    try:
        with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
    except sqlite3.Error as exc:
        raise CatalogError(f"the build database {path} failed: {exc}") from None
