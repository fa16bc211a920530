"""Who may speak for a container or verifier id: a live host key, signed over the connection's
challenge (indexer/keys.py), and the first key that claimed the id.

The connections (signaling/connections.py) see only `Authenticator`; where the ids' owners are
kept is `IdOwners`' business: this process's memory, or Redis when indexers share a network
(signaling/server.py), so that no key takes over another's id through another indexer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Protocol

from builds.errors import CatalogError
from contracts import protocol as p
from indexer import keys
from indexer.keys import KeyStore, KeyStoreError


class Authenticator(Protocol):
    async def authenticate(self, message: p.Register | p.Enlist, text: str, challenge: str) -> None:
        """Raise unless `message` (sent as `text` on a connection opened with `challenge`) may
        register (enlist) under the id it names: HostKeyError for a bad signature or key,
        KeyStoreError for an unreadable key store, ProtocolError "conflict" for a taken id."""


class IdOwners(Protocol):
    async def claim(self, name: str, key_id: str) -> str:
        """The key that owns `name`: the first that claimed it, `key_id` if none did."""


class MemoryIdOwners:
    """Ids' owners in this process (one indexer holds the whole network)."""

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}

    async def claim(self, name: str, key_id: str) -> str:
        return self._owners.setdefault(name, key_id)


class HostKeys:
    """An `Authenticator` over the issued host keys."""

    def __init__(self, store: KeyStore, owners: IdOwners) -> None:
        self._store = store
        self._owners = owners

    async def authenticate(self, message: p.Register | p.Enlist, text: str, challenge: str) -> None:
        self._store.reload_if_changed()  # the CLI may have revoked a key since
        key = keys.verify_registration(
            self._store,
            message.key_id,
            message.signature,
            challenge,
            json.loads(text),
            answered=message.challenge,
        )
        kind, name = (
            ("container", message.container)
            if isinstance(message, p.Register)
            else ("verifier", message.verifier)
        )
        owned = name if kind == "container" else f"verifier:{name}"  # ids of two kinds never clash
        if await self._owners.claim(owned, key.key_id) != key.key_id:
            raise p.ProtocolError(
                "conflict", f"{kind} id {name!r} belongs to another key; choose another id"
            )


def download_verifier(store: KeyStore) -> Callable[[str, str, bytes], str]:
    """The builds' host-key seam (builds.downloads.HostVerifier) over the issued keys: the
    host's label for a live key's good signature, else HostKeyError; an unreadable store is
    the server's fault (CatalogError: 500), never the container's."""

    def verify(key_id: str, signature: str, signed: bytes) -> str:
        try:
            store.reload_if_changed()  # the CLI may have revoked a key since
        except KeyStoreError as exc:
            raise CatalogError(str(exc)) from None
        return keys.verify_signature(store, key_id, signature, signed).host

    return verify
