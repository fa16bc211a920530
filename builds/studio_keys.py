"""Studio API keys: what a studio sends as `Authorization: Bearer <key>` to upload builds.

A key reads "sk_<16 hex>.<43 base64url>": its id, then 256 random bits. The secret is shown
once, when issued; the store keeps the SHA-256 of the whole key (a fast hash suffices for 256
random bits: there is nothing to guess) and compares in constant time. A studio may hold
several keys (rotation: issue a new one, then revoke the old); what it owns, the build names
it uploaded first, belongs to the studio, not to a key (builds/catalog.py enforces that).

Refusals raise StudioKeyError with a stable `code` (see builds/errors.py); the reason never
tells a guesser more than "this key is not valid" needs to.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from builds.database import transaction
from builds.errors import StudioKeyError

STUDIO_KEYS_FILE = "studio-keys.sqlite3"  # in the server's build folder, beside the catalog
_KEY = re.compile(r"(sk_[0-9a-f]{16})\.[A-Za-z0-9_-]{43}")
_STUDIO = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
_COLUMNS = "key_id, studio, issued_at, revoked_at"  # StudioKey's fields, in order
_SCHEMA = """CREATE TABLE IF NOT EXISTS studio_keys (
    key_id TEXT PRIMARY KEY,
    studio TEXT NOT NULL,
    key_sha256 TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    revoked_at TEXT
)"""


@dataclass(frozen=True, slots=True)
class StudioKey:
    """One issued key as the store keeps it: never the secret."""

    key_id: str
    studio: str
    issued_at: str  # ISO 8601
    revoked_at: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class StudioKeys:
    """The issued keys, in the SQLite file at `path` (created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with transaction(path) as db:
            db.execute(_SCHEMA)

    def issue(self, studio: str, now_iso: str) -> tuple[StudioKey, str]:
        """A new key for `studio`: its record, and the key itself, which is stored nowhere."""
        if not isinstance(studio, str) or not _STUDIO.fullmatch(studio):
            raise StudioKeyError(
                "store",
                f"studio name {studio!r} must be 1 to 64 of letters, digits, ' ._-',"
                " starting with a letter or digit",
            )
        _check_time(now_iso)
        key_id = f"sk_{secrets.token_hex(8)}"
        key = f"{key_id}.{secrets.token_urlsafe(32)}"
        with transaction(self.path) as db:
            db.execute(
                "INSERT INTO studio_keys (key_id, studio, key_sha256, issued_at) VALUES (?,?,?,?)",
                (key_id, studio, _digest(key), now_iso),
            )
        return StudioKey(key_id, studio, now_iso), key

    def revoke(self, key_id: str, now_iso: str) -> StudioKey:
        """Refuse `key_id` from now on; a key already revoked keeps its first revocation time."""
        _check_time(now_iso)
        with transaction(self.path) as db:
            db.execute(
                "UPDATE studio_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (now_iso, key_id),
            )
            key = _get(db, key_id)
        if key is None:
            raise StudioKeyError(
                "store", f"no studio key {key_id!r} in {self.path}; list the keys to find its id"
            )
        return key

    def issued_keys(self) -> list[StudioKey]:
        """Every key issued, revoked ones included, oldest first."""
        with transaction(self.path, write=False) as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM studio_keys ORDER BY issued_at, rowid"
            ).fetchall()
        return [StudioKey(*row) for row in rows]

    def authenticate(self, authorization: str | None) -> StudioKey:
        """The live key an `Authorization` header value carries ("Bearer sk_..."), or raise."""
        if not authorization:
            raise StudioKeyError("missing", "send the studio key as 'Authorization: Bearer <key>'")
        scheme, _, key = authorization.partition(" ")
        match = _KEY.fullmatch(key.strip())
        if scheme.lower() != "bearer" or match is None:
            raise StudioKeyError(
                "malformed", "the Authorization header is not 'Bearer sk_<16 hex>.<secret>'"
            )
        with transaction(self.path, write=False) as db:
            row = db.execute(
                f"SELECT key_sha256, {_COLUMNS} FROM studio_keys WHERE key_id = ?", (match[1],)
            ).fetchone()
        if row is None:
            raise StudioKeyError("unknown_key", f"no studio key {match[1]} was issued here")
        record = StudioKey(*row[1:])
        if not hmac.compare_digest(row[0], _digest(key.strip())):
            raise StudioKeyError("wrong_secret", f"the secret of studio key {match[1]} is wrong")
        if record.revoked:
            raise StudioKeyError(
                "revoked_key", f"studio key {match[1]} was revoked at {record.revoked_at}"
            )
        return record


def _get(db: sqlite3.Connection, key_id: str) -> StudioKey | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM studio_keys WHERE key_id = ?", (key_id,)).fetchone()
    return None if row is None else StudioKey(*row)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def _check_time(now_iso: str) -> None:
    try:
        datetime.fromisoformat(now_iso)
    except (TypeError, ValueError):
        raise StudioKeyError("store", f"time {now_iso!r} is not ISO 8601") from None
