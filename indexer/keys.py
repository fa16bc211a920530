"""Per-host keys: a container proves that its operator holds a key the indexer issued.

The operator keeps an Ed25519 private key (RFC 8032, section 5.1); the indexer keeps only the
public half, so a leaked key store lets nobody speak for a host. A registration answers a
challenge: when a container's WebSocket opens, the server sends `new_challenge()`, valid for
that connection only, and the container signs `signing_bytes(key_id, challenge, body)`. A
registration captured on one connection and replayed on another answers the wrong challenge.

Registrations are refused with `HostKeyError`, whose `code` is one of:

- "malformed": the key id, challenge or signature is not well formed, or the body is not JSON.
- "unknown_key": no key has this id (never issued, or the store file lost it).
- "revoked_key": the operator revoked this key (`gamecast` issues and revokes keys).
- "wrong_challenge": the registration answers another challenge than this connection's: a
  replay, or an agent that signed before the challenge arrived.
- "bad_signature": the signature does not match the key and the body: forged or altered.

A key may register any container id of its host; which ids it may claim is the server's call.
Everything here is pure except `KeyStore.load`, `save`, `reload_if_changed` and the key-file
functions, which read and write files.
"""

from __future__ import annotations

import binascii
import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from contracts.signing import (
    KEY_FILE_FORMAT,
    KEY_ID,
    SIGNATURE,
    HostKeyError,
    b64decode,
    b64encode,
    signing_bytes,
)
from indexer.errors import IndexerError

STORE_VERSION = 1
MAX_HOST = 64


class KeyStoreError(IndexerError):
    """The key store or a key file cannot be read or written, or an operator's request does not
    fit it (an unknown key id to revoke, a bad host label)."""


@dataclass(frozen=True, slots=True)
class HostKey:
    """One issued key as the indexer keeps it: the public half only."""

    key_id: str
    host: str  # the operator's label for the machine
    public_key: bytes  # raw Ed25519, 32 bytes
    issued_at: str  # ISO 8601, wall clock
    revoked_at: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def verify_registration(
    store: KeyStore,
    key_id: str,
    signature: str,
    challenge: str,
    body: Mapping[str, Any],
    *,
    answered: str | None = None,
) -> HostKey:
    """The key a registration is signed with, if it proves itself; else HostKeyError.

    `challenge` is the one this connection was sent; `answered` is the one the registration
    says it answers, when it says (it names a replay as such rather than as a forgery). Pure:
    call `store.reload_if_changed()` first so that revocations made since are seen.
    """
    if not isinstance(signature, str) or not SIGNATURE.fullmatch(signature):
        raise HostKeyError("malformed", "the signature is not 86 base64url characters")
    signed = signing_bytes(key_id, challenge, body)  # checks the key id and challenge too
    key = store.get(key_id)
    if key is None:
        raise HostKeyError(
            "unknown_key", f"no key {key_id} was issued here; ask the operator for a key"
        )
    if key.revoked:
        raise HostKeyError(
            "revoked_key", f"key {key_id} of host {key.host!r} was revoked at {key.revoked_at}"
        )
    if answered is not None and answered != challenge:
        raise HostKeyError(
            "wrong_challenge",
            "the registration answers another connection's challenge; sign this one's",
        )
    return _verified(key, signature, signed, "this registration and challenge")


def verify_signature(store: KeyStore, key_id: str, signature: str, signed: bytes) -> HostKey:
    """The live key that made `signature` over `signed` (bytes with their own domain tag, such
    as contracts.signing.download_signing_bytes), or HostKeyError ("malformed", "unknown_key",
    "revoked_key", "bad_signature"). Pure, like `verify_registration`."""
    if not isinstance(signature, str) or not SIGNATURE.fullmatch(signature):
        raise HostKeyError("malformed", "the signature is not 86 base64url characters")
    key = store.get(key_id)
    if key is None:
        raise HostKeyError("unknown_key", f"no key {key_id} was issued here")
    if key.revoked:
        raise HostKeyError(
            "revoked_key", f"key {key_id} of host {key.host!r} was revoked at {key.revoked_at}"
        )
    return _verified(key, signature, signed, "this request")


def _verified(key: HostKey, signature: str, signed: bytes, what: str) -> HostKey:
    try:
        Ed25519PublicKey.from_public_bytes(key.public_key).verify(b64decode(signature), signed)
    except InvalidSignature:
        raise HostKeyError(
            "bad_signature", f"the signature does not match key {key.key_id} and {what}"
        ) from None
    return key


class KeyStore:
    """The issued keys, kept in a JSON file; `issue` and `revoke` change memory, `save` writes.

    The CLI changes the file while an indexer runs: the indexer calls `reload_if_changed` (a
    stat) before it verifies, and never saves.
    """

    def __init__(self, path: str | os.PathLike[str], keys: tuple[HostKey, ...] = ()) -> None:
        self.path = Path(path)
        self._keys = {key.key_id: key for key in keys}
        self._stamp: tuple[int, int, int] | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyStore:
        """The store in `path`; a missing file is an empty store."""
        store = cls(path)
        store._read()
        return store

    def keys(self) -> tuple[HostKey, ...]:
        """Every key ever issued here, revoked ones included, in the order they were issued."""
        return tuple(self._keys.values())

    def get(self, key_id: str) -> HostKey | None:
        return self._keys.get(key_id)

    def issue(self, host: str, now_iso: str) -> tuple[HostKey, bytes]:
        """A new key for `host`: its record, and the operator's key file content (JSON, see
        `parse_private_key`) which holds the private key and is never kept here."""
        if not host or len(host) > MAX_HOST or not host.isprintable():
            raise KeyStoreError(f"host label {host!r} must be 1 to {MAX_HOST} printable characters")
        _check_time(now_iso)
        key_id = f"hk_{secrets.token_hex(8)}"
        while key_id in self._keys:  # 64 random bits: a clash is a curiosity, not a plan
            key_id = f"hk_{secrets.token_hex(8)}"
        private = Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        key = HostKey(key_id, host, public, now_iso)
        self._keys[key_id] = key
        seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        secret = {
            "format": KEY_FILE_FORMAT,
            "version": 1,
            "key_id": key_id,
            "host": host,
            "issued_at": now_iso,
            "private_key": b64encode(seed),
        }
        return key, (json.dumps(secret, indent=2) + "\n").encode()

    def revoke(self, key_id: str, now_iso: str) -> HostKey:
        """Revoke a key; one already revoked keeps its first revocation time."""
        _check_time(now_iso)
        key = self._keys.get(key_id)
        if key is None:
            raise KeyStoreError(f"no key {key_id!r} in {self.path}; list the keys to find its id")
        if not key.revoked:
            key = self._keys[key_id] = replace(key, revoked_at=now_iso)
        return key

    def save(self) -> None:
        """Write the store atomically (a temporary file, then os.replace), readable only by its
        owner; on error the previous file is left as it was."""
        records = [
            {
                "key_id": key.key_id,
                "host": key.host,
                "public_key": b64encode(key.public_key),
                "issued_at": key.issued_at,
                "revoked_at": key.revoked_at,
            }
            for key in self._keys.values()
        ]
        text = json.dumps({"version": STORE_VERSION, "keys": records}, indent=2) + "\n"
        folder = self.path.parent
        try:
            fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as exc:
            raise KeyStoreError(f"cannot write the key store {self.path}: {exc}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:  # mkstemp made it 0600
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise KeyStoreError(f"cannot write the key store {self.path}: {exc}") from None
        self._stamp = _stamp_of(os.stat(self.path))

    def reload_if_changed(self) -> bool:
        """Read the file again if it changed since it was last read or written (its inode, size
        or mtime); True if it did. A deleted file empties the store: every key is then refused.
        A file that cannot be read raises KeyStoreError and keeps the keys known before."""
        try:
            stamp: tuple[int, int, int] | None = _stamp_of(os.stat(self.path))
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            raise KeyStoreError(f"cannot read the key store {self.path}: {exc}") from None
        if stamp == self._stamp:
            return False
        self._read()
        return True

    def _read(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as source:
                stamp = _stamp_of(os.fstat(source.fileno()))  # of the very file read
                text = source.read()
        except FileNotFoundError:
            self._keys, self._stamp = {}, None
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyStoreError(f"cannot read the key store {self.path}: {exc}") from None
        keys = _parse_store(text, self.path)
        self._keys, self._stamp = {key.key_id: key for key in keys}, stamp


def _stamp_of(status: os.stat_result) -> tuple[int, int, int]:
    # os.replace gives a new inode, so two writes within one mtime tick still differ.
    return (status.st_ino, status.st_size, status.st_mtime_ns)


def _check_time(now_iso: str) -> None:
    try:
        datetime.fromisoformat(now_iso)
    except (TypeError, ValueError):
        raise KeyStoreError(f"time {now_iso!r} is not ISO 8601") from None


def _parse_store(text: str, path: Path) -> list[HostKey]:
    def bad(why: str) -> KeyStoreError:
        return KeyStoreError(f"the key store {path} is damaged: {why}")

    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise bad(f"not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != STORE_VERSION:
        raise bad(f"not a version {STORE_VERSION} store")
    records = data.get("keys")
    if not isinstance(records, list):
        raise bad("'keys' is not a list")
    keys: dict[str, HostKey] = {}
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise bad(f"keys[{index}] is not an object")
        key_id, host, public, issued, revoked = (
            record.get(name) for name in ("key_id", "host", "public_key", "issued_at", "revoked_at")
        )
        if not isinstance(key_id, str) or not KEY_ID.fullmatch(key_id) or key_id in keys:
            raise bad(f"keys[{index}] has a bad or repeated key_id {key_id!r}")
        if not (isinstance(host, str) and isinstance(issued, str) and isinstance(public, str)):
            raise bad(f"key {key_id} needs host, issued_at and public_key strings")
        if revoked is not None and not isinstance(revoked, str):
            raise bad(f"key {key_id} has a revoked_at that is not a string or null")
        try:
            raw = b64decode(public)
        except (ValueError, binascii.Error):
            raw = b""
        if len(raw) != 32:
            raise bad(f"key {key_id} has a public_key that is not 32 bytes of base64url")
        keys[key_id] = HostKey(key_id, host, raw, issued, revoked)
    return list(keys.values())
